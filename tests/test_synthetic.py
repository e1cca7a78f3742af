"""The synthetic papyrus generator: shapes, determinism, labels and that the task is not trivial."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from runtime.samples.synthetic import IGNORE_LABEL, SURFACE_LABEL, SyntheticVolume, synthetic_volume

SHAPE = (32, 48, 40)


def _dice(prediction: np.ndarray, label: np.ndarray) -> float:
    scored = label != IGNORE_LABEL
    predicted = prediction[scored]
    truth = label[scored] == SURFACE_LABEL
    return float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


def test_shape_dtype_and_label_values() -> None:
    volume = synthetic_volume(SHAPE, 0)
    assert isinstance(volume, SyntheticVolume)
    for array in (volume.image, volume.label):
        assert array.shape == SHAPE
        assert array.dtype == np.uint8
    assert set(np.unique(volume.label)) <= {0, SURFACE_LABEL, IGNORE_LABEL}
    fraction = (volume.label == SURFACE_LABEL).mean()
    assert 0.05 < fraction < 0.6


def test_same_seed_same_volume_and_generator_accepted() -> None:
    first = synthetic_volume(SHAPE, 7)
    again = synthetic_volume(SHAPE, 7)
    other = synthetic_volume(SHAPE, 8)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    assert not np.array_equal(first.label, other.label)
    from_generator = synthetic_volume(SHAPE, np.random.default_rng(7))
    np.testing.assert_array_equal(from_generator.label, first.label)


def test_sheets_are_brighter_than_background_but_noisy() -> None:
    volume = synthetic_volume(SHAPE, 1)
    image = volume.image.astype(np.float64)
    sheet = image[volume.label == SURFACE_LABEL]
    background = image[volume.label == 0]
    assert sheet.mean() > background.mean() + 30
    # Noise: neighbouring background voxels differ by more than a few grey levels.
    assert np.abs(np.diff(image, axis=2))[volume.label[:, :, 1:] == 0].mean() > 8


def test_one_sheet_is_one_thin_connected_layer() -> None:
    for seed in range(3):
        label = synthetic_volume(SHAPE, seed, n_sheets=1).label
        surface = label == SURFACE_LABEL
        assert surface.any()
        _, components = ndimage.label(surface)
        assert components == 1
        # At most five voxels thick: no voxel lies more than about three from the background.
        assert ndimage.distance_transform_edt(surface).max() <= 3.7


def test_zero_sheets_is_empty_background() -> None:
    volume = synthetic_volume(SHAPE, 3, n_sheets=0)
    assert not (volume.label == SURFACE_LABEL).any()


def test_a_default_chunk_holds_several_layers() -> None:
    for seed in range(3):
        surface = synthetic_volume((48, 48, 48), seed).label == SURFACE_LABEL
        _, components = ndimage.label(surface)
        assert components >= 3


def test_two_layers_sometimes_touch() -> None:
    components = []
    for seed in range(8):
        surface = synthetic_volume(SHAPE, seed, n_sheets=2).label == SURFACE_LABEL
        components.append(ndimage.label(surface)[1])
    assert set(components) == {1, 2}  # touching pairs merge into one component, others do not


def test_some_volumes_have_an_unlabeled_region() -> None:
    labels = [synthetic_volume((24, 24, 24), seed).label for seed in range(6)]
    assert any((label == IGNORE_LABEL).any() for label in labels)
    assert any(not (label == IGNORE_LABEL).any() for label in labels)


@pytest.mark.slow
def test_a_global_threshold_does_not_solve_it() -> None:
    # Even the best threshold for each volume, chosen with the answer in hand, stays below the
    # Dice the demo model must reach: the data needs a model, not a cut-off.
    for seed in (100, 101):
        volume = synthetic_volume((48, 64, 64), seed)
        best = max(_dice(volume.image >= t, volume.label) for t in range(30, 230, 5))
        assert best < 0.9


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (17, 9, 33)])
def test_any_small_shape_works(shape: tuple[int, int, int]) -> None:
    volume = synthetic_volume(shape, 0)
    assert volume.image.shape == volume.label.shape == shape


@pytest.mark.parametrize("shape", [(8, 8), (0, 8, 8), (8, -1, 8), (8.0, 8, 8), (True, 8, 8)])
def test_bad_shape_is_refused(shape: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="shape"):
        synthetic_volume(shape, 0)


def test_bad_sheet_count_is_refused() -> None:
    with pytest.raises(ValueError, match="n_sheets"):
        synthetic_volume(SHAPE, 0, n_sheets=-1)
