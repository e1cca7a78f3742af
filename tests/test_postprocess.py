"""Post-processing: small components (26-connected), closing with a ball, hole filling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.volumes.postprocess import (
    PostprocessOptions,
    close_mask,
    fill_holes,
    postprocess,
    remove_small_components,
)
from tests.test_volumes import run_with_hidden_modules


def _sheet(shape: tuple[int, int, int] = (12, 20, 20)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[3:9, :, :] = 1  # a six-voxel-thick sheet across the whole volume
    return mask


def test_small_components_go_and_diagonal_neighbours_count_as_connected() -> None:
    mask = _sheet()
    mask[1, 1, 1] = 1  # a lone speck: 1 voxel
    # Three voxels touching only corner to corner: one 26-connected component of 3.
    mask[10, 2, 2] = mask[11, 3, 3] = mask[10, 4, 4] = 1
    result = remove_small_components(mask, min_voxels=3)
    assert result.dtype == bool
    assert not result[1, 1, 1]
    assert result[10, 2, 2] and result[11, 3, 3] and result[10, 4, 4]
    assert result[3:9].all()
    assert remove_small_components(mask, min_voxels=4)[10:12].sum() == 0
    assert remove_small_components(np.zeros((3, 3, 3), np.uint8), 5).sum() == 0


def test_closing_bridges_a_gap_and_never_removes_foreground_at_the_border() -> None:
    mask = _sheet()
    mask[3:9, 8, 8] = 0  # a one-voxel pinhole through the sheet
    closed = close_mask(mask, radius=1)
    # A ball cannot enter the pinhole beyond its mouths: the inside closes, the mouths stay.
    assert closed[4:8, 8, 8].all()
    assert not closed[3, 8, 8] and not closed[8, 8, 8]
    assert close_mask(mask, radius=2)[5:7, 8, 8].all()
    assert (closed >= (mask != 0)).all()  # closing only adds
    # Foreground touching the border survives (plain scipy closing would erode it there).
    edge = np.zeros((6, 6, 6), dtype=np.uint8)
    edge[0, :, :] = 1
    assert close_mask(edge, radius=2)[0].all()
    assert np.array_equal(close_mask(mask, radius=0), mask != 0)


def test_fill_holes_fills_enclosed_cavities_only() -> None:
    box = np.zeros((9, 9, 9), dtype=np.uint8)
    box[2:7, 2:7, 2:7] = 1
    box[3:6, 3:6, 3:6] = 0  # a closed cavity
    filled = fill_holes(box)
    assert filled[3:6, 3:6, 3:6].all()
    opened = box.copy()
    opened[4, 4, 2] = 0  # a tunnel from the cavity to the outside
    assert not fill_holes(opened)[4, 4, 4]


def test_postprocess_runs_the_steps_in_order_and_returns_uint8() -> None:
    mask = _sheet()
    mask[1, 1, 1] = 1  # a speck one voxel above the sheet
    mask[3:9, 8, 8] = 0
    options = PostprocessOptions(min_component_voxels=10, closing_radius=1, fill_holes=True)
    assert options.steps == ["remove components < 10 voxels", "closing radius 1", "fill holes"]
    result = postprocess(mask, options)
    assert result.dtype == np.uint8 and result.shape == mask.shape
    assert set(np.unique(result)) == {0, 1}
    # Specks go first: closing first would weld the speck onto the sheet, and it would stay.
    assert result[1, 1, 1] == 0
    assert remove_small_components(close_mask(mask, 1), 10)[1, 1, 1]
    assert result[4:8, 8, 8].all()  # the pinhole's inside closed

    untouched = postprocess(mask * 3, PostprocessOptions())  # no steps: just 0/1 uint8
    assert np.array_equal(untouched, mask)


def test_options_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match="min_component_voxels"):
        PostprocessOptions(min_component_voxels=-1)
    with pytest.raises(ValueError, match="closing_radius"):
        PostprocessOptions(closing_radius=-2)


def test_without_scipy_the_steps_are_skipped_with_a_warning(tmp_path: Path) -> None:
    mask = _sheet()
    mask[1, 1, 1] = 1
    np.save(tmp_path / "mask.npy", mask)
    output = run_with_hidden_modules(
        {"scipy"},
        """
        import warnings
        import numpy as np
        from runtime.volumes.postprocess import PostprocessOptions, postprocess, scipy_available
        assert not scipy_available()
        mask = np.load("mask.npy")
        heard = []
        result = postprocess(mask, PostprocessOptions(min_component_voxels=5), warn=heard.append)
        assert np.array_equal(result, mask) and result.dtype == np.uint8
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            postprocess(mask, PostprocessOptions(fill_holes=True))
        print(heard[0])
        print(caught[0].message)
        """,
        tmp_path,
    )
    first, second = output.strip().splitlines()
    assert "scipy is not installed" in first and "remove components < 5 voxels" in first
    assert "fill holes" in second
