"""Scoring masks against label maps that mark ignored voxels (0 background, 1 surface, 2 ignored).

numpy only; the competition's own metric builds on these conventions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["dice_score"]


def dice_score(mask: np.ndarray, label: np.ndarray, *, ignore_label: int | None = 2) -> float:
    """Dice of ``mask`` (non-zero = foreground) against ``label == 1``, skipping ignored voxels.

    Two empty masks agree perfectly (1.0).
    """
    import numpy as np

    mask, label = np.asarray(mask), np.asarray(label)
    if mask.shape != label.shape:
        raise ValueError(f"mask shape {mask.shape} differs from label shape {label.shape}")
    scored = np.ones(label.shape, dtype=bool) if ignore_label is None else label != ignore_label
    predicted = (mask != 0) & scored
    truth = (label == 1) & scored
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total
