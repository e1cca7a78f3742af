"""Progress for long batch jobs (score, tune): a tqdm bar on a terminal, else occasional lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TaskProgress"]


class TaskProgress:
    """Counts finished tasks; draws a tqdm bar when tqdm is installed and stderr is a terminal
    (or ``bar`` is True), otherwise logs a line at most every ``every`` seconds and at the end."""

    def __init__(
        self,
        total: int,
        *,
        unit: str,
        log: Callable[[str], None],
        bar: bool | None = None,
        every: float = 10.0,
        label: str = "",
    ) -> None:
        self.total, self.count, self.unit, self.label = total, 0, unit, label
        self._log, self._every = log, every
        self._started = self._last = time.perf_counter()
        self._bar: Any = None
        if bar is not False:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    unit=unit,
                    desc=label or None,
                    disable=None if bar is None else False,
                    file=sys.stderr,
                )
                if self._bar.disable:
                    self._bar = None
            except ImportError:
                pass

    def advance(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self._every and self.count < self.total:
            self._last = now
            rate = self.count / max(now - self._started, 1e-9)
            left = (self.total - self.count) / rate if rate else 0.0
            self._log(
                f"{self.label}{': ' if self.label else ''}{self.count}/{self.total} {self.unit}, about {left:.0f} s left"
            )

    def write(self, message: str) -> None:
        """A log line that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            self._log(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
