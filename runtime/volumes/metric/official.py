"""The organizers' own metric, when their ``topometrics`` package is importable.

``topometrics`` is not on the package registry (the organizers shipped it as a Kaggle dataset,
with Betti-Matching-3D compiled); whoever has it installed gets the official TopoScore, about a
minute per 320^3 volume. It is called with the competition's parameters, exactly as the
competition's metric notebook does.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from runtime.volumes.metric.leaderboard import COMPETITION, MetricParameters, VolumeScore

if TYPE_CHECKING:
    import numpy as np

__all__ = ["official_score", "topometrics_available"]


@functools.cache
def topometrics_available() -> bool:
    try:
        import topometrics.leaderboard  # noqa: F401
    except Exception:  # ImportError, or its compiled Betti matcher failing to load
        return False
    return True


def official_score(
    prediction: np.ndarray,
    labels: np.ndarray,
    parameters: MetricParameters = COMPETITION,
    volume_id: str = "",
) -> VolumeScore:
    import numpy as np
    from topometrics.leaderboard import compute_leaderboard_score

    started = time.perf_counter()
    report = compute_leaderboard_score(
        predictions=prediction,
        labels=labels,
        dims=(0, 1, 2),
        spacing=(1.0, 1.0, 1.0),
        surface_tolerance=parameters.tolerance,
        voi_connectivity=parameters.voi_connectivity,
        voi_transform="one_over_one_plus",
        voi_alpha=parameters.voi_alpha,
        combine_weights=parameters.combine_weights,
        fg_threshold=None,
        ignore_label=parameters.ignore_label,
        ignore_mask=None,
    )
    topo = report.topo
    f1 = {int(k): float(v) for k, v in dict(topo.topoF1_by_dim).items()}
    counts = {int(k): tuple(int(c) for c in v) for k, v in dict(topo.counts_by_dim).items()}
    ignored = (
        0
        if parameters.ignore_label is None
        else int(np.count_nonzero(np.asarray(labels) == parameters.ignore_label))
    )
    return VolumeScore(
        id=volume_id,
        score=min(max(float(report.score), 0.0), 1.0),
        surface_dice=float(report.surface_dice),
        voi_score=float(report.voi.voi_score),
        voi_split=float(report.voi.voi_split),
        voi_merge=float(report.voi.voi_merge),
        topo_score=float(topo.toposcore),
        topo_f1=f1,
        topo_counts=counts,  # type: ignore[arg-type]
        topo_kind="official",
        ignored_voxels=ignored,
        seconds=time.perf_counter() - started,
    )
