"""Three stages at once, so the accelerator never waits for disk: the thread plumbing only.

A reader thread turns each input into a travelling item, the engine (on the caller's thread)
takes the items that are ready for it, and a writer thread finishes every item, in input order.
The queues between them hold at most ``prefetch`` items, so memory stays bounded however many
inputs there are. What an item is, and what happens when one of them fails, is the caller's
(:mod:`runtime.pipeline.run`): here an exception that escapes a stage stops the others and is
raised on the caller's thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["run_stages"]

Source = TypeVar("Source")
Item = TypeVar("Item")
_DONE = object()  # end of a queue


def run_stages(
    sources: Iterable[Source],
    *,
    read: Callable[[Source], Item],
    ready: Callable[[Item], tuple[str, Any] | None],
    engine: Callable[[Iterable[tuple[str, Any]]], Iterable[tuple[str, Any]]],
    take: Callable[[Item, Any], None],
    write: Callable[[Item], None],
    prefetch: int = 1,
) -> None:
    """Read each source on a thread, run the engine over the items ``ready`` hands it (a key and
    its input; None sends the item straight to the writer), ``take`` each outcome back onto its
    item, and ``write`` every item on another thread."""
    stop = threading.Event()
    to_engine: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    to_writer: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))

    def reading() -> None:
        for source in sources:
            if stop.is_set() or not _put(to_engine, read(source), stop):
                return
        _put(to_engine, _DONE, stop, force=True)

    def writing() -> None:
        while True:
            item = _get(to_writer, stop, wait_for_done=True)
            if item is _DONE or item is None:
                return
            write(item)

    reader = _Stage(reading, stop, "predict-reader")
    writer = _Stage(writing, stop, "predict-writer")
    reader.start()
    writer.start()
    feed: _Feed[Item] = _Feed(to_engine, to_writer, ready, stop)
    try:
        for key, outcome in engine(feed):
            item = feed.in_flight.pop(key)
            take(item, outcome)
            if stop.is_set() or not _put(to_writer, item, stop):
                break  # the reader or writer died; its error is raised below
    except BaseException:
        stop.set()
        raise
    finally:
        _put(to_writer, _DONE, stop, force=True)
        writer.join()
        stop.set()  # releases a reader still blocked on a full queue after an engine failure
        reader.join()
    for stage in (writer, reader):
        if stage.error is not None:
            raise stage.error


class _Stage(threading.Thread):
    """A daemon thread that keeps an unexpected exception for the caller to raise, and stops
    the other stages."""

    def __init__(self, work: Callable[[], None], stop: threading.Event, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._stop_all = work, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:
            self.error = error
            self._stop_all.set()


class _Feed(Generic[Item]):
    """The iterable handed to the engine: the ready items, in input order; the others go on to
    the writer. A lock makes it safe for an engine that pulls from several threads."""

    def __init__(
        self,
        source: queue.Queue[Any],
        bypass: queue.Queue[Any],
        ready: Callable[[Item], tuple[str, Any] | None],
        stop: threading.Event,
    ) -> None:
        self._source, self._bypass, self._ready, self._stop = source, bypass, ready, stop
        self.in_flight: dict[str, Item] = {}
        self._lock = threading.Lock()
        self._finished = False

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self

    def __next__(self) -> tuple[str, Any]:
        with self._lock:
            while not self._finished:
                item = _get(self._source, self._stop)
                if item is _DONE or item is None:
                    self._finished = True
                    break
                given = self._ready(item)
                if given is None:
                    _put(self._bypass, item, self._stop)
                    continue
                self.in_flight[given[0]] = item
                return given
            raise StopIteration


def _put(
    target: queue.Queue[Any], item: Any, stop: threading.Event, *, force: bool = False
) -> bool:
    """Put without blocking forever: give up once ``stop`` is set (unless ``force``)."""
    while True:
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            if stop.is_set() and not force:
                return False
            if stop.is_set() and force:
                with contextlib.suppress(queue.Empty):  # after a stop, nobody needs what is queued
                    target.get_nowait()


def _get(source: queue.Queue[Any], stop: threading.Event, *, wait_for_done: bool = False) -> Any:
    """Get, returning None once ``stop`` is set, unless waiting for the end marker."""
    while True:
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set() and not wait_for_done:
                return None
