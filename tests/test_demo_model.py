"""The committed demo model: a safe, small model directory that really segments, via the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig
from runtime.samples.demo import DEMO_DIR
from runtime.samples.synthetic import synthetic_volume
from runtime.volumes.scoring import dice_score

# Neither the training shape (64^3) nor the validation one, anisotropic and not a multiple of the
# network's size multiple; seeds from 20_000 were never used for training or validation.
TEST_SHAPE = (36, 88, 60)
TEST_SEEDS = (20_000, 20_001, 20_002)


def _config() -> dict:
    return json.loads((DEMO_DIR / "config.json").read_text(encoding="utf-8"))


def test_model_directory_follows_the_format() -> None:
    config = _config()
    assert config["format"] == MODEL_FORMAT
    assert config["format_version"] == MODEL_FORMAT_VERSION
    assert config["foreground_class"] is None
    architecture = UNetConfig.from_dict(config["architecture"])
    assert architecture.out_channels == 1
    assert config["normalization"]["std"] > 0
    inference = config["inference"]
    assert all(size % architecture.size_multiple == 0 for size in inference["patch_size"])
    assert 0 <= inference["overlap"] < 1
    assert 0 < inference["threshold"] < 1


def test_weights_are_small_and_load_without_unpickling() -> None:
    config = _config()
    weights = DEMO_DIR / config["weights"]
    assert weights.stat().st_size < 2_000_000
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = UNet3D(UNetConfig.from_dict(config["architecture"]))
    model.load_state_dict(state, strict=True)  # every tensor present, none left over


def test_demo_segments_fresh_volumes_through_the_engine() -> None:
    from runtime.inference.engine import InferenceOptions, Segmenter
    from runtime.pipeline.models import load_model

    segmenter = Segmenter(load_model("demo"), InferenceOptions(device="cpu"))
    scores = []
    for seed in TEST_SEEDS:
        volume = synthetic_volume(TEST_SHAPE, seed)
        result = segmenter.segment(volume.image)
        assert result.mask.shape == TEST_SHAPE
        assert result.mask.dtype == np.uint8
        model_dice = dice_score(result.mask, volume.label)
        # The data needs a model: the best global threshold, picked knowing the answer, is worse.
        threshold_dice = max(dice_score(volume.image >= t, volume.label) for t in range(20, 240, 4))
        assert model_dice > threshold_dice + 0.05, (seed, model_dice, threshold_dice)
        scores.append(model_dice)
    assert min(scores) >= 0.9, scores


def test_importing_the_demo_package_stays_cheap() -> None:
    code = (
        "import sys, runtime.samples.demo; "
        "heavy = {'numpy', 'torch'} & set(sys.modules); "
        "assert not heavy, heavy; print(runtime.samples.demo.DEMO_DIR)"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == DEMO_DIR


@pytest.mark.timeout(120)
def test_training_script_writes_a_loadable_model(tmp_path: Path) -> None:
    # A two-step run: the recipe is exercised end to end (data, loss, save), not its quality.
    out = tmp_path / "model"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.samples.demo.train",
            "--out",
            str(out),
            "--steps",
            "2",
            "--volumes",
            "2",
            "--validate",
            "1",
            "--batch",
            "1",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "steps 2," in config["description"]
    state = torch.load(out / config["weights"], weights_only=True)
    UNet3D(UNetConfig.from_dict(config["architecture"])).load_state_dict(state)
    assert not list(out.glob("*.partial"))
