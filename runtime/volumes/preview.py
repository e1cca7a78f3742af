"""A PNG per volume to eyeball a prediction: the middle z slice of the input, the mask, and the
mask drawn over the input, side by side. A glance at these catches an inverted mask, a wrong
foreground class or a shifted volume long before a score does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["write_preview"]

_GAP = 4  # pixels between panels
_MIN_PANEL = 192  # panels smaller than this are enlarged by a whole factor
_OVERLAY_RGB = (255, 40, 40)
_OVERLAY_ALPHA = 0.5


def write_preview(path: Path | str, volume: np.ndarray, mask: np.ndarray) -> Path:
    """Write ``path`` (PNG): input | mask | overlay of the middle z slice; return the path."""
    import numpy as np
    from PIL import Image

    volume, mask = np.asarray(volume), np.asarray(mask)
    if volume.ndim != 3 or volume.shape != mask.shape:
        raise ValueError(f"volume {volume.shape} and mask {mask.shape} must be equal 3D shapes")
    z = volume.shape[0] // 2
    gray = _to_gray(volume[z])
    on = mask[z] != 0
    mask_panel = np.where(on, 255, 0).astype(np.uint8)
    overlay = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    overlay[on] = (1 - _OVERLAY_ALPHA) * overlay[on] + _OVERLAY_ALPHA * np.array(_OVERLAY_RGB)

    height, width = gray.shape
    canvas = np.zeros((height, 3 * width + 2 * _GAP, 3), dtype=np.uint8)
    for index, panel in enumerate((gray, mask_panel)):
        left = index * (width + _GAP)
        canvas[:, left : left + width] = panel[..., None]
    left = 2 * (width + _GAP)
    canvas[:, left : left + width] = overlay.round().astype(np.uint8)

    # Small volumes get blown up (nearest neighbour, so voxels stay crisp) to be legible.
    scale = max(1, _MIN_PANEL // max(height, width))
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path, format="PNG")
    return path


def _to_gray(plane: np.ndarray) -> np.ndarray:
    """Stretch a slice of any dtype to uint8 between its 1st and 99th percentiles."""
    import numpy as np

    values = plane.astype(np.float32)
    low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    return (np.clip((values - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
