"""Variation of information between the connected components of two masks, as the organizers
compute it: 26-connected components of each mask, compared over the voxels where either mask is
foreground (so background counts as one more segment wherever the other mask has foreground),
in bits as scikit-image's ``variation_of_information``; score = 1 / (1 + alpha * VOI).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["VOIResult", "variation_of_information", "voi_of_labels"]

_DENSE_TABLE_LIMIT = 1 << 23  # contingency cells counted with bincount below this, else unique


@dataclasses.dataclass(frozen=True)
class VOIResult:
    split: float  # H(prediction | truth): a true component cut into several predicted ones
    merge: float  # H(truth | prediction): several true components joined by the prediction
    score: float
    voxels: int  # voxels compared (the union of both foregrounds)

    @property
    def total(self) -> float:
        return self.split + self.merge


def variation_of_information(
    prediction: np.ndarray, truth: np.ndarray, *, alpha: float = 0.3, connectivity: int = 26
) -> VOIResult:
    """VOI of the connected components of two 3D masks (non-zero = foreground)."""
    import numpy as np

    from runtime.volumes.metric.components import label

    prediction, truth = np.asarray(prediction) != 0, np.asarray(truth) != 0
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: {prediction.shape} and {truth.shape}")
    truth_labels, truth_count = label(truth, connectivity)
    prediction_labels, prediction_count = label(prediction, connectivity)
    return voi_of_labels(
        prediction_labels, prediction_count, truth_labels, truth_count, alpha=alpha
    )


def voi_of_labels(
    prediction_labels: np.ndarray,
    prediction_count: int,
    truth_labels: np.ndarray,
    truth_count: int,
    *,
    alpha: float = 0.3,
) -> VOIResult:
    """VOI from two component labellings (0 = background) of the same shape."""
    import numpy as np

    union = (truth_labels != 0) | (prediction_labels != 0)
    voxels = int(np.count_nonzero(union))
    if voxels == 0:
        return VOIResult(0.0, 0.0, 1.0, 0)
    a = truth_labels[union]
    b = prediction_labels[union]
    cells = (truth_count + 1) * (prediction_count + 1)
    keys = a.astype(np.int64)  # in place from here on: these arrays hold every union voxel
    keys *= prediction_count + 1
    keys += b
    if cells <= _DENSE_TABLE_LIMIT:
        joint = np.bincount(keys, minlength=cells)
    else:
        joint = np.unique(keys, return_counts=True)[1]
    h_joint = _entropy(joint, voxels)
    h_truth = _entropy(np.bincount(a), voxels)
    h_prediction = _entropy(np.bincount(b), voxels)
    split = max(h_joint - h_truth, 0.0)
    merge = max(h_joint - h_prediction, 0.0)
    return VOIResult(split, merge, 1.0 / (1.0 + alpha * (split + merge)), voxels)


def _entropy(counts: np.ndarray, total: int) -> float:
    import numpy as np

    counts = counts[counts > 0].astype(np.float64)
    return float(np.log2(total) - (counts * np.log2(counts)).sum() / total)
