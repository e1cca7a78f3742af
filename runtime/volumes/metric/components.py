"""Connected-component labelling: connected-components-3d when installed, else scipy.ndimage.

Measured on a 320^3 volume (bench/bench_score.py): cc3d labels 26-connected foreground about 5x
and background about 8x faster than ``scipy.ndimage.label``; both give the same partition, which
is all the metric needs (label numbers differ, counts and VOI do not). Kaggle's image has scipy
but not cc3d, so cc3d is an optional speed-up (bundle it with ``bundler build
connected-components-3d``), never a requirement.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BACKEND_VARIABLE", "backend", "label"]

# "scipy" forces the fallback (tests and benchmarks compare both); "cc3d" requires cc3d.
BACKEND_VARIABLE = "KAGGLE_OFFLINE_COMPONENTS"


@functools.cache
def backend() -> str:
    """ "cc3d" or "scipy": the labeller this process uses."""
    wanted = os.environ.get(BACKEND_VARIABLE, "").strip().lower()
    if wanted == "scipy":
        return "scipy"
    try:
        import cc3d  # noqa: F401
    except ImportError:
        if wanted == "cc3d":
            raise ImportError(
                f"{BACKEND_VARIABLE}=cc3d but connected-components-3d is not installed"
            ) from None
        return "scipy"
    return "cc3d"


def label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Label the non-zero voxels of a 3D mask (6- or 26-connected); returns (labels, count).

    Labels are 1..count for the components and 0 for the background.
    """
    import numpy as np

    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    mask = np.ascontiguousarray(mask, dtype=bool)
    if backend() == "cc3d":
        import cc3d

        six_or_26 = cast(Literal[6, 26], connectivity)  # checked above; cc3d's stubs want a Literal
        labels, count = cc3d.connected_components(mask, connectivity=six_or_26, return_N=True)
        return labels, int(count)
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool) if connectivity == 26 else None
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)
