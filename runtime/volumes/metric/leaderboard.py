"""The leaderboard score of one volume: 0.30 TopoScore + 0.35 SurfaceDice + 0.35 VOI score.

As in the organizers' ``topometrics.compute_leaderboard_score`` (called by the competition's
metric with tolerance 2.0, VOI alpha 0.3 and 26-connectivity): voxels whose label is 2 are set to
background in both the prediction and the truth before anything else, a voxel is foreground when
non-zero, and the combined score is clipped to [0, 1].

:class:`PreparedTruth` does the truth's half of the work once (its components, surface and
topology), so that ``tune`` can score many masks against the same labels cheaply; scoring one
prediction goes through the very same path.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any

from runtime.volumes.metric.topology import TOPO_WEIGHTS

if TYPE_CHECKING:
    import numpy as np

__all__ = ["COMPETITION", "MetricParameters", "PreparedTruth", "VolumeScore", "score_volume"]


@dataclasses.dataclass(frozen=True)
class MetricParameters:
    tolerance: float = 2.0  # SurfaceDice tolerance, voxels (spacing 1, 1, 1)
    voi_alpha: float = 0.3
    voi_connectivity: int = 26
    topo_weights: tuple[float, float, float] = TOPO_WEIGHTS
    combine_weights: tuple[float, float, float] = (0.30, 0.35, 0.35)  # topo, surface dice, VOI
    ignore_label: int | None = 2


COMPETITION = MetricParameters()


@dataclasses.dataclass
class VolumeScore:
    """One volume's score and its parts."""

    id: str
    score: float
    surface_dice: float
    voi_score: float
    voi_split: float
    voi_merge: float
    topo_score: float
    topo_f1: dict[int, float]
    topo_counts: dict[int, tuple[int, int, int]]  # dimension -> (matched, predicted, true)
    topo_kind: str  # "official" (Betti matching) or "approximate" (feature counts)
    ignored_voxels: int = 0
    seconds: float = 0.0

    @property
    def voi(self) -> float:
        return self.voi_split + self.voi_merge

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["voi"] = self.voi
        data["topo_f1"] = {str(k): (None if math.isnan(v) else v) for k, v in self.topo_f1.items()}
        data["topo_counts"] = {
            str(k): dict(zip(("matched", "predicted", "true"), v, strict=True))
            for k, v in self.topo_counts.items()
        }
        data["seconds"] = round(self.seconds, 3)
        return data


def combine(
    topo: float, surface_dice: float, voi_score: float, weights: tuple[float, ...]
) -> float:
    """The weighted sum, weights clamped at 0 and normalised, clipped to [0, 1]."""
    clean = [w if math.isfinite(w) and w > 0 else 0.0 for w in weights]
    total = sum(clean) or 1.0
    value = (clean[0] * topo + clean[1] * surface_dice + clean[2] * voi_score) / total
    return min(max(value, 0.0), 1.0)


class PreparedTruth:
    """A label volume (0 background, 1 surface, ``ignore_label`` ignored) ready to score against."""

    def __init__(self, labels: np.ndarray, parameters: MetricParameters = COMPETITION) -> None:
        import numpy as np

        from runtime.volumes.metric.components import label
        from runtime.volumes.metric.surface_dice import margin_for, surface_side
        from runtime.volumes.metric.topology import octant_counts

        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be 3D, got shape {labels.shape}")
        self.parameters = parameters
        self.shape = labels.shape
        if parameters.ignore_label is None:
            self.ignored = None
            self.mask = labels != 0
        else:
            ignored = labels == parameters.ignore_label
            self.ignored = ignored if ignored.any() else None
            self.mask = (labels != 0) & ~ignored
        self.ignored_voxels = 0 if self.ignored is None else int(np.count_nonzero(self.ignored))
        self.empty = not self.mask.any()
        self._margin = margin_for(parameters.tolerance)
        self.surface = None if self.empty else surface_side(self.mask, self._margin)
        self.components = label(self.mask, parameters.voi_connectivity)
        self.topology = octant_counts(self.mask)

    def score(self, prediction: np.ndarray, volume_id: str = "") -> VolumeScore:
        """Score a prediction (non-zero = foreground) of the same shape."""
        import numpy as np

        from runtime.volumes.metric.components import label
        from runtime.volumes.metric.surface_dice import surface_dice_of_sides, surface_side
        from runtime.volumes.metric.topology import octant_counts, topo_score_of_counts
        from runtime.volumes.metric.voi import voi_of_labels

        started = time.perf_counter()
        prediction = np.asarray(prediction)
        if prediction.shape != self.shape:
            raise ValueError(
                f"prediction shape {prediction.shape} differs from labels {self.shape}"
            )
        mask = prediction != 0
        if self.ignored is not None:
            mask &= ~self.ignored
        parameters = self.parameters
        empty = not mask.any()
        if empty and self.empty:
            surface = 1.0
        elif empty or self.surface is None:  # self.surface is None: the labels are empty
            surface = 0.0
        else:
            surface = surface_dice_of_sides(
                surface_side(mask, self._margin), self.surface, parameters.tolerance
            )
        voi = voi_of_labels(
            *label(mask, parameters.voi_connectivity), *self.components, alpha=parameters.voi_alpha
        )
        topo = topo_score_of_counts(octant_counts(mask), self.topology, parameters.topo_weights)
        return VolumeScore(
            id=volume_id,
            score=combine(topo.score, surface, voi.score, parameters.combine_weights),
            surface_dice=surface,
            voi_score=voi.score,
            voi_split=voi.split,
            voi_merge=voi.merge,
            topo_score=topo.score,
            topo_f1=topo.f1,
            topo_counts=topo.counts,
            topo_kind=topo.kind,
            ignored_voxels=self.ignored_voxels,
            seconds=time.perf_counter() - started,
        )


def score_volume(
    prediction: np.ndarray,
    labels: np.ndarray,
    parameters: MetricParameters = COMPETITION,
    volume_id: str = "",
) -> VolumeScore:
    """Score one predicted mask against its labels with the project's own implementation."""
    started = time.perf_counter()
    result = PreparedTruth(labels, parameters).score(prediction, volume_id)
    result.seconds = time.perf_counter() - started
    return result
