"""The time budget of a multi-volume run: cut test-time transforms when the pace would overrun it.

Heavy test-time augmentation is what made many submissions time out. The budget counts from the
start of the run (model loading, warm-ups and compilation included: the caller says when that
was), and what must still happen after the last volume (zipping, validation) is reserved. The
pace is measured per forward batch (the batch shape is fixed, so a batch costs the same whatever
it holds), and the remaining volumes are assumed to have as many windows as the ones seen so far.
Transforms are dropped from the end of the list (the identity, first, always runs). Without TTA
there is nothing to cut: the budget then only warns, once, when the run is predicted to overrun it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from runtime.contract.tta import Transform, describe

__all__ = ["TimeBudget"]

# Aim to finish with this share of the budget used: volumes vary and the estimate is a mean.
_SAFETY = 0.9


class TimeBudget:
    """Tracks a run's pace and says which test-time transforms the next volume may use.

    Reductions only ever go down, dropping transforms from the end of the requested tuple, and
    each one is reported through ``log``. Thread-safe: one worker per device asks and reports.
    """

    def __init__(
        self,
        seconds: float | None,
        transforms: tuple[Transform, ...],
        *,
        total: int | None,
        workers: int,
        batch_seconds: float,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        after: Callable[[], float] | None = None,
    ) -> None:
        """``start``: the ``clock()`` value the budget counts from (None: now); ``after``: the
        seconds still needed once the last volume is done (asked at each check)."""
        self.seconds = seconds
        self.transforms = tuple(transforms)
        self.total = total
        self.workers = max(1, workers)
        self._batch_seconds_guess = batch_seconds
        self._log = log
        self._clock = clock
        self._start = clock() if start is None else start
        self._after = after or (lambda: 0.0)
        self._lock = threading.Lock()
        self._started = 0
        self._finished = 0
        self._measured_batches = 0
        self._measured_seconds = 0.0
        self._windows_seen = 0
        self._volumes_seen = 0
        self._warned_over = False

    @property
    def active(self) -> bool:
        return self.seconds is not None and self.total is not None

    def transforms_for(
        self, n_windows: int, batch_size: int
    ) -> tuple[tuple[Transform, ...], str | None]:
        """Transforms for a volume about to start, and a message if they were just reduced."""
        with self._lock:
            self._started += 1
            if not self.active:
                return self.transforms, None
            remaining = max(self.total - self._started + 1, 1)  # type: ignore[operator]
            elapsed = self._clock() - self._start
            per_batch = self._pace()
            windows = (self._windows_seen + n_windows) / (self._volumes_seen + 1)
            deadline = _SAFETY * self.seconds  # type: ignore[operator]
            after = self._after()

            def finish_at(passes: int) -> float:
                batches = math.ceil(windows * passes / batch_size)
                per_volume = batches * per_batch
                return elapsed + per_volume * math.ceil(remaining / self.workers) + after

            if finish_at(len(self.transforms)) <= deadline:
                return self.transforms, None
            if len(self.transforms) <= 1:
                if self._warned_over:
                    return self.transforms, None
                self._warned_over = True
                message = (
                    f"time budget: {elapsed:.0f} s used of {self.seconds:.0f} s; {remaining} "
                    f"volume(s) left (and {after:.0f} s of zipping) would end near "
                    f"{finish_at(1):.0f} s, over the budget, and there is no TTA to cut; "
                    "a smaller patch size, less overlap or fewer models would be faster"
                )
                self._log(f"warning: {message}")
                return self.transforms, message
            keep = len(self.transforms)
            while keep > 1 and finish_at(keep) > deadline:
                keep -= 1
            reduced = self.transforms[:keep]
            message = (
                f"time budget: {elapsed:.0f} s used of {self.seconds:.0f} s; {remaining} volume(s) "
                f"left with {len(self.transforms)} TTA passes (and {after:.0f} s of zipping) "
                f"would end near {finish_at(len(self.transforms)):.0f} s; TTA reduced to "
                f"{describe(reduced) if keep > 1 else 'none (1 pass)'} for the remaining volumes"
            )
            if finish_at(keep) > deadline and not self._warned_over:
                self._warned_over = True
                message += (
                    f"; even so the run is predicted to end near {finish_at(keep):.0f} s, "
                    "over the budget"
                )
            self.transforms = reduced
            self._log(message)
            return reduced, message

    def finished(self, n_windows: int, passes: int, batch_size: int, seconds: float | None) -> None:
        """Report a volume done (``seconds`` None if it failed: its time says nothing of pace)."""
        with self._lock:
            self._finished += 1
            if seconds is None:
                return
            self._measured_batches += math.ceil(n_windows * passes / batch_size)
            self._measured_seconds += seconds
            self._windows_seen += n_windows
            self._volumes_seen += 1

    def _pace(self) -> float:
        if self._measured_batches:
            return self._measured_seconds / self._measured_batches
        return self._batch_seconds_guess
