"""nnU-Net's preprocessing at inference, in its order: float32, transpose, crop, normalize.

Reproduces ``DefaultPreprocessor.run_case_npy`` for one-channel volumes:

1. ``transpose_forward`` (identity for isotropic data);
2. crop to the bounding box of the non-zero voxels (results are pasted back into a volume of
   background, so voxels outside the box are never foreground);
3. the configuration's normalization scheme, over the crop, with ``use_mask_for_norm`` (statistics
   over the non-zero mask with its holes filled, voxels outside it left at 0);
4. resampling to the configuration's spacing (TIFFs carry no spacing, so the input's is 1, 1, 1
   unless ``--spacing`` says otherwise) with nnU-Net's own rules (``resampling``); the blended
   logits are resampled back before the foreground is taken, as nnU-Net's export does. What
   cannot be reproduced exactly (another resampling function, a non-linear logit combination)
   is refused by name, never approximated.

The arithmetic is numpy's float32, operation for operation as nnU-Net's normalization classes do
it, so the network sees the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.contract.errors import ModelError, VolumeError
from runtime.inference.nnunet.plans import Configuration
from runtime.inference.nnunet.resampling import ResamplingRule, new_shape, resample
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
    data_rule: ResamplingRule
    probability_rule: ResamplingRule

    @classmethod
    def from_configuration(
        cls,
        configuration: Configuration,
        spacing: Sequence[float] | None,
        source: str,
        *,
        heads: int = 2,
        region_based: bool = False,
    ) -> Preprocessing:
        """``heads``, ``region_based``: what the network's logits are (resampling is refused
        where the blended foreground logit cannot be resampled as nnU-Net resamples them)."""
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
            data_rule=configuration.data_resampling,
            probability_rule=configuration.probability_resampling,
        )
        preprocessing._check_spacing_at_load(heads, region_based)
        return preprocessing

    @property
    def input_spacing(self) -> tuple[float, ...]:
        """The volumes' spacing in the transposed axis order, as nnU-Net compares it."""
        return tuple(self.spacing[axis] for axis in self.transpose_forward)

    def describe(self) -> str:
        mask = " over the non-zero mask" if self.use_mask else ""
        return f"{self.scheme}{mask} per volume (plans.json)"

    def prepare(self, volume: np.ndarray) -> PreparedVolume:
        """Transposed, cropped, normalized (and resampled) float32 data, and where it goes back."""
        if volume.ndim != 3:
            raise VolumeError(f"expected a 3D (Z, Y, X) volume, got shape {volume.shape}")
        # The same memory layout as nnU-Net's: a float32 copy, then a transposed, cropped view.
        # numpy's float32 sums depend on it (a non-contiguous view is summed row by row), so
        # the statistics of ZScoreNormalization come out bit for bit as nnU-Net's.
        full = volume.astype(np.float32)
        transposed = full.transpose(self.transpose_forward)
        nonzero = transposed != 0
        crop = _bounding_box(nonzero)
        view = transposed[crop]
        wants_mask = self.use_mask and self.scheme == "ZScoreNormalization"
        self._normalize(view, _filled(nonzero[crop]) if wants_mask else None)
        del nonzero
        cropped = tuple(view.shape)
        target = new_shape(cropped, self.input_spacing, self.target_spacing)
        back = None
        if target == cropped:
            data = np.ascontiguousarray(view)
        else:
            # nnU-Net normalizes before it resamples (the non-zero mask must fit the image).
            data = resample(view, target, self.input_spacing, self.target_spacing, self.data_rule)
            back = functools.partial(
                resample,
                shape=cropped,
                current=self.target_spacing,
                new=self.input_spacing,
                rule=self.probability_rule,
            )
        del full, transposed, view
        identity = self.transpose_forward == tuple(range(3))
        return PreparedVolume(
            data=data,
            shape=tuple(volume.shape),
            crop=crop,
            transpose_forward=None if identity else self.transpose_forward,
            resample_back=back,
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

    def resamples(self) -> bool:
        """Whether volumes are resampled to the model's spacing (decided at load time)."""
        return self.input_spacing != self.target_spacing

    def _check_spacing_at_load(self, heads: int, region_based: bool) -> None:
        if not self.resamples():
            return
        for what, rule in (
            ("resampling_fn_data", self.data_rule),
            ("resampling_fn_probabilities", self.probability_rule),
        ):
            if not rule.supported:
                raise ModelError(f"{self._spacing_message()}; {what}: {rule.refusal()}")
        # nnU-Net resamples every logit channel, then takes the foreground. The engine blends
        # one foreground logit: the same when it is one channel (a region), or the difference
        # of two channels resampled linearly (nothing clipped); not for more rivals.
        if not region_based and heads > 2:
            raise ModelError(
                f"{self._spacing_message()}; resampling the logits of {heads} softmax heads is "
                "not implemented (2 heads or region-based only)"
            )
        if not region_based and self.probability_rule.order > 1:
            raise ModelError(
                f"{self._spacing_message()}; its logits are resampled with spline order "
                f"{self.probability_rule.order} and clipped per head, which the blended "
                "difference of the two heads cannot reproduce (order 0 or 1 only)"
            )

    def _spacing_message(self) -> str:
        return (
            f"{self.source}: trained at spacing {_spacing_text(self.target_spacing)}, the volumes "
            f"have {_spacing_text(self.input_spacing)} (--spacing, default 1,1,1), so nnU-Net "
            "resamples them"
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
