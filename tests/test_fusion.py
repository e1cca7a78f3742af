"""The ensemble fusion exists once: the engine's fused probability equals ``runtime fuse`` of
the members' saved probabilities (runtime.fusion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.contract.settings import EnsembleMode, resolve_ensemble
from runtime.fusion import LOGIT_CLIP, Fusion, sigmoid
from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.segmentation_model import Ensemble, SegmentationModel
from runtime.volumes.probability import decode, fuse, load_probability, save_probability


def _confident(name: str, scale: float, shift: float) -> SegmentationModel:
    """A 1x1x1 convolution: log-odds ``scale * v + shift`` of the normalized voxel, up to +-20,
    where a float32 probability is 0 or 1 and only clipped log-odds stay finite."""
    conv = torch.nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(scale)
        conv.bias.fill_(shift)
    return SegmentationModel.from_module(conv, name=name, normalization=(0.0, 255.0))


def _probability(model: SegmentationModel | Ensemble, image: np.ndarray) -> np.ndarray:
    options = InferenceOptions(patch_size=(8, 8, 8), batch_size=4, keep_probability=True)
    result = Segmenter(model, options, log=lambda line: None).segment(image)
    assert result.probability is not None
    return result.probability


@pytest.mark.parametrize("mode", list(EnsembleMode))
def test_the_engines_ensemble_equals_fuse_of_its_members_saved_probabilities(
    tmp_path: Path, mode: EnsembleMode
) -> None:
    image = np.random.default_rng(3).integers(0, 256, (10, 12, 9)).astype(np.uint8)
    members = (_confident("a", 40.0, -20.0), _confident("b", -30.0, 12.0))
    fusion = resolve_ensemble(2, [3.0, 1.0], mode)
    folders = []
    for member in members:
        folder = tmp_path / member.name
        folder.mkdir()
        save_probability(folder / "v.npy", _probability(member, image))  # float32, exact
        folders.append(folder)
    fused = fuse(folders, tmp_path / "fused", fusion, encoding="float16")
    saved = decode(load_probability(fused.files["v"]))

    engine = _probability(Ensemble(members, fusion), image)
    np.testing.assert_allclose(engine, saved, atol=1e-3)  # float16 steps near 1: 4.9e-4
    if mode == EnsembleMode.LOGITS:  # the clip matters here: both members say 0 or 1
        logit = np.log(LOGIT_CLIP) - np.log1p(-LOGIT_CLIP)
        assert engine.min() >= 1 / (1 + np.exp(-logit)) - 1e-6


def test_fusion_keeps_exact_zeros_and_averages_log_odds_of_clipped_probabilities() -> None:
    assert sigmoid(np.array([-np.inf, 0.0, np.inf]))[0] == 0.0  # outside an nnU-Net crop
    by_probability = Fusion(EnsembleMode.PROBABILITIES, (2,))
    by_probability.add(np.array([0.0, 1.0], np.float32), 0.5)
    by_probability.add(np.array([0.0, 0.5], np.float32), 0.5)
    np.testing.assert_array_equal(by_probability.probability(), [0.0, 0.75])
    by_logit = Fusion(EnsembleMode.LOGITS, (1,))
    by_logit.add(np.array([1.0], np.float32), 0.5)  # would be +inf unclipped: NaN beside -inf
    by_logit.add(np.array([0.0], np.float32), 0.5)
    np.testing.assert_allclose(by_logit.probability(), [0.5], atol=1e-6)
