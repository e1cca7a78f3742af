"""TopoScore from feature counts: Betti numbers per octant, as the organizers count them, but
without Betti matching, so the result is an approximation (an upper bound on the matches).

The organizers' code runs Betti-Matching-3D on the inverted masks (foreground 0, background 1),
each octant of the volume on its own (the volume is cut in two along each axis), and adds up the
counts. Betti-Matching-3D builds the cubical complex with voxels as vertices, so:

* components (dimension 0) are 6-connected; a component that never dies is not a feature, so an
  octant with c components has c - 1 of them;
* cavities (dimension 2) are 26-connected background regions that do not touch the octant's
  border;
* tunnels (dimension 1) follow from the Euler characteristic: b1 = b0 + b2 - chi.

Betti matching pairs each predicted feature with a true one at the same place; counting cannot,
so here ``matched = min(predicted, true)`` per octant and dimension. Every TopoScore from this
module is therefore labelled "approximate". Per dimension F1 = 2m / (p + g); a dimension with
true count 0 but predicted features scores 0.5 / (p + 0.5); dimensions with no features at all
are left out and the weights (0.34, 0.33, 0.33) renormalised over the rest, as in the official
code.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "TOPO_WEIGHTS",
    "TopoResult",
    "betti_numbers",
    "feature_counts",
    "octant_slices",
    "topo_score",
    "topo_score_of_counts",
    "topo_score_of_matches",
]

TOPO_WEIGHTS = (0.34, 0.33, 0.33)
DIMENSIONS = (0, 1, 2)
Counts = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class TopoResult:
    score: float
    f1: dict[int, float]  # per dimension; NaN where neither mask has features of it
    counts: dict[int, tuple[int, int, int]]  # per dimension: (matched, predicted, true)
    kind: str = "approximate"


def octant_slices(
    shape: tuple[int, ...], splits: tuple[int, int, int] = (2, 2, 2)
) -> list[tuple[slice, slice, slice]]:
    """The official tiling: each axis cut into ``splits`` runs whose sizes differ by at most one."""
    cuts = [_axis_cuts(n, parts) for n, parts in zip(shape, splits, strict=True)]
    return [(z, y, x) for z in cuts[0] for y in cuts[1] for x in cuts[2]]


def betti_numbers(mask: np.ndarray) -> Counts:
    """(b0, b1, b2) of a 3D mask as a cubical complex with voxels as vertices."""
    import numpy as np

    from runtime.volumes.metric.components import label

    inside = np.asarray(mask) != 0
    if not inside.any():
        return (0, 0, 0)
    _, b0 = label(inside, 6)
    b2 = _cavities(inside)
    b1 = b0 + b2 - _euler_characteristic(inside)
    return (b0, b1, b2)


def feature_counts(mask: np.ndarray) -> Counts:
    """Features per dimension in one tile's barcode: (b0 - 1, b1, b2), no feature for an empty tile."""
    b0, b1, b2 = betti_numbers(mask)
    return (max(b0 - 1, 0), b1, b2)


def octant_counts(mask: np.ndarray) -> list[Counts]:
    """:func:`feature_counts` of each octant, in :func:`octant_slices` order."""
    return [feature_counts(mask[tile]) for tile in octant_slices(mask.shape)]


def topo_score(
    prediction: np.ndarray, truth: np.ndarray, weights: tuple[float, ...] = TOPO_WEIGHTS
) -> TopoResult:
    """Approximate TopoScore of two 3D masks of the same shape."""
    return topo_score_of_counts(octant_counts(prediction), octant_counts(truth), weights)


def topo_score_of_counts(
    prediction: list[Counts], truth: list[Counts], weights: tuple[float, ...] = TOPO_WEIGHTS
) -> TopoResult:
    """Approximate TopoScore from per-tile feature counts (matched = min per tile and dimension)."""
    tiles = [
        (tuple(min(a[k], b[k]) for k in DIMENSIONS), a, b)
        for a, b in zip(prediction, truth, strict=True)
    ]
    return topo_score_of_matches(tiles, weights)  # type: ignore[arg-type]


def topo_score_of_matches(
    tiles: list[tuple[Counts, Counts, Counts]],
    weights: tuple[float, ...] = TOPO_WEIGHTS,
    kind: str = "approximate",
) -> TopoResult:
    """TopoScore from per-tile (matched, predicted, true) counts, summed over tiles first as the
    official code aggregates its octants."""
    import math

    counts: dict[int, tuple[int, int, int]] = {}
    for k in DIMENSIONS:
        counts[k] = (
            sum(tile[0][k] for tile in tiles),
            sum(tile[1][k] for tile in tiles),
            sum(tile[2][k] for tile in tiles),
        )
    f1: dict[int, float] = {}
    active = []
    for k, (m, p, g) in counts.items():
        if p + g == 0:
            f1[k] = math.nan
            continue
        f1[k] = 2.0 * m / (p + g) if g else 0.5 / (p + g + 0.5)
        active.append(k)
    if not active:
        return TopoResult(1.0, f1, counts, kind)
    total = sum(weights[k] for k in active)
    score = (
        sum(weights[k] / total * f1[k] for k in active)
        if total > 0
        else sum(f1[k] for k in active) / len(active)
    )
    return TopoResult(float(score), f1, counts, kind)


def _axis_cuts(n: int, parts: int) -> list[slice]:
    parts = max(1, min(parts, n if n > 0 else 1))
    base, extra = divmod(n, parts)
    cuts, start = [], 0
    for index in range(parts):
        stop = start + base + (1 if index < extra else 0)
        cuts.append(slice(start, stop))
        start = stop
    return cuts


def _cavities(inside: np.ndarray) -> int:
    """Background regions (26-connected) that do not reach the border of the array."""
    import numpy as np

    from runtime.volumes.metric.components import label

    # Cavities lie within the foreground's bounding box: label only that box grown by one voxel,
    # whose outer layer (background, or the array's own border) stands for "reaches the border".
    box = []
    for axis in range(3):
        extent = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(extent[0]) - 1, 0), min(int(extent[-1]) + 2, inside.shape[axis])))
    background = ~inside[tuple(box)]
    labels, count = label(background, 26)
    if count == 0:
        return 0
    touching = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            touching[np.take(labels, end, axis=axis).ravel()] = True
    touching[0] = False
    return count - int(np.count_nonzero(touching))


def _euler_characteristic(inside: np.ndarray) -> int:
    """V - E + F - C of the cubical complex spanned by the foreground voxels as vertices."""
    import numpy as np

    count = np.count_nonzero
    edges = [
        inside[1:] & inside[:-1],
        inside[:, 1:] & inside[:, :-1],
        inside[:, :, 1:] & inside[:, :, :-1],
    ]
    squares = [
        edges[0][:, 1:] & edges[0][:, :-1],  # in the planes of axes 0 and 1
        edges[0][:, :, 1:] & edges[0][:, :, :-1],  # axes 0 and 2
        edges[1][:, :, 1:] & edges[1][:, :, :-1],  # axes 1 and 2
    ]
    cubes = squares[0][:, :, 1:] & squares[0][:, :, :-1]
    vertices = count(inside)
    return int(
        vertices - sum(count(e) for e in edges) + sum(count(s) for s in squares) - count(cubes)
    )
