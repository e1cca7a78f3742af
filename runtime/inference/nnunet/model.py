"""An nnU-Net v2 trained-model folder as a :class:`SegmentationModel` the engine runs.

What the engine blends is exactly what nnU-Net's predictor blends, channel for channel:

* folds: nnU-Net sums each fold's blended logits and divides by their number. Blending is
  linear and every fold uses the same windows and weights, so averaging the folds' logits per
  window (here, inside one forward) gives the same result;
* mirroring: nnU-Net averages the flipped-back logits of each window before weighting it; the
  engine adds each flip with the same weight and divides by the number of flips: the same;
* the foreground: label-based models are softmax over ``heads`` logits. With 2 heads the blended
  ``l_fg - l_other`` is exactly the difference of nnU-Net's blended logits and ``sigmoid`` of it
  its softmax. With more heads one channel per rival ``l_fg - l_k`` is blended and the engine
  takes ``-logsumexp(-E)`` after blending (the softmax of the blended logits, still exact).
  Region-based models are a sigmoid per region: the foreground region's logit is blended alone.

Logits are summed and differenced in float32 even when the forward runs under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from runtime.contract.settings import ModelFormat
from runtime.inference.nnunet.plans import Labels
from runtime.inference.nnunet.preprocessing import Preprocessing
from runtime.inference.segmentation_model import PreparedVolume, SegmentationModel

__all__ = ["FoldAverage", "NNUNetModel"]


class FoldAverage(torch.nn.Module):
    """The folds' networks on one batch, their logits averaged in float32."""

    def __init__(self, networks: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.folds = torch.nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for network in self.folds:
            logits = network(x)
            if isinstance(logits, list | tuple):  # deep supervision left on: full resolution first
                logits = logits[0]
            logits = logits.float()
            total = logits if total is None else total + logits
        assert total is not None
        return total if len(self.folds) == 1 else total / len(self.folds)


class NNUNetModel(SegmentationModel):
    """Folds of one configuration, with nnU-Net's preprocessing, blending and foreground."""

    importance = "nnunet"
    padding = "constant"
    format = ModelFormat.NNUNET

    def __init__(
        self,
        network: FoldAverage,
        *,
        name: str,
        labels: Labels,
        preprocessing: Preprocessing,
        patch_size: tuple[int, ...],
        size_multiple: int,
        mirror_axes: tuple[int, ...] | None,
        summary: str,
    ) -> None:
        super().__init__(
            network,
            name=name,
            size_multiple=size_multiple,
            recommended={"patch_size": list(patch_size), "overlap": 0.5},
        )
        self.labels = labels
        self.preprocessing = preprocessing
        self.mirror_axes = mirror_axes
        self.summary = summary
        self.window_channels = 1 if labels.region_based else labels.heads - 1
        head = labels.foreground_head
        self._rivals = [k for k in range(labels.heads) if k != head]

    def __repr__(self) -> str:
        return f"NNUNetModel({self.name!r})"

    def foreground_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        head = self.labels.foreground_head
        foreground = logits[:, head : head + 1]
        if self.labels.region_based:
            return foreground
        if len(self._rivals) == 1:
            rival = self._rivals[0]
            return foreground - logits[:, rival : rival + 1]
        return foreground - logits[:, self._rivals]

    def prepare_volume(self, volume: np.ndarray) -> PreparedVolume:
        return self.preprocessing.prepare(volume)

    def describe_normalization(self) -> tuple[str, str]:
        return self.preprocessing.describe(), f"nnU-Net preprocessing of {self.name}"

    def warm_up_batch(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        # What normalized windows look like: about zero mean, unit spread.
        return torch.randn(shape, generator=generator)
