"""nnU-Net v2 trained-model folders: discovery, plans, networks, safe checkpoints, preprocessing,
blending as nnU-Net's predictor blends, label/region foregrounds, folds, ensembles and the CLI.

Every folder is written by tests/support/nnunet_folders.py with dynamic-network-architectures'
real classes; each result is checked against a plain reference of nnU-Net's inference written
out below (float64, one window at a time), not against our own code.
"""

from __future__ import annotations

import itertools
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.contract.errors import ModelError
from runtime.contract.settings import OptionError, RunRequest, resolve, resolve_ensemble
from runtime.contract.tta import mirror_transforms
from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.models import load_model
from runtime.inference.nnunet import NNUNetModel
from runtime.inference.segmentation_model import Ensemble
from runtime.inference.sliding_window import nnunet_importance
from tests.support.nnunet_folders import (
    make_dataset,
    make_plans,
    plain_architecture,
    residual_architecture,
    write_trained_model_folder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATCH = (16, 16, 16)


def volume(shape=(20, 26, 18), seed=0, border=0) -> np.ndarray:
    image = (np.random.default_rng(seed).random(shape) * 200 + 30).astype(np.uint8)
    if border:
        image[:border] = 0
        image[:, -border:] = 0
    return image


# --- a plain reference of nnU-Net's inference ---------------------------------------------------
def reference(
    image: np.ndarray,
    networks: list[torch.nn.Module],
    *,
    patch=PATCH,
    mirror_axes=(),
    transpose=(0, 1, 2),
    scheme="ZScoreNormalization",
    use_mask=False,
    ct=None,
    resample=None,
) -> np.ndarray:
    """nnU-Net's per-head probabilities (C, Z, Y, X), written out step by step in float64.

    ``resample(array, shape, order)``: a model trained at another spacing; the normalized crop
    is resampled with order 3 and each head's blended logits come back with order 1."""
    from scipy.ndimage import binary_fill_holes, gaussian_filter

    data = image.astype(np.float32).transpose(transpose)
    nonzero = data != 0
    where = np.argwhere(nonzero)
    lo, hi = (where.min(0), where.max(0) + 1) if where.size else ((0, 0, 0), data.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop = data[box].astype(np.float64)
    if scheme == "ZScoreNormalization":
        if use_mask:
            mask = binary_fill_holes(nonzero)[box]
            crop[mask] = (crop[mask] - crop[mask].mean()) / max(crop[mask].std(), 1e-8)
        else:
            crop = (crop - crop.mean()) / max(crop.std(), 1e-8)
    elif scheme == "CTNormalization":
        crop = (np.clip(crop, ct["percentile_00_5"], ct["percentile_99_5"]) - ct["mean"]) / ct[
            "std"
        ]
    cropped = crop.shape
    if resample is not None:
        crop = resample(crop.astype(np.float32), None, 3)
    # pad with zeros up to the patch, content centred (the larger half after)
    padded_shape = [max(s, p) for s, p in zip(crop.shape, patch, strict=True)]
    before = [(p - s) // 2 for p, s in zip(padded_shape, crop.shape, strict=True)]
    padded = np.zeros(padded_shape)
    padded[tuple(slice(b, b + s) for b, s in zip(before, crop.shape, strict=True))] = crop
    # nnU-Net's Gaussian, through scipy in 3D, stored in fp16 with zeros lifted
    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    gauss = gaussian_filter(delta, [p / 8 for p in patch], 0, mode="constant", cval=0)
    gauss = torch.from_numpy(gauss / gauss.max() * 10).half()
    gauss[gauss == 0] = gauss[gauss != 0].min()
    gauss = gauss.double().numpy()
    starts = []
    for size, p in zip(padded_shape, patch, strict=True):
        n = math.ceil((size - p) / (p * 0.5)) + 1
        step = (size - p) / (n - 1) if n > 1 else 0
        starts.append([int(np.round(step * i)) for i in range(n)])
    heads = None
    flips = [c for k in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, k)]
    for z, y, x in itertools.product(*starts):
        window = padded[z : z + patch[0], y : y + patch[1], x : x + patch[2]]
        tile = torch.from_numpy(window[None, None].astype(np.float32))
        logits = 0.0
        for net in networks:
            for flip in flips:
                dims = [a + 2 for a in flip]
                with torch.no_grad():
                    out = net(torch.flip(tile, dims) if dims else tile)
                logits = logits + torch.flip(out, dims).double()[0].numpy()
        logits = logits / (len(networks) * len(flips))
        if heads is None:
            heads = np.zeros((logits.shape[0], *padded_shape))
            weights = np.zeros(padded_shape)
        region = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        heads[(slice(None), *region)] += logits * gauss
        weights[region] += gauss
    blended = heads / weights
    blended = blended[
        (slice(None), *(slice(b, b + s) for b, s in zip(before, crop.shape, strict=True)))
    ]
    if resample is not None:
        blended = np.stack([resample(head.astype(np.float32), cropped, 1) for head in blended])
    return blended, box, data.shape


def label_probabilities(image, networks, head=1, **kwargs) -> np.ndarray:
    blended, box, shape = reference(image, networks, **kwargs)
    soft = np.exp(blended - blended.max(0))
    soft /= soft.sum(0)
    return _paste(soft[head], box, shape, kwargs.get("transpose", (0, 1, 2)))


def region_probabilities(image, networks, head=0, **kwargs) -> np.ndarray:
    blended, box, shape = reference(image, networks, **kwargs)
    return _paste(1 / (1 + np.exp(-blended[head])), box, shape, kwargs.get("transpose", (0, 1, 2)))


def _paste(values, box, shape, transpose) -> np.ndarray:
    full = np.zeros(shape)
    full[box] = values
    return full.transpose(np.argsort(transpose))


def run(model, image, **options) -> tuple[np.ndarray, np.ndarray]:
    options.setdefault("keep_probability", True)
    result = Segmenter(model, InferenceOptions(**options)).segment(image)
    return result.mask, result.probability


def assert_matches(probability, mask, expected, threshold=0.5) -> None:
    np.testing.assert_allclose(probability, expected, atol=2e-5, rtol=0)
    clear = np.abs(expected - threshold) > 1e-4  # voxels on the threshold may go either way
    np.testing.assert_array_equal(mask[clear], (expected > threshold)[clear])


# --- networks, plans, folds -------------------------------------------------------------------
@pytest.mark.slow
def test_plain_unet_two_folds_zscore_match_nnunet_with_and_without_mirroring(tmp_path) -> None:
    folder, networks = write_trained_model_folder(tmp_path, folds=(0, 1))
    model = load_model(folder)
    assert isinstance(model, NNUNetModel)
    assert model.recommended == {"patch_size": [16, 16, 16], "overlap": 0.5}
    assert model.mirror_axes == (0, 1, 2) and model.window_channels == 1
    assert "folds 0, 1" in model.summary and "label 1 'surface' (2 heads)" in model.summary
    image = volume(border=2)  # cropped in z and x
    mask, probability = run(model, image)
    assert probability[:2].max() == 0 and mask[:, -2:].max() == 0  # outside the crop
    assert_matches(probability, mask, label_probabilities(image, networks))
    mask, probability = run(model, image, tta=None, threshold=0.3)  # auto: (0, 1, 2)
    expected = label_probabilities(image, networks, mirror_axes=(0, 1, 2))
    assert_matches(probability, mask, expected, threshold=0.3)


def test_residual_encoder_old_plans_ct_and_a_transpose(tmp_path) -> None:
    arch = residual_architecture((4, 8), blocks=(1, 2))
    ct = {"mean": 100.0, "std": 30.0, "percentile_00_5": 40.0, "percentile_99_5": 200.0}
    plans = make_plans(
        arch, normalization="CTNormalization", transpose_forward=(2, 0, 1),
        intensity=ct, patch=(16, 16, 8), spacing=(1.0, 1.0, 1.0),
    )  # fmt: skip
    folder, networks = write_trained_model_folder(
        tmp_path, plans, make_dataset(channel="CT"), old_style=True
    )
    assert (
        "architecture"
        not in json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    )
    model = load_model(folder)
    assert model.recommended["patch_size"] == [16, 16, 8]
    image = volume((14, 21, 19), seed=3)
    mask, probability = run(model, image)
    expected = label_probabilities(image, networks, patch=(16, 16, 8), transpose=(2, 0, 1),
                                   scheme="CTNormalization", ct=ct)  # fmt: skip
    assert_matches(probability, mask, expected)


def test_inherited_configuration_and_zscore_over_the_nonzero_mask(tmp_path) -> None:
    plans = make_plans(use_mask_for_norm=True)
    plans["configurations"]["3d_custom"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    folder, networks = write_trained_model_folder(tmp_path, plans, configuration="3d_custom")
    image = volume(border=3)
    image[10:13, 10:13, 5:8] = 0  # a hole inside: filled, so it counts for the statistics
    model = load_model(folder)
    prepared = model.prepare_volume(image)
    assert prepared.data.shape == (17, 23, 18)
    inside = image[3:, :23].astype(np.float64)
    expected = (inside - inside.mean()) / inside.std()
    np.testing.assert_allclose(prepared.data, expected, atol=1e-5)
    mask, probability = run(model, image)
    assert_matches(probability, mask, label_probabilities(image, networks, use_mask=True))


def test_more_than_two_labels_blend_every_rival(tmp_path) -> None:
    dataset = make_dataset({"background": 0, "recto": 1, "verso": 2, "ignore": 3})
    folder, networks = write_trained_model_folder(tmp_path, make_plans(), dataset, folds=(0, 1))
    model = load_model(folder, foreground_class=2)
    assert model.window_channels == 2 and "label 2 'verso' (3 heads)" in model.summary
    image = volume(seed=5)
    mask, probability = run(model, image, tta=mirror_transforms((1,)), threshold=0.4)
    expected = label_probabilities(image, networks, head=2, mirror_axes=(1,))
    assert_matches(probability, mask, expected, threshold=0.4)
    with pytest.raises(
        ModelError, match=r"--foreground-class 3: not a foreground label .*1 recto, 2 verso"
    ):
        load_model(folder, foreground_class=3)  # the ignore label has no head


def test_region_based_models_give_a_sigmoid(tmp_path) -> None:
    labels = {"background": 0, "papyrus": [1, 2], "ink": 2}
    dataset = make_dataset(labels, regions_class_order=[1, 2])
    folder, networks = write_trained_model_folder(tmp_path, make_plans(), dataset)
    image = volume(seed=6)
    model = load_model(folder)
    assert "sigmoid of region 'papyrus' (2 regions)" in model.summary
    mask, probability = run(model, image)
    assert_matches(probability, mask, region_probabilities(image, networks, head=0))
    ink = load_model(folder, foreground_class=2)
    mask, probability = run(ink, image)
    assert_matches(probability, mask, region_probabilities(image, networks, head=1))


def test_small_volumes_are_padded_with_zeros_of_the_normalized_volume(tmp_path) -> None:
    folder, networks = write_trained_model_folder(tmp_path)
    image = volume((9, 20, 12), seed=7)
    mask, probability = run(load_model(folder), image)
    assert_matches(probability, mask, label_probabilities(image, networks))


def test_nnunet_importance_is_scipys_gaussian_in_fp16() -> None:
    from scipy.ndimage import gaussian_filter

    patch = (12, 16, 20)
    delta = np.zeros(patch)
    delta[6, 8, 10] = 1
    smooth = gaussian_filter(delta, [p / 8 for p in patch], 0, mode="constant", cval=0)
    half = torch.from_numpy(smooth / smooth.max() * 10).half()
    half[half == 0] = half[half != 0].min()
    assert torch.equal(nnunet_importance(patch), half.float())


# --- discovery and folds ------------------------------------------------------------------------
def test_the_folder_is_found_in_a_dataset_folder_or_a_kaggle_mount(tmp_path) -> None:
    mount = tmp_path / "models" / "me" / "surface" / "pytorch" / "default" / "1"
    folder, _ = write_trained_model_folder(mount / "Dataset901_Synthetic")
    for spec in (folder, folder.parent, mount, str(mount)):
        assert load_model(spec).name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    lowres = make_plans(configuration="3d_lowres")
    write_trained_model_folder(mount / "Dataset901_Synthetic", lowres, configuration="3d_lowres")
    with pytest.raises(
        ModelError, match=r"holds 2 nnU-Net trained-model folders \(.*3d_fullres, .*3d_lowres\)"
    ):
        load_model(mount)


def test_folds_and_checkpoints_are_chosen_or_refused_by_name(tmp_path) -> None:
    folder, networks = write_trained_model_folder(tmp_path, folds=(0, 1, "all"))
    (folder / "fold_2").mkdir()  # training never finished
    torch.save({}, folder / "fold_2" / "checkpoint_best.pth")
    model = load_model(folder)
    assert "folds 0, 1 (fold_2 left out: no checkpoint_final.pth)" in model.summary
    one = load_model(folder, folds=["all"])
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = networks[2](x)
        torch.testing.assert_close(one.foreground_logits(x), out[:, 1:] - out[:, :1])
    with pytest.raises(
        ModelError,
        match=r"fold_2 has no checkpoint_final.pth .*fold_2: checkpoint_best.pth.*--checkpoint best",
    ):
        load_model(folder, folds=[0, 2])
    with pytest.raises(ModelError, match="fold_4 is missing"):
        load_model(folder, folds=[4])
    with pytest.raises(ModelError, match="no fold has checkpoint_best.pth"):
        load_model(_only_fold(tmp_path / "b", 0), checkpoint="best")
    with pytest.raises(OptionError, match="--checkpoint must be one of final, best, got 'latest'"):
        resolve(RunRequest(models=(str(folder),), checkpoint="latest"))  # type: ignore[arg-type]
    hint = f"part of the nnU-Net trained-model folder {folder}: give --model {folder} --folds 1"
    with pytest.raises(ModelError, match=hint):
        load_model(folder / "fold_1")
    with pytest.raises(ModelError, match=hint + " --checkpoint final"):
        load_model(folder / "fold_1" / "checkpoint_final.pth")


def _only_fold(root: Path, fold: int) -> Path:
    folder, _ = write_trained_model_folder(root, folds=(fold,))
    return folder


def test_an_incomplete_folder_says_what_is_there(tmp_path) -> None:
    folder, _ = write_trained_model_folder(tmp_path)
    (folder / "plans.json").unlink()
    with pytest.raises(
        ModelError,
        match=r"no plans.json \(it holds dataset.json, dataset_fingerprint.json, fold_0/\)",
    ) as error:
        load_model(folder)
    assert "\n" not in str(error.value)
    empty = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres_copy"
    empty.mkdir()
    (empty / "plans.json").write_text("{}")
    (empty / "dataset.json").write_text("{}")
    with pytest.raises(ModelError, match="no fold_\\* folder with a checkpoint"):
        load_model(empty)


# --- refusals -----------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Payload.marker}",))


def test_a_tampered_checkpoint_is_refused_without_running_it(tmp_path) -> None:
    folder, _ = write_trained_model_folder(tmp_path)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    data = torch.load(checkpoint, weights_only=False)
    _Payload.marker = tmp_path / "ran"
    data["logging"]["extra"] = _Payload()
    torch.save(data, checkpoint)
    with pytest.raises(
        ModelError, match=r"refused: it pickles the Python object (posix|os)\.system"
    ):
        load_model(folder)
    assert not _Payload.marker.exists()
    checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="fold_0/checkpoint_final.pth: not a"):
        load_model(folder)


@pytest.mark.parametrize(
    ("where", "name"),
    [("network_class_name", "nnunetv2.custom.MyUNet"), ("nonlin", "os.system"),
     ("conv_op", "builtins.eval")],
)  # fmt: skip
def test_plans_naming_a_class_outside_the_allow_list_are_refused(tmp_path, where, name) -> None:
    folder, _ = write_trained_model_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    if where == "network_class_name":
        architecture[where] = name
    else:
        architecture["arch_kwargs"][where] = name
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match=f"{name!r} is not an allowed .*refused") as error:
        load_model(folder)
    assert "PlainConvUNet" in str(error.value) or "LeakyReLU" in str(error.value)


def test_other_mismatches_fail_with_one_line(tmp_path) -> None:
    folder, _ = write_trained_model_folder(tmp_path / "a", make_plans(spacing=(2.0, 1.0, 1.0)))
    assert load_model(folder).preprocessing.resamples()  # resampled, as nnU-Net would
    assert load_model(folder, spacing=(2.0, 1.0, 1.0)).preprocessing.spacing == (2.0, 1.0, 1.0)
    assert not load_model(folder, spacing=(2.0, 1.0, 1.0)).preprocessing.resamples()
    wide, _ = write_trained_model_folder(tmp_path / "b", make_plans(plain_architecture((4, 16))))
    plans = json.loads((wide / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [
        4,
        8,
    ]
    (wide / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(
        ModelError,
        match="weights do not match the network plans.json describes.*nnUNetTrainer may build its own",
    ):
        load_model(wide)
    two_d = make_plans(patch=(16, 16, 16), configuration="2d_only")
    two_d["configurations"]["2d_only"]["patch_size"] = [16, 16]
    with pytest.raises(ModelError, match="2D configuration"):
        from runtime.inference.nnunet.plans import read_configuration

        read_configuration(two_d, "2d_only", tmp_path / "plans.json")


def test_a_volume_is_resampled_exactly_when_nnunet_would(tmp_path) -> None:
    folder, _ = write_trained_model_folder(tmp_path, make_plans(spacing=(1.0005, 1.0, 1.0)))
    model = load_model(folder)  # decided per volume, by nnU-Net's rounding of the new shape
    small = model.prepare_volume(volume((20, 16, 16)))
    assert small.data.shape == (20, 16, 16) and small.resample_back is None
    large = model.prepare_volume(np.ones((1200, 1, 1), np.uint8))
    assert large.data.shape == (1199, 1, 1) and large.resample_back is not None


# --- ensembles and the command line ------------------------------------------------------------
@pytest.mark.slow
def test_an_ensemble_fuses_members_with_their_own_patches_and_preprocessing(tmp_path) -> None:
    from tests.test_models import write_unet_dir

    first, _ = write_trained_model_folder(tmp_path / "a", seed=1)
    second, _ = write_trained_model_folder(
        tmp_path / "b", make_plans(residual_architecture((4, 8)), patch=(8, 16, 16)), seed=2
    )
    write_unet_dir(tmp_path / "own")  # our format: patch 16, its own normalization
    specs = [first, second, tmp_path / "own"]
    image = volume((18, 21, 20), seed=8)
    singles = [run(load_model(spec), image, threshold=0.3)[1] for spec in specs]
    weights = [0.2, 0.3, 0.5]
    members = tuple(load_model(spec) for spec in specs)
    ensemble = Ensemble(members, resolve_ensemble(3, [2, 3, 5], None))
    assert ensemble.weights == pytest.approx(weights)
    mask, probability = run(ensemble, image, threshold=0.3)
    expected = sum(w * p for w, p in zip(weights, singles, strict=True))
    np.testing.assert_allclose(probability, expected, atol=1e-6)
    np.testing.assert_array_equal(mask, (probability > 0.3).astype(np.uint8))
    by_logit = Ensemble(members[:2], resolve_ensemble(2, None, "logits"))
    _, fused = run(by_logit, image)
    # log-odds of probabilities clipped to [1e-4, 1 - 1e-4]: outside a crop (probability 0)
    # a member says "surely background" without vetoing the other
    clipped = [np.clip(p.astype(np.float64), 1e-4, 1 - 1e-4) for p in singles[:2]]
    logit = [np.log(p) - np.log1p(-p) for p in clipped]
    reference = 1 / (1 + np.exp(-(logit[0] + logit[1]) / 2))
    np.testing.assert_allclose(fused, reference, atol=1e-5)


@pytest.mark.slow
def test_predict_runs_an_nnunet_folder_from_the_command_line(tmp_path) -> None:
    from runtime.__main__ import main
    from runtime.samples.sample import write_sample

    folder, _ = write_trained_model_folder(
        tmp_path / "results" / "Dataset901_Synthetic", folds=(0, 1)
    )
    root = write_sample(tmp_path / "data", n=2, shape=(20, 24, 22), seed=2)
    out = tmp_path / "submission.zip"
    code = main(["predict", str(root), "--model", str(tmp_path / "results"), "--folds", "0,1",
                 "--checkpoint", "final", "--tta", "auto", "--threshold", "0.4",
                 "--spacing", "1,1,1", "--foreground-class", "1", "-o", str(out)])  # fmt: skip
    assert code == 0
    with zipfile.ZipFile(out) as archive:
        assert len(archive.namelist()) == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    decisions = {d["name"]: d for d in metrics["run"]["decisions"]}
    assert decisions["tta"]["value"] == "mirror8 (8 passes)"
    assert decisions["normalization"]["value"].startswith("ZScoreNormalization")
    assert metrics["run"]["options"]["nnunet"] == {
        "folds": ["0", "1"],
        "checkpoint": "final",
        "spacing": [1.0, 1.0, 1.0],
    }
