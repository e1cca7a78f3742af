"""nnU-Net's preprocessing at inference, in its order: float32, transpose, crop, normalize.

Reproduces ``DefaultPreprocessor.run_case_npy`` for one-channel volumes:

1. ``transpose_forward`` (identity for isotropic data);
2. crop to the bounding box of the non-zero voxels (results are pasted back into a volume of
   background, so voxels outside the box are never foreground);
3. the configuration's normalization scheme, over the crop, with ``use_mask_for_norm`` (statistics
   over the non-zero mask with its holes filled, voxels outside it left at 0);
4. resampling to the configuration's spacing: TIFFs carry no spacing, so the input's is 1, 1, 1
   unless given; a volume that nnU-Net would resample is refused (nnU-Net's resampling is not
   reproduced), never resampled silently.

The arithmetic is numpy's float32, operation for operation as nnU-Net's normalization classes do
it, so the network sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.contract.errors import ModelError, VolumeError
from runtime.inference.nnunet.plans import Configuration
from runtime.inference.segmentation_model import PreparedVolume

__all__ = ["NORMALIZATIONS", "Preprocessing"]

NORMALIZATIONS = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)
_EPS = 1e-8  # nnU-Net's epsilon for a float32 target
# The spacing a model was trained on must match the volumes': beyond this relative difference
# the model is refused at load time (a smaller one is checked per volume, as nnU-Net decides).
_SPACING_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Preprocessing:
    """One configuration's preprocessing of a one-channel volume."""

    scheme: str
    use_mask: bool
    intensity: dict[str, float] | None  # CT normalization's mean, std, percentiles
    transpose_forward: tuple[int, ...]
    target_spacing: tuple[float, ...]  # transposed, as plans.json stores it
    spacing: tuple[float, ...]  # the input volumes', in their own axis order (z, y, x)
    source: str  # for messages

    @classmethod
    def from_configuration(
        cls, configuration: Configuration, spacing: Sequence[float] | None, source: str
    ) -> Preprocessing:
        scheme = configuration.normalization_schemes[0]
        if scheme not in NORMALIZATIONS:
            raise ModelError(
                f"{source}: normalization {scheme!r} is not one of nnU-Net's "
                f"({', '.join(NORMALIZATIONS)})"
            )
        intensity = configuration.intensity_properties.get("0")
        if scheme == "CTNormalization":
            keys = ("mean", "std", "percentile_00_5", "percentile_99_5")
            if not isinstance(intensity, dict) or not all(
                isinstance(intensity.get(k), int | float) for k in keys
            ):
                raise ModelError(
                    f"{source}: CTNormalization needs foreground_intensity_properties_per_channel"
                    f"['0'] with {', '.join(keys)}; got {intensity!r}"
                )
        given = tuple(float(v) for v in (spacing or (1.0, 1.0, 1.0)))
        if len(given) != 3 or not all(v > 0 for v in given):
            raise ModelError(f"--spacing must be 3 positive numbers (z, y, x), got {spacing!r}")
        preprocessing = cls(
            scheme=scheme,
            use_mask=configuration.use_mask_for_norm[0],
            intensity=intensity if isinstance(intensity, dict) else None,
            transpose_forward=configuration.transpose_forward,
            target_spacing=configuration.spacing,
            spacing=given,
            source=source,
        )
        preprocessing._check_spacing_at_load()
        return preprocessing

    @property
    def input_spacing(self) -> tuple[float, ...]:
        """The volumes' spacing in the transposed axis order, as nnU-Net compares it."""
        return tuple(self.spacing[axis] for axis in self.transpose_forward)

    def describe(self) -> str:
        mask = " over the non-zero mask" if self.use_mask else ""
        return f"{self.scheme}{mask} per volume (plans.json)"

    def prepare(self, volume: np.ndarray) -> PreparedVolume:
        """Transposed, cropped, normalized float32 data, and where it goes back."""
        if volume.ndim != 3:
            raise VolumeError(f"expected a 3D (Z, Y, X) volume, got shape {volume.shape}")
        # The same memory layout as nnU-Net's: a float32 copy, then a transposed, cropped view.
        # numpy's float32 sums depend on it (a non-contiguous view is summed row by row), so
        # the statistics of ZScoreNormalization come out bit for bit as nnU-Net's.
        full = volume.astype(np.float32)
        transposed = full.transpose(self.transpose_forward)
        nonzero = transposed != 0
        crop = _bounding_box(nonzero)
        self._check_spacing(tuple(s.stop - s.start for s in crop), volume.shape)
        view = transposed[crop]
        wants_mask = self.use_mask and self.scheme == "ZScoreNormalization"
        self._normalize(view, _filled(nonzero[crop]) if wants_mask else None)
        data = np.ascontiguousarray(view)
        identity = self.transpose_forward == tuple(range(3))
        return PreparedVolume(
            data=data,
            shape=tuple(volume.shape),
            crop=crop,
            transpose_forward=None if identity else self.transpose_forward,
        )

    def _normalize(self, image: np.ndarray, mask: np.ndarray | None) -> None:
        """In place, as nnU-Net's normalization classes compute it (float32 throughout)."""
        if self.scheme == "ZScoreNormalization":
            if mask is not None:
                if not mask.any():
                    return  # nothing to normalize; nnU-Net leaves the zeros as they are
                values = image[mask]
                mean, std = values.mean(), values.std()
                image[mask] = (values - mean) / max(std, _EPS)
            else:
                mean, std = image.mean(), image.std()
                image -= mean
                image /= max(std, _EPS)
        elif self.scheme == "CTNormalization":
            assert self.intensity is not None
            np.clip(
                image,
                self.intensity["percentile_00_5"],
                self.intensity["percentile_99_5"],
                out=image,
            )
            image -= self.intensity["mean"]
            image /= max(self.intensity["std"], _EPS)
        elif self.scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= np.clip(image.max(), a_min=_EPS, a_max=None)
        elif self.scheme == "RGBTo01Normalization":
            if image.size and (image.min() < 0 or image.max() > 255):
                raise VolumeError(
                    f"{self.source}: RGBTo01Normalization expects values in 0..255, got "
                    f"{image.min():g}..{image.max():g}"
                )
            image /= 255.0
        # NoNormalization: float32 as it is

    def _check_spacing_at_load(self) -> None:
        ratios = [
            given / target
            for given, target in zip(self.input_spacing, self.target_spacing, strict=True)
        ]
        if any(abs(r - 1.0) > _SPACING_TOLERANCE for r in ratios):
            raise ModelError(self._spacing_message())

    def _check_spacing(self, cropped: tuple[int, ...], shape: tuple[int, ...]) -> None:
        # nnU-Net's compute_new_shape: round(old_spacing / new_spacing * size) per axis.
        new = tuple(
            int(round(given / target * size))
            for given, target, size in zip(
                self.input_spacing, self.target_spacing, cropped, strict=True
            )
        )
        if new != cropped:
            raise VolumeError(
                f"{self._spacing_message()}: this volume ({tuple(shape)}) would be resampled from "
                f"{cropped} to {new}"
            )

    def _spacing_message(self) -> str:
        return (
            f"{self.source}: the model was trained at spacing {_spacing_text(self.target_spacing)}, "
            f"the volumes have {_spacing_text(self.input_spacing)} (--spacing, default 1,1,1) and "
            "nnU-Net would resample them; resampling is not implemented: give the volumes' true "
            "spacing with --spacing if it matches, or use a model trained at this spacing"
        )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Half-open box of the True voxels; the whole volume when there are none (as nnU-Net)."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(
            slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, mask.shape[axis])
        )
    return tuple(box)


def _filled(mask: np.ndarray) -> np.ndarray:
    """nnU-Net fills the holes of the non-zero mask of the whole volume; within its bounding box
    it is the same: every zero voxel on the box's faces touches the zeros outside it."""
    if mask.all():
        return mask
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(mask)


def _spacing_text(spacing: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in spacing)
