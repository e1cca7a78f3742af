"""SIGTERM handled like an error: the run unwinds, writes what it records, removes its temporaries.

Python's default for SIGTERM is to die at once, skipping every ``finally``: metrics.json would
not say what happened and ``.submission-masks-*`` folders would stay behind. While a command
runs, SIGTERM raises :class:`~runtime.contract.errors.Terminated` in the main thread instead.
Standard library only (``install`` runs under it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from runtime.contract.errors import Terminated

__all__ = ["EXIT_TERMINATED", "terminate_as_error"]

EXIT_TERMINATED = 128 + signal.SIGTERM


def _raise(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second SIGTERM while unwinding must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_as_error() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
