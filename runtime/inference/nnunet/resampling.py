"""nnU-Net's resampling, as ``resample_data_or_seg_to_shape`` does it, for one-channel volumes.

A configuration trained at another spacing than the volumes' (``3d_lowres``, or any model whose
``spacing`` differs from ``--spacing``) sees the volume resampled to its spacing after
normalization, and its blended logits are resampled back to the cropped volume's shape before the
foreground is taken. The rules are nnU-Net's (``default_resampling.py``):

* **separate z**: when the larger spacing is more than ``separate_z_anisotropy_threshold`` (3)
  times the smaller one -- the current spacing is asked first, then the new one -- and exactly one
  axis has the largest spacing, each slice across that axis is resized in 2D with ``order``, then
  the axis itself is interpolated with ``order_z`` (0: nearest); ``force_separate_z`` overrides
  the test;
* otherwise the whole volume is resized in 3D with ``order``;
* a resize is scikit-image's ``resize(mode="edge", anti_aliasing=False)``: a spline zoom of the
  grid (``scipy.ndimage.zoom(..., grid_mode=True, mode="nearest")``) in float64, clipped to the
  input's range; the along-axis step is ``map_coordinates`` at ``scale * (k + 0.5) - 0.5``.

Everything runs in float64 as nnU-Net does and comes back as float32, out of place. The along-axis
step is computed slab by slab, so no full-size coordinate grid is built (nnU-Net's takes three
float64 copies of the output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.contract.errors import ModelError

__all__ = ["ResamplingRule", "new_shape", "resample"]

# The only resampling function of nnU-Net's default planners; the torch-based ones
# (resample_torch_fornnunet) interpolate differently and are refused by name.
SUPPORTED_FUNCTION = "resample_data_or_seg_to_shape"
_ANISOTROPY_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD
_KWARGS = {"is_seg", "order", "order_z", "force_separate_z", "separate_z_anisotropy_threshold"}
# Bytes of float64 coordinates per slab of the along-axis step.
_SLAB_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ResamplingRule:
    """One of plans.json's ``resampling_fn_*`` entries with its kwargs."""

    function: str
    order: int
    order_z: int
    force_separate_z: bool | None
    anisotropy_threshold: float = _ANISOTROPY_THRESHOLD

    @classmethod
    def from_plans(
        cls, config: Mapping[str, Any], key: str, where: str, *, default_order: int
    ) -> ResamplingRule:
        """``key``: ``resampling_fn_data`` or ``resampling_fn_probabilities``."""
        function = config.get(key, SUPPORTED_FUNCTION)
        kwargs = config.get(f"{key}_kwargs", {})
        if not isinstance(function, str):
            raise ModelError(f"{where}: {key} must be a function name, got {function!r}")
        if not isinstance(kwargs, dict):
            raise ModelError(f"{where}: {key}_kwargs must be an object, got {kwargs!r}")
        unknown = sorted(set(kwargs) - _KWARGS)
        if unknown:
            raise ModelError(f"{where}: {key}_kwargs has unknown keys {', '.join(unknown)}")
        if kwargs.get("is_seg", False) is not False:
            raise ModelError(f"{where}: {key}_kwargs.is_seg must be false for images and logits")
        order = _order(kwargs.get("order", default_order), f"{where}: {key}_kwargs.order")
        order_z = _order(kwargs.get("order_z", 0), f"{where}: {key}_kwargs.order_z")
        force = kwargs.get("force_separate_z")
        if force is not None and not isinstance(force, bool):
            raise ModelError(
                f"{where}: {key}_kwargs.force_separate_z must be true, false or null, got {force!r}"
            )
        threshold = kwargs.get("separate_z_anisotropy_threshold", _ANISOTROPY_THRESHOLD)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
            or threshold <= 0
        ):
            raise ModelError(
                f"{where}: {key}_kwargs.separate_z_anisotropy_threshold must be a positive "
                f"number, got {threshold!r}"
            )
        return cls(function, order, order_z, force, float(threshold))

    @property
    def supported(self) -> bool:
        return self.function == SUPPORTED_FUNCTION and self.order_z <= 1

    def refusal(self) -> str:
        """Why volumes cannot be resampled with this rule (``supported`` is False)."""
        if self.function != SUPPORTED_FUNCTION:
            return f"resampling function {self.function!r} is not implemented (only {SUPPORTED_FUNCTION})"
        return f"order_z {self.order_z} along the separate axis is not implemented (0 or 1)"

    def separate_axis(self, current: Sequence[float], new: Sequence[float]) -> int | None:
        """The axis resampled on its own (nnU-Net's ``determine_do_sep_z_and_axis``), or None."""
        if self.force_separate_z is not None:
            axes = _lowres_axes(current) if self.force_separate_z else None
        elif _anisotropic(current, self.anisotropy_threshold):
            axes = _lowres_axes(current)
        elif _anisotropic(new, self.anisotropy_threshold):
            axes = _lowres_axes(new)
        else:
            axes = None
        # Two or three axes sharing the largest spacing: resampled together, in 3D.
        return axes[0] if axes is not None and len(axes) == 1 else None


def new_shape(
    shape: Sequence[int], current: Sequence[float], new: Sequence[float]
) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(current / new * size)`` per axis."""
    return tuple(int(round(c / n * s)) for c, n, s in zip(current, new, shape, strict=True))


def resample(
    data: np.ndarray,
    shape: Sequence[int],
    current: Sequence[float],
    new: Sequence[float],
    rule: ResamplingRule,
) -> np.ndarray:
    """``data`` (3D) resized to ``shape`` from spacing ``current`` to ``new``; float32, a new array."""
    target = tuple(int(v) for v in shape)
    if tuple(data.shape) == target:
        return data.astype(np.float32, copy=True)
    source = data.astype(np.float64)
    axis = rule.separate_axis(current, new)
    if axis is None:
        return _resize(source, target, rule.order).astype(np.float32)
    planes = list(target)
    planes[axis] = source.shape[axis]
    in_plane = np.empty(planes, dtype=np.float64)
    plane_shape = tuple(v for i, v in enumerate(target) if i != axis)
    for index in range(source.shape[axis]):
        where = (slice(None),) * axis + (index,)
        in_plane[where] = _resize(source[where], plane_shape, rule.order)
    del source
    if in_plane.shape[axis] == target[axis]:
        return in_plane.astype(np.float32)
    return _along_axis(in_plane, axis, target[axis], rule.order_z)


def _resize(image: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """scikit-image's ``resize(image, shape, order, mode="edge", anti_aliasing=False)`` of a
    float64 image: the same zoom call and the same clipping, without the dependency."""
    from scipy.ndimage import zoom

    factors = np.divide(image.shape, shape)
    out = zoom(
        image, [1 / f for f in factors], order=order, mode="nearest", cval=0.0, grid_mode=True
    )
    if order > 0:  # scikit-image clips to the input's range (order 0 cannot leave it)
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _along_axis(image: np.ndarray, axis: int, size: int, order: int) -> np.ndarray:
    """nnU-Net's ``map_coordinates`` step along ``axis`` (the other axes keep their grid), slab
    by slab over the first other axis; float32 out."""
    from scipy.ndimage import map_coordinates

    shape = list(image.shape)
    shape[axis] = size
    out = np.empty(shape, dtype=np.float32)
    scale = float(image.shape[axis]) / size
    along = scale * (np.arange(size) + 0.5) - 0.5  # as nnU-Net's float64 arithmetic
    slab_axis = 1 if axis == 0 else 0
    per_row = 3 * 8 * math.prod(v for i, v in enumerate(shape) if i != slab_axis)
    rows = max(1, _SLAB_BYTES // max(per_row, 1))
    for start in range(0, shape[slab_axis], rows):
        stop = min(start + rows, shape[slab_axis])
        cut = [slice(None)] * 3
        cut[slab_axis] = slice(start, stop)
        part = image[tuple(cut)]
        grid_shape = list(shape)
        grid_shape[slab_axis] = stop - start
        # Integer coordinates on the other axes hit grid values exactly, so a slab of the input
        # gives what the whole one would (orders 0 and 1 read no neighbour at weight 0).
        axes = (np.arange(n, dtype=np.float64) for n in grid_shape)
        grids = list(np.meshgrid(*axes, indexing="ij"))
        grids[axis] = np.broadcast_to(
            along.reshape([-1 if i == axis else 1 for i in range(3)]), grid_shape
        )
        out[tuple(cut)] = map_coordinates(part, np.stack(grids), order=order, mode="nearest")
    return out


def _anisotropic(spacing: Sequence[float], threshold: float) -> bool:
    return max(spacing) / min(spacing) > threshold


def _lowres_axes(spacing: Sequence[float]) -> list[int]:
    largest = max(spacing)
    return [i for i, v in enumerate(spacing) if largest / v == 1]


def _order(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise ModelError(f"{what} must be a spline order 0..5, got {value!r}")
    return value
