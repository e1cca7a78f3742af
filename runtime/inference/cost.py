"""What a number from an option or a file will cost, checked before it is paid.

The overlap sets how many windows a volume is cut into (each voxel is computed about
``(1 / (1 - overlap))^3`` times: 8 at 0.5, 1000 at 0.9, a million at 0.99) and the window
grid is listed before the first forward; the batch size sets the tensors of every forward.
Each is compared here with a cost model and refused in one line that states the estimate,
before anything is allocated or run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from runtime.contract.errors import InferenceError

__all__ = ["MAX_REDUNDANCY", "MAX_WINDOWS", "check_batch", "check_overlap", "check_window_count"]

MAX_REDUNDANCY = 1000.0  # each voxel computed at most this many times (overlap 0.9)
MAX_WINDOWS = 2_000_000  # windows of one volume: their starts alone are listed in memory


def check_overlap(overlap: float) -> None:
    """Refuse an overlap whose windows compute each voxel more than MAX_REDUNDANCY times."""
    if not 0.0 <= overlap < 1.0:
        return  # the options' own check says it
    redundancy = (1.0 / (1.0 - overlap)) ** 3
    if redundancy > MAX_REDUNDANCY:
        most = 1.0 - MAX_REDUNDANCY ** (-1 / 3)
        raise InferenceError(
            f"overlap {overlap:g} computes every voxel about {redundancy:,.0f} times "
            f"((1 / (1 - overlap))^3 windows over it); at most {most:.2f} "
            f"({MAX_REDUNDANCY:,.0f} times)"
        )


def check_window_count(counts: Sequence[int], shape: Sequence[int], overlap: float) -> None:
    """Refuse a window grid too large to list, before it is listed."""
    total = math.prod(counts)
    if total > MAX_WINDOWS:
        grid = "x".join(map(str, counts))
        volume = "x".join(map(str, shape))
        raise InferenceError(
            f"a {volume} volume at overlap {overlap:g} makes {total:,} windows ({grid}), more "
            f"than {MAX_WINDOWS:,}; use a lower overlap or a larger patch"
        )


def check_batch(batch: int, patch: Sequence[int], channels: int, free_bytes: int | None) -> None:
    """Refuse a batch whose input and output windows alone exceed the free host memory.

    A lower bound (activations come on top): a batch of a million windows is refused here
    instead of being allocated by a warm-up that the kernel would kill.
    """
    if free_bytes is None:
        return
    needed = batch * math.prod(patch) * 4 * (1 + max(channels, 1))
    if needed > free_bytes:
        fits = max(1, batch * free_bytes // needed)
        raise InferenceError(
            f"--batch-size {batch}: the input and output windows of one batch of "
            f"{'x'.join(map(str, patch))} alone need about {needed / 2**30:.1f} GiB, more than "
            f"the {free_bytes / 2**30:.1f} GiB of memory free; at most {fits} fits"
        )
