"""Window placement, Gaussian weights and blending checked against a plain reference loop."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from runtime.contract.errors import ModelError, VolumeError
from runtime.contract.tta import IDENTITY, PRESETS, Transform, mirror_transforms, parse_tta
from runtime.inference.sliding_window import (
    BlendSettings,
    blend_volume,
    blend_volume_with_probability,
    choose_accumulation,
    gaussian_importance,
    logit_threshold,
    plan_windows,
    prefetch_pays,
    window_starts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- a plain, obviously-correct reference ---------------------------------------------------
def reference_gaussian(patch: tuple[int, int, int]) -> np.ndarray:
    """sigma = patch / 8 per axis, centred, lifted to at least 1e-3."""
    weights = np.ones(patch)
    for axis, size in enumerate(patch):
        offsets = np.arange(size) - (size - 1) / 2
        profile = np.exp(-(offsets**2) / (2 * (size / 8) ** 2))
        shape = [1, 1, 1]
        shape[axis] = size
        weights = weights * profile.reshape(shape)
    return np.maximum(weights, max(weights.min(), 1e-3))


def _numpy_apply(transform: Transform, window: np.ndarray) -> np.ndarray:
    if transform.flips:
        window = np.flip(window, transform.flips)
    if transform.turns:
        window = np.rot90(window, transform.turns, axes=transform.plane)
    return np.swapaxes(window, *transform.swap) if transform.swap else window


def _numpy_invert(transform: Transform, window: np.ndarray) -> np.ndarray:
    if transform.swap:
        window = np.swapaxes(window, *transform.swap)
    if transform.turns:
        window = np.rot90(window, -transform.turns, axes=transform.plane)
    return np.flip(window, transform.flips) if transform.flips else window


def reference_logits(
    volume: np.ndarray,
    module: torch.nn.Module,
    patch: tuple[int, int, int],
    overlap: float,
    transforms: tuple[Transform, ...] = (IDENTITY,),
    normalization: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Mirror-pad, then one window at a time, every transform run and undone with numpy's own
    flip, rot90 and swapaxes, a weighted mean."""
    padded_shape = [max(s, p) for s, p in zip(volume.shape, patch, strict=True)]
    before = [(pd - s) // 2 for pd, s in zip(padded_shape, volume.shape, strict=True)]
    widths = [(b, pd - s - b) for b, pd, s in zip(before, padded_shape, volume.shape, strict=True)]
    padded = np.pad(volume.astype(np.float64), widths, mode="reflect")  # the scan goes on
    mean, std = normalization
    weights = reference_gaussian(patch)
    numerator = np.zeros(padded_shape)
    denominator = np.zeros(padded_shape)
    pz, py, px = patch
    for z in window_starts(padded_shape[0], pz, overlap):
        for y in window_starts(padded_shape[1], py, overlap):
            for x in window_starts(padded_shape[2], px, overlap):
                window = (padded[z : z + pz, y : y + py, x : x + px] - mean) / std
                total = np.zeros(patch)
                for transform in transforms:
                    moved = _numpy_apply(transform, window)
                    inputs = torch.from_numpy(moved.copy()).float()[None, None]
                    with torch.no_grad():
                        out = module(inputs)[0, 0].double().numpy()
                    total += _numpy_invert(transform, out)
                numerator[z : z + pz, y : y + py, x : x + px] += weights * total / len(transforms)
                denominator[z : z + pz, y : y + py, x : x + px] += weights
    blended = numerator / denominator
    return blended[
        before[0] : before[0] + volume.shape[0],
        before[1] : before[1] + volume.shape[1],
        before[2] : before[2] + volume.shape[2],
    ]


def random_model(seed: int) -> torch.nn.Module:
    """Random convolutions with asymmetric kernels, so a flip not undone shows."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, (3, 3, 3), padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv3d(4, 1, (3, 1, 5), padding=(1, 0, 2)),
    )
    return model.eval()


def as_forward(module: torch.nn.Module):
    return lambda batch: module(batch)


def random_volume(shape: tuple[int, int, int], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 255).astype(dtype)


def assert_mask_matches(mask: np.ndarray, reference: np.ndarray, cut: float) -> None:
    """Equal wherever the reference is not within float error of the threshold."""
    clear = np.abs(reference - cut) > 1e-4
    assert mask.dtype == np.uint8 and mask.shape == reference.shape
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask[clear], (reference[clear] > cut).astype(np.uint8))
    assert clear.mean() > 0.99


# --- placement ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "patch", "expected_count"), [(320, 128, 4), (320, 160, 3), (320, 192, 3)]
)
def test_window_counts_match_nnunet(size: int, patch: int, expected_count: int) -> None:
    starts = window_starts(size, patch, 0.5)
    assert len(starts) == expected_count
    assert starts[0] == 0 and starts[-1] == size - patch


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize(("size", "patch"), [(100, 32), (33, 32), (257, 64), (64, 64)])
def test_windows_cover_evenly_within_the_step(size: int, patch: int, overlap: float) -> None:
    starts = window_starts(size, patch, overlap)
    steps = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(steps <= patch * (1 - overlap) + 1e-9)
    assert len(steps) == 0 or steps.max() - steps.min() <= 1  # even, not pushed back at the end


def test_small_axes_are_padded_symmetrically() -> None:
    plan = plan_windows((10, 40, 7), (16, 16, 16), 0.5)
    assert plan.padded_shape == (16, 40, 16)
    assert plan.pad_before == (3, 0, 4)
    assert {s[0] for s in plan.starts} == {0} and {s[2] for s in plan.starts} == {0}
    assert plan.n_windows == len(window_starts(40, 16, 0.5))


def test_gaussian_matches_reference_and_is_symmetric() -> None:
    patch = (16, 12, 20)
    weights = gaussian_importance(patch).numpy()
    np.testing.assert_allclose(weights, reference_gaussian(patch), rtol=1e-5)
    for axis in range(3):
        np.testing.assert_array_equal(weights, np.flip(weights, axis))
    assert weights.min() == pytest.approx(1e-3)


def test_mirror_transforms_and_thresholds() -> None:
    assert mirror_transforms(()) == (IDENTITY,)
    assert [t.flips for t in mirror_transforms((2, 0))] == [(), (0,), (2,), (0, 2)]
    assert len(mirror_transforms((0, 1, 2))) == 8
    with pytest.raises(ValueError, match="0, 1, 2"):
        mirror_transforms((3,))
    assert logit_threshold(0.5) == 0.0
    assert logit_threshold(0.3) == pytest.approx(math.log(0.3 / 0.7))
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            logit_threshold(bad)


# --- blending -------------------------------------------------------------------------------
CASES = {
    # shape, patch, overlap, batch: chosen so the last batch is partial
    "partial-last-batch": ((37, 45, 29), (16, 16, 16), 0.5, 3),
    "smaller-than-patch": ((10, 7, 20), (16, 16, 16), 0.5, 2),
    "anisotropic-patch": ((30, 40, 50), (8, 16, 24), 0.25, 4),
    "one-thin-axis": ((5, 33, 40), (8, 16, 16), 0.6, 5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_blended_logits_equal_the_reference(case: str) -> None:
    shape, patch, overlap, batch = CASES[case]
    module = random_model(seed=len(case))
    volume = random_volume(shape, seed=len(case))
    normalization = (127.5, 64.0)
    expected = reference_logits(volume, module, patch, overlap, normalization=normalization)
    settings = BlendSettings(patch, overlap, batch, normalization=normalization)
    logits = blend_volume(volume, as_forward(module), settings, output="logits")
    assert logits.shape == shape and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    mask = blend_volume(volume, as_forward(module), settings)
    assert_mask_matches(mask, expected, 0.0)


@pytest.mark.parametrize("accumulate", ["device", "slab", "host"])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_every_accumulation_and_threshold_equals_the_reference(
    accumulate: str, threshold: float
) -> None:
    module = random_model(seed=3)
    volume = random_volume((45, 21, 26), seed=3)
    patch = (12, 12, 16)
    expected = reference_logits(volume, module, patch, 0.5, normalization=(100.0, 50.0))
    settings = BlendSettings(
        patch,
        0.5,
        batch_size=4,
        threshold=threshold,
        normalization=(100.0, 50.0),
        accumulate=accumulate,
    )
    mask = blend_volume(volume, as_forward(module), settings)
    assert_mask_matches(mask, expected, logit_threshold(threshold))
    logits = blend_volume(volume, as_forward(module), settings, output="logits")
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("accumulate", ["device", "slab", "host"])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_kept_probabilities_leave_the_mask_unchanged(accumulate: str, threshold: float) -> None:
    module = random_model(seed=5)
    volume = random_volume((33, 21, 26), seed=5)
    patch = (12, 12, 16)
    settings = BlendSettings(
        patch, 0.5, batch_size=3, threshold=threshold, normalization=(100.0, 50.0),
        accumulate=accumulate, transforms=mirror_transforms((2,)),
    )  # fmt: skip
    mask = blend_volume(volume, as_forward(module), settings)
    logits = blend_volume(volume, as_forward(module), settings, output="logits")
    kept = blend_volume_with_probability(volume, as_forward(module), settings)
    assert kept.mask is not None and kept.probability is not None
    assert np.array_equal(kept.mask, mask)
    assert kept.probability.dtype == np.float32 and kept.probability.shape == volume.shape
    np.testing.assert_allclose(kept.probability, 1.0 / (1.0 + np.exp(-logits)), atol=1e-6)


@pytest.mark.parametrize("tta", ["0", "1,2", "0,1,2", "rot7", "transpose_yx+rot90_zx_2"])
def test_tta_equals_the_reference(tta: str) -> None:
    module = random_model(seed=7)
    volume = random_volume((20, 26, 18), seed=7)
    patch = (12, 16, 16)
    transforms = parse_tta(tta)
    assert transforms is not None
    expected = reference_logits(volume, module, patch, 0.5, transforms, normalization=(128.0, 60.0))
    settings = BlendSettings(
        patch, 0.5, 3, transforms=transforms, threshold=0.4, normalization=(128.0, 60.0)
    )
    logits = blend_volume(volume, as_forward(module), settings, output="logits")
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    mask = blend_volume(volume, as_forward(module), settings)
    assert_mask_matches(mask, expected, logit_threshold(0.4))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_transform_is_undone_for_a_position_dependent_model(preset: str) -> None:
    """A model that returns its input: blended logits are the input whatever the transforms."""
    volume = random_volume((17, 23, 19), np.float32, seed=11) - 127.0
    settings = BlendSettings((8, 8, 8), 0.5, 4, transforms=PRESETS[preset], accumulate="slab")
    logits = blend_volume(volume, lambda batch: batch.clone(), settings, output="logits")
    np.testing.assert_allclose(logits, volume, rtol=1e-5, atol=1e-4)
    mask = blend_volume(volume, lambda batch: batch.clone(), settings)
    np.testing.assert_array_equal(mask, (volume > 0).astype(np.uint8))


def test_the_batch_shape_is_fixed_and_prefetch_changes_nothing() -> None:
    module = random_model(seed=5)
    volume = random_volume((30, 20, 20), seed=5)
    shapes: list[tuple[int, ...]] = []
    prefetching: list[bool] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(batch.shape))
        prefetching.append(any(t.name.startswith("window-prefetch") for t in threading.enumerate()))
        return module(batch)

    settings = BlendSettings(
        (16, 16, 16), 0.5, 4, transforms=mirror_transforms((2,)), prefetch=True
    )
    with_prefetch = blend_volume(volume, forward, settings, output="logits")
    assert set(shapes) == {(4, 1, 16, 16, 16)} and all(prefetching)
    plan = plan_windows(volume.shape, (16, 16, 16), 0.5)
    assert len(shapes) == math.ceil(plan.n_windows * 2 / 4)
    for prefetch in (False, None):  # None on the CPU: no thread (it does not pay there)
        prefetching.clear()
        without = blend_volume(
            volume,
            forward,
            BlendSettings((16, 16, 16), 0.5, 4, transforms=settings.transforms, prefetch=prefetch),
            output="logits",
        )
        np.testing.assert_array_equal(with_prefetch, without)
        assert prefetching and not any(prefetching)


def test_prefetch_only_where_host_work_overlaps_a_device() -> None:
    assert prefetch_pays("cpu", "device")[0] is False
    assert prefetch_pays("cpu", "host")[0] is False
    assert "same cores" in prefetch_pays("cpu", "device")[1]
    for accumulate in ("device", "slab"):
        assert prefetch_pays("cuda:0", accumulate)[0] is False
    pays, reason = prefetch_pays("cuda:1", "host")
    assert pays and "cuda:1" in reason


def test_a_short_last_batch_can_run_at_its_true_size() -> None:
    module = random_model(seed=6)
    volume = random_volume((30, 20, 20), seed=6)  # 3 x 2 x 2 windows: 12 x 2 flips = 24 items
    shapes: list[int] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        shapes.append(batch.shape[0])
        return module(batch)

    transforms = mirror_transforms((2,))
    padded = blend_volume(
        volume, forward, BlendSettings((16, 16, 16), 0.5, 5, transforms=transforms)
    )
    assert shapes == [5] * 5
    shapes.clear()
    settings = BlendSettings((16, 16, 16), 0.5, 5, transforms=transforms, pad_last_batch=False)
    exact = blend_volume(volume, forward, settings)
    assert shapes == [5, 5, 5, 5, 4]
    np.testing.assert_array_equal(padded, exact)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int16, np.bool_])
def test_voxel_types_give_the_same_result_as_float(dtype: type) -> None:
    module = random_model(seed=2)
    base = random_volume((20, 20, 20), seed=2)
    volume = (base > 127) if dtype is np.bool_ else base.astype(dtype)
    settings = BlendSettings((16, 16, 16), 0.5, 2, normalization=(1.0, 2.0))
    got = blend_volume(volume, as_forward(module), settings, output="logits")
    expected = blend_volume(
        volume.astype(np.float32), as_forward(module), settings, "cpu", output="logits"
    )
    np.testing.assert_array_equal(got, expected)


def test_bad_volumes_and_bad_models_fail_clearly() -> None:
    settings = BlendSettings((8, 8, 8))
    with pytest.raises(VolumeError, match="3D"):
        blend_volume(np.zeros((8, 8)), lambda b: b, settings)
    with pytest.raises(VolumeError, match="voxel type"):
        blend_volume(np.zeros((8, 8, 8), dtype=np.complex64), lambda b: b, settings)
    with pytest.raises(ModelError, match=r"returned \(2, 2, 8, 8, 8\)"):
        blend_volume(np.zeros((8, 8, 8)), lambda b: torch.cat([b, b], 1), settings)


def test_choose_accumulation_by_free_memory() -> None:
    plan = plan_windows((320, 320, 320), (128, 128, 128), 0.5)
    voxels = 320**3
    common = {"source_itemsize": 1, "weight_sum": False, "working_bytes": 10**9}
    assert choose_accumulation(plan, free_bytes=16 * 10**9, **common) == "device"
    # 1 + 6 bytes per voxel do not fit in 4; 1 + 6 * 128 / 320 = 3.4 do.
    assert choose_accumulation(plan, free_bytes=int((10**9 + voxels * 4) / 0.9), **common) == "slab"
    assert choose_accumulation(plan, free_bytes=10**9, **common) == "host"


def test_rival_channels_blend_the_same_in_every_accumulation() -> None:
    """A multi-channel window is (C, z, y, x): slab mode must slide on z, not on C."""
    torch.manual_seed(11)
    module = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 2, 3, padding=1)
    ).eval()
    volume = random_volume((45, 21, 26), seed=11)
    results = []
    for accumulate in ("device", "slab", "host"):
        settings = BlendSettings(
            (12, 12, 16), 0.5, batch_size=3, normalization=(100.0, 50.0),
            accumulate=accumulate, channels=2,
        )  # fmt: skip
        results.append(blend_volume(volume, as_forward(module), settings, output="logits"))
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)
    np.testing.assert_allclose(results[2], results[0], atol=1e-5)
