"""TopoScore with features matched by place: an approximation of Betti matching without it.

The official TopoScore matches each predicted feature with a true one through their images in the
*comparison* complex, the union of both foregrounds (Betti matching: persistent homology with
induced matchings). For binary masks that means, per octant:

* components (dimension 0, 6-connected): two features can only match inside one component of the
  union, and a union component yields a match only when it holds both predicted and true
  foreground; one union component carries the never-dying class, which is no feature. So
  ``m0 = max(b, 1) - 1`` where ``b`` counts union components holding both;
* cavities (dimension 2, background 26-connected, off the octant's border): a cavity of the union
  lies inside one background region of each mask; a predicted and a true cavity can match only if
  they enclose a common union cavity, and each matches at most once (a maximum matching);
* tunnels (dimension 1): per union component, at most as many matches as the fewest tunnels of
  the prediction, the truth and the union in it (a predicted tunnel filled by the truth dies in
  the union and cannot match).

Every bound here is local, where counting (``topology.topo_score``) took ``min(p, g)`` over a whole
octant, so features in different places no longer pair up. It is still an approximation: which
of several candidates Betti matching picks depends on its tie-breaking of equal filtration values,
which no counting reproduces. Its error against the official code, measured on the reference set
(``tests/support/metric_reference.py``), is in :data:`MEASURED_ERROR` and goes into every score
JSON that uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.volumes.metric.topology import (
    TOPO_WEIGHTS,
    TopoResult,
    octant_slices,
    topo_score_of_matches,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MEASURED_ERROR", "octant_matches", "spatial_topo_score"]

# Measured on the 115 reference pairs (<= 48^3) against the official topometrics with
# Betti-Matching-3D (tests/support/metric_reference.json); tests/test_metric_reference.py measures
# again and fails when these figures no longer hold. Feature counts (p, g) are exact on every pair,
# the matches of dimensions 0 and 2 on all but one; the tunnels' matches are over-counted on 22.
MEASURED_ERROR: dict[str, float] = {
    "reference_pairs": 115,
    "topo_mean_abs_error": 0.0160,
    "topo_max_abs_error": 0.33,
    "score_mean_abs_error": 0.0048,
    "sweep_kendall_tau_min": 0.44,
}

Matches = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def spatial_topo_score(
    prediction: np.ndarray, truth: np.ndarray, weights: tuple[float, ...] = TOPO_WEIGHTS
) -> TopoResult:
    """Approximate TopoScore of two 3D masks with features matched by place, octant by octant."""
    import numpy as np

    prediction = np.asarray(prediction) != 0
    truth = np.asarray(truth) != 0
    tiles = [octant_matches(prediction[t], truth[t]) for t in octant_slices(prediction.shape)]
    return topo_score_of_matches(tiles, weights)


def octant_matches(prediction: np.ndarray, truth: np.ndarray) -> Matches:
    """((m0, m1, m2), (p0, p1, p2), (g0, g1, g2)) of one tile: matches, predicted, true features."""
    import numpy as np

    from runtime.volumes.metric.components import label

    union = prediction | truth
    if not union.any():
        return ((0, 0, 0), (0, 0, 0), (0, 0, 0))
    union_labels, union_count = label(union, 6)
    pred = _Features(prediction, union_labels, union_count)
    true = _Features(truth, union_labels, union_count)
    whole = _Features(union, union_labels, union_count)

    both = int(np.count_nonzero((pred.components > 0) & (true.components > 0)))
    m0 = max(both, 1) - 1
    m1 = int(np.minimum(np.minimum(pred.tunnels, true.tunnels), whole.tunnels).sum())
    m2 = _cavity_matches(pred, true, whole)
    return (
        (m0, m1, m2),
        (pred.feature_count(0), pred.feature_count(1), pred.feature_count(2)),
        (true.feature_count(0), true.feature_count(1), true.feature_count(2)),
    )


class _Features:
    """One mask's components, tunnels and cavities, each tallied by the union component it is in."""

    def __init__(self, mask: np.ndarray, union_labels: np.ndarray, union_count: int) -> None:
        import numpy as np

        from runtime.volumes.metric.components import label

        self.mask = mask
        size = union_count + 1
        labels, count = label(mask, 6)
        self.count = count
        # one voxel per component: its first in raster order, and the union component it lies in
        firsts = _first_voxels(labels, count)
        self.components = np.bincount(union_labels.ravel()[firsts], minlength=size)[1:]
        self.cavity_labels, cavity_ids, cavity_union = _cavities(mask, union_labels)
        self.cavity_ids = cavity_ids  # background labels that are cavities
        cavities = np.bincount(cavity_union, minlength=size)[1:]
        chi = _euler_by_label(mask, union_labels, size)[1:]
        self.tunnels = np.maximum(self.components + cavities - chi, 0)
        self.cavities = cavities

    def feature_count(self, dimension: int) -> int:
        if dimension == 0:
            return max(self.count - 1, 0)
        if dimension == 1:
            return int(self.tunnels.sum())
        return int(self.cavities.sum())


def _first_voxels(labels: np.ndarray, count: int) -> np.ndarray:
    import numpy as np

    flat = labels.ravel()
    order = np.flatnonzero(flat)
    firsts = np.full(count + 1, -1, dtype=np.int64)
    # reversed assignment leaves the smallest flat index of each label
    firsts[flat[order[::-1]]] = order[::-1]
    return firsts[1:]


def _cavities(
    mask: np.ndarray, union_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background labels (26-connected), the ids of those off the border, and the union
    component enclosing each (the voxel before a cavity's first voxel along axis 0 is foreground)."""
    import numpy as np

    from runtime.volumes.metric.components import label

    background, count = label(~mask, 26)
    touching = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            touching[np.take(background, end, axis=axis).ravel()] = True
    touching[0] = True
    ids = np.flatnonzero(~touching)
    if ids.size == 0:
        return background, ids, np.zeros(0, dtype=np.int64)
    firsts = _first_voxels(background, count)[ids - 1]
    plane = mask.shape[1] * mask.shape[2]
    enclosing = union_labels.ravel()[firsts - plane]  # a cavity never touches z = 0
    return background, ids, enclosing


def _cavity_matches(pred: _Features, true: _Features, whole: _Features) -> int:
    """A maximum matching of predicted and true cavities that enclose a common union cavity."""
    import numpy as np

    if not (pred.cavity_ids.size and true.cavity_ids.size and whole.cavity_ids.size):
        return 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    firsts = _first_voxels(whole.cavity_labels, int(whole.cavity_labels.max()))[
        whole.cavity_ids - 1
    ]
    p_label = pred.cavity_labels.ravel()[firsts]
    t_label = true.cavity_labels.ravel()[firsts]
    p_index = np.searchsorted(pred.cavity_ids, p_label)
    t_index = np.searchsorted(true.cavity_ids, t_label)
    p_ok = (p_index < pred.cavity_ids.size) & (
        pred.cavity_ids[np.minimum(p_index, pred.cavity_ids.size - 1)] == p_label
    )
    t_ok = (t_index < true.cavity_ids.size) & (
        true.cavity_ids[np.minimum(t_index, true.cavity_ids.size - 1)] == t_label
    )
    keep = p_ok & t_ok
    if not keep.any():
        return 0
    graph = coo_matrix(
        (np.ones(int(keep.sum())), (p_index[keep], t_index[keep])),
        shape=(pred.cavity_ids.size, true.cavity_ids.size),
    ).tocsr()
    matched = maximum_bipartite_matching(graph, perm_type="column")
    return int(np.count_nonzero(matched >= 0))


def _euler_by_label(mask: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """Euler characteristic of ``mask`` (voxels as vertices) within each label of ``labels``.

    Every cell of the mask's cubical complex lies in one label (its vertices are connected), so
    each cell is tallied at its lowest corner.
    """
    import numpy as np

    def tally(cells: np.ndarray) -> np.ndarray:
        corner = labels[tuple(slice(0, n) for n in cells.shape)]
        return np.bincount(corner[cells], minlength=size)

    edges = [mask[1:] & mask[:-1], mask[:, 1:] & mask[:, :-1], mask[:, :, 1:] & mask[:, :, :-1]]
    squares = [
        edges[0][:, 1:] & edges[0][:, :-1],
        edges[0][:, :, 1:] & edges[0][:, :, :-1],
        edges[1][:, :, 1:] & edges[1][:, :, :-1],
    ]
    cubes = squares[0][:, :, 1:] & squares[0][:, :, :-1]
    chi = tally(mask).astype(np.int64)
    for cell in edges:
        chi -= tally(cell)
    for cell in squares:
        chi += tally(cell)
    chi -= tally(cubes)
    return chi
