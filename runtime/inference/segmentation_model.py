"""The model contract: what the engine runs, whatever file it came from.

:class:`SegmentationModel` is a network plus what the engine needs to run it; models with their
own preprocessing (nnU-Net folders) return a :class:`PreparedVolume`; an :class:`Ensemble` is
several of them fused per volume. The loaders (:mod:`runtime.inference.models`, the ``nnunet``
package) build these; the probe and the engine take them.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from runtime.contract.errors import ModelError
from runtime.contract.settings import EnsembleMode, EnsembleSettings, ModelFormat

__all__ = ["Ensemble", "PreparedVolume", "SegmentationModel", "move_module"]


@dataclass(frozen=True)
class PreparedVolume:
    """A volume as a model's windows see it, and where results go back in the input volume.

    ``data`` is the input itself for most models; a model with its own preprocessing (nnU-Net's:
    transpose, crop to the non-zero box, normalize) returns the transposed crop, and
    :meth:`restore` pastes a result into ``fill`` at the crop and transposes it back.
    """

    data: np.ndarray
    shape: tuple[int, ...]  # the input volume's shape
    crop: tuple[slice, ...] | None = None  # where ``data`` lies in the transposed input
    transpose_forward: tuple[int, ...] | None = None  # input axes in the order ``data`` has them
    # ``data`` was resampled (a model trained at another spacing): this takes a float result
    # (logits) back to the crop's shape. A mask cannot be resampled: the engine then blends logits.
    resample_back: Callable[[np.ndarray], np.ndarray] | None = None

    def restore(self, array: np.ndarray, fill: float) -> np.ndarray:
        """``array`` (the shape of ``data``) in the input's shape and axis order."""
        if self.resample_back is not None:
            if array.dtype.kind != "f":
                raise ValueError("only logits or probabilities can be resampled back")
            array = self.resample_back(array)
        if self.crop is None and self.transpose_forward is None:
            return array
        order = self.transpose_forward or tuple(range(len(self.shape)))
        full = np.full(tuple(self.shape[axis] for axis in order), fill, dtype=array.dtype)
        full[self.crop or ...] = array
        if order == tuple(range(len(order))):
            return full
        return np.ascontiguousarray(full.transpose(np.argsort(order)))


class SegmentationModel:
    """A network plus what the engine needs to run it: normalization, shape rules, defaults.

    ``foreground_logits`` maps a normalized ``(N, 1, Z, Y, X)`` batch to ``(N, window_channels,
    Z, Y, X)`` foreground log-odds: one channel, or one per softmax rival (then the foreground's
    log-odds after blending are ``-logsumexp(-channels)``, see sliding_window).
    ``replicate(device)`` gives an independent copy for another device. Models with their own
    preprocessing override :meth:`prepare_volume`; ``importance`` and ``padding`` say how their
    windows are blended (see :class:`runtime.inference.sliding_window.BlendSettings`).
    """

    window_channels = 1
    importance = "gaussian"
    padding = "reflect"
    # Mirror axes the model was trained for, used by --tta auto (None: none recommended).
    mirror_axes: tuple[int, ...] | None = None
    # What it was loaded from: the settings refuse options that do not apply to it.
    format: ModelFormat = ModelFormat.MODULE

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        name: str,
        normalization: tuple[float, float] = (0.0, 1.0),
        size_multiple: int = 1,
        recommended: Mapping[str, Any] | None = None,
        foreground_class: int | None = None,
        static_input_shape: tuple[int | None, ...] | None = None,
        mover: Callable[[torch.nn.Module, torch.device], torch.nn.Module] | None = None,
        format: ModelFormat | None = None,
    ) -> None:
        self.network = network
        if format is not None:
            self.format = format
        self.name = name
        self.normalization = (float(normalization[0]), float(normalization[1]))
        self.size_multiple = int(size_multiple)
        self.recommended: dict[str, Any] = dict(recommended or {})
        self.foreground_class = foreground_class
        # (N, C, Z, Y, X) of a program exported with static shapes; None entries are dynamic.
        self.static_input_shape = static_input_shape
        self._mover = mover or move_module
        if self.normalization[1] <= 0 or not all(map(math.isfinite, self.normalization)):
            raise ModelError(
                f"model {name}: normalization std must be a positive number, got {normalization}"
            )

    def __repr__(self) -> str:
        return f"SegmentationModel({self.name!r})"

    def foreground_logits(self, x: torch.Tensor) -> torch.Tensor:
        return _foreground_log_odds(_first_tensor(self.network(x), self.name), self)

    def replicate(self, device: torch.device | str) -> SegmentationModel:
        """An independent copy on ``device``; this model stays where it is."""
        clone = copy.copy(self)
        clone.network = self._mover(self.network, torch.device(device))
        return clone

    def to_channels_last(self, on: bool = True) -> SegmentationModel:
        """Store 5D weights as channels_last_3d (in place), what tensor-core Conv3d prefers;
        ``on=False`` stores them contiguous again."""
        _set_layout(self.network, torch.channels_last_3d if on else torch.contiguous_format)
        return self

    def prepare_volume(self, volume: np.ndarray) -> PreparedVolume:
        """The volume the windows are cut from: the input itself, normalized window by window."""
        return PreparedVolume(volume, tuple(volume.shape))

    def describe_normalization(self) -> tuple[str, str]:
        """(what, why) for the engine's normalization decision."""
        mean, std = self.normalization
        if (mean, std) == (0.0, 1.0):
            # A model whose file carries no config gets raw voxel values: say so, since a model
            # trained on [0, 1] or standardised inputs then gives silently wrong masks.
            return (
                "none",
                "raw voxel values: the model has no config.json normalization; add one if it "
                "was trained on scaled inputs",
            )
        return f"(v - {mean:g}) / {std:g}", f"from model {self.name}"

    def warm_up_batch(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """A normalized batch like the real ones, for the probe's warm-up forwards.

        CT-like noise in the uint8 range, normalized as the windows will be.
        """
        raw = torch.randint(0, 256, shape, generator=generator).float()
        mean, std = self.normalization
        return (raw - mean) / std

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        *,
        name: str = "module",
        normalization: tuple[float, float] = (0.0, 1.0),
        size_multiple: int = 1,
        recommended: Mapping[str, Any] | None = None,
        foreground_class: int | None = None,
    ) -> SegmentationModel:
        """Wrap an in-memory module (put in eval mode) that maps (N, 1, ...) to logits."""
        module.eval()
        return cls(
            module,
            name=name,
            normalization=normalization,
            size_multiple=size_multiple,
            recommended=recommended,
            foreground_class=foreground_class,
        )


@dataclass(frozen=True)
class Ensemble:
    """Several models run one after another on each volume, their results fused per volume.

    Each member keeps its own patch size, normalization and preprocessing (and, with --tta
    auto, its own mirror axes); the engine blends each member's foreground over the whole
    volume, then fuses them with :class:`runtime.fusion.Fusion` as ``fusion`` says (weights
    and mode, resolved by :func:`runtime.contract.settings.resolve_ensemble`).
    """

    members: tuple[SegmentationModel, ...]
    fusion: EnsembleSettings

    @property
    def name(self) -> str:
        return "+".join(member.name for member in self.members)

    @property
    def weights(self) -> tuple[float, ...]:
        return self.fusion.weights

    @property
    def mode(self) -> EnsembleMode:
        return self.fusion.mode


def move_module(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    with warnings.catch_warnings():
        # Moving a TorchScript module reads each parameter's .grad, which warns for nothing.
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor")
        return copy.deepcopy(network).to(device)


def _set_layout(network: torch.nn.Module, memory_format: torch.memory_format) -> None:
    for parameter in network.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=memory_format)


def _first_tensor(output: Any, name: str) -> torch.Tensor:
    # Deep-supervision networks return a list with the full-resolution output first.
    if isinstance(output, list | tuple) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"model {name} returned {type(output).__name__}, not a tensor")
    return output


def _foreground_log_odds(output: torch.Tensor, model: SegmentationModel) -> torch.Tensor:
    if output.dim() != 5:
        raise ModelError(
            f"model {model.name} returned shape {tuple(output.shape)}; expected (N, C, Z, Y, X)"
        )
    classes = output.shape[1]
    fg = model.foreground_class
    if classes == 1:
        if fg not in (None, 0):
            raise ModelError(
                f"model {model.name} has one output, but foreground class {fg} was asked"
            )
        return output
    if fg is None:
        raise ModelError(
            f"model {model.name} outputs {classes} class logits but no foreground class is set; "
            "pass --foreground-class K (competition models: usually 1 = surface)"
        )
    if fg >= classes:
        raise ModelError(
            f"model {model.name}: foreground class {fg} is out of range for {classes} classes"
        )
    others = torch.cat([output[:, :fg], output[:, fg + 1 :]], dim=1)
    return output[:, fg : fg + 1] - torch.logsumexp(others, dim=1, keepdim=True)
