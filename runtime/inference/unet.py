"""The built-in 3D U-Net family: a small JSON-able config and the network it describes.

A model directory pairs ``config.json`` (format ``kaggle-offline-unet``, the config under
``"architecture"``) with a plain ``state_dict`` file, so loading never needs arbitrary unpickling:
``torch.load(path, weights_only=True)`` is enough. The parameter names of :class:`UNet3D` are part of
that format; renaming a submodule breaks every saved checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from runtime.contract.errors import ModelError

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "UNet3D", "UNetConfig"]

MODEL_FORMAT = "kaggle-offline-unet"
MODEL_FORMAT_VERSION = 1

NORMS = ("instance", "batch", "group", "none")
ACTIVATIONS = ("leaky_relu", "relu")
UPSAMPLINGS = ("transpose", "trilinear")


@dataclass(frozen=True)
class UNetConfig:
    """One member of the U-Net family; ``to_dict()`` is what ``config.json`` stores."""

    in_channels: int = 1
    out_channels: int = 1  # 1 = one foreground logit; C >= 2 = C-class logits
    channels: tuple[int, ...] = (8, 16, 32)  # one entry per resolution level
    norm: str = "instance"  # "instance" | "batch" | "group" | "none"
    convs_per_level: int = 2
    kernel_size: int = 3
    activation: str = "leaky_relu"  # "leaky_relu" | "relu"
    norm_groups: int = 4  # only for norm="group"; must divide every channel count
    upsample: str = "transpose"  # "transpose" (learned) | "trilinear" (+ 1x1x1 conv)

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ModelError(f"invalid U-Net config: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> UNetConfig:
        """Build from a JSON object; a ModelError names every unknown or malformed key.

        ``source`` (e.g. the config file's path) is put in front of the message.
        """
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ModelError(
                f"{where}U-Net architecture must be a JSON object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ModelError(
                f"{where}unknown U-Net config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        values = dict(data)
        if "channels" in values and isinstance(values["channels"], list | tuple):
            values["channels"] = tuple(values["channels"])
        try:
            return cls(**values)
        except ModelError as error:
            raise ModelError(f"{where}{error}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal config."""
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @property
    def depth(self) -> int:
        return len(self.channels)

    @property
    def size_multiple(self) -> int:
        """Spatial dims must be divisible by this: each level below the top halves them once."""
        return 2 ** (self.depth - 1)

    def _problems(self) -> list[str]:
        problems: list[str] = []
        for name in (
            "in_channels",
            "out_channels",
            "convs_per_level",
            "kernel_size",
            "norm_groups",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name!r} must be a positive integer, got {value!r}")
        if _is_int(self.kernel_size) and self.kernel_size % 2 == 0:
            problems.append(f"'kernel_size' must be odd (keeps shapes), got {self.kernel_size}")
        channels = self.channels
        if (
            not isinstance(channels, tuple)
            or not channels
            or not all(_is_int(c) and c >= 1 for c in channels)
        ):
            problems.append(
                f"'channels' must be a non-empty list of positive integers, got {channels!r}"
            )
        for name, allowed in (
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
            ("upsample", UPSAMPLINGS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{name!r} must be one of {', '.join(allowed)}, got {value!r}")
        if self.norm == "group" and not problems:
            odd = [c for c in channels if c % self.norm_groups]
            if odd:
                problems.append(
                    f"'norm_groups' {self.norm_groups} does not divide channel count(s) {odd}"
                )
        return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _norm(config: UNetConfig, width: int) -> nn.Module:
    if config.norm == "instance":
        return nn.InstanceNorm3d(width, affine=True)
    if config.norm == "batch":
        return nn.BatchNorm3d(width)
    if config.norm == "group":
        return nn.GroupNorm(config.norm_groups, width)
    return nn.Identity()


def _conv_block(config: UNetConfig, width_in: int, width_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(config.convs_per_level):
        layers.append(
            nn.Conv3d(
                width_in if index == 0 else width_out,
                width_out,
                config.kernel_size,
                padding=config.kernel_size // 2,
                # A following norm re-centres the output, so a bias would be dead weight.
                bias=config.norm == "none",
            )
        )
        layers.append(_norm(config, width_out))
        layers.append(
            nn.LeakyReLU(0.01, inplace=True)
            if config.activation == "leaky_relu"
            else nn.ReLU(inplace=True)
        )
    return nn.Sequential(*layers)


def _upsampler(config: UNetConfig, width_in: int, width_out: int) -> nn.Module:
    if config.upsample == "transpose":
        return nn.ConvTranspose3d(width_in, width_out, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
        nn.Conv3d(width_in, width_out, kernel_size=1),
    )


class UNet3D(nn.Module):
    """A plain 3D U-Net: ``(N, in, Z, Y, X) -> (N, out, Z, Y, X)`` logits.

    Each level runs ``convs_per_level`` conv-norm-activation layers; levels are joined by 2x max
    pooling on the way down and 2x upsampling plus a skip concatenation on the way up.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.channels
        self.encoders = nn.ModuleList()
        previous = config.in_channels
        for width in widths:
            self.encoders.append(_conv_block(config, previous, width))
            previous = width
        self.pool = nn.MaxPool3d(2)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for lower, upper in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.upsamples.append(_upsampler(config, lower, upper))
            self.decoders.append(_conv_block(config, 2 * upper, upper))
        self.head = nn.Conv3d(widths[0], config.out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():  # a traced graph records tensor ops only; checks would warn
            self._check_input(x)
        skips: list[torch.Tensor] = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()  # the bottom level's output is x itself
        for upsample, decoder in zip(self.upsamples, self.decoders, strict=True):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ModelError(
                f"U-Net input must be (N, {self.config.in_channels}, Z, Y, X), "
                f"got shape {tuple(x.shape)}"
            )
        multiple = self.config.size_multiple
        if any(size % multiple for size in x.shape[2:]):
            raise ModelError(
                f"U-Net input spatial shape {tuple(x.shape[2:])} is not divisible by {multiple}; "
                "pad the patch to a multiple of config.size_multiple"
            )
