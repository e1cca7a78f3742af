"""Spread named items over workers (one per device), yielding results in input order.

Threads, not processes: torch releases the GIL inside kernels, a model replica per device is
enough, and nothing has to be pickled. A reader thread pulls the next items (so reading volumes
overlaps inference), bounded so finished-but-unyielded results never pile up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")

_POLL = 0.1  # seconds between checks of the stop flag while blocked


class _Done:
    """Marks the end of the items (``error`` set if the iterable itself raised)."""

    def __init__(self, count: int, error: BaseException | None) -> None:
        self.count = count
        self.error = error


class _Pool(Generic[T, R]):
    def __init__(
        self, items: Iterable[tuple[str, T]], workers: Sequence[Callable[[str, T], R]]
    ) -> None:
        self.items = items
        self.workers = workers
        self.tasks: queue.Queue[tuple[int, str, T] | None] = queue.Queue(maxsize=len(workers))
        self.results: dict[int, tuple[str, R | Exception]] = {}
        self.done: _Done | None = None
        self.cond = threading.Condition()
        self.stop = threading.Event()
        # Items read but not yet yielded: a slow volume must not let the others run far ahead.
        self.window = threading.Semaphore(2 * len(workers) + 1)

    def run(self) -> Iterator[tuple[str, R | Exception]]:
        threads = [threading.Thread(target=self._read, name="volume-reader", daemon=True)]
        threads += [
            threading.Thread(target=self._work, args=(fn,), name=f"worker-{i}", daemon=True)
            for i, fn in enumerate(self.workers)
        ]
        for thread in threads:
            thread.start()
        index = 0
        try:
            while True:
                with self.cond:
                    while index not in self.results and not self._exhausted(index):
                        self.cond.wait()
                    if index not in self.results:
                        assert self.done is not None
                        if self.done.error is not None:
                            raise self.done.error
                        return
                    entry = self.results.pop(index)
                self.window.release()
                index += 1
                yield entry
        finally:
            self.stop.set()
            self.window.release()  # unblock the reader so it sees the stop flag

    def _exhausted(self, index: int) -> bool:
        return self.done is not None and index >= self.done.count

    def _read(self) -> None:
        count = 0
        error: BaseException | None = None
        try:
            for name, item in self.items:
                while not self.window.acquire(timeout=_POLL):
                    if self.stop.is_set():
                        return
                if self.stop.is_set() or not self._put((count, name, item)):
                    return
                count += 1
        except BaseException as raised:  # re-raised in the consumer's thread, in order
            error = raised
        finally:
            for _ in self.workers:
                self._put(None)
            with self.cond:
                self.done = _Done(count, error)
                self.cond.notify_all()

    def _put(self, task: tuple[int, str, T] | None) -> bool:
        while not self.stop.is_set():
            try:
                self.tasks.put(task, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, function: Callable[[str, T], R]) -> None:
        while not self.stop.is_set():
            try:
                task = self.tasks.get(timeout=_POLL)
            except queue.Empty:
                continue
            if task is None:
                return
            index, name, item = task
            result: R | Exception
            try:
                result = function(name, item)
            except Exception as error:  # one failing item never stops the others
                result = error
            del task, item  # the volume can be freed before the next one arrives
            with self.cond:
                self.results[index] = (name, result)
                self.cond.notify_all()


def ordered_map(
    items: Iterable[tuple[str, T]], workers: Sequence[Callable[[str, T], R]]
) -> Iterator[tuple[str, R | Exception]]:
    """Run each ``(name, item)`` on whichever worker is free; yield ``(name, result)`` in order.

    A worker's exception is yielded as the result of its item. An exception raised by ``items``
    itself is raised here after every earlier item has been yielded.
    """
    if not workers:
        raise ValueError("ordered_map needs at least one worker")
    return _Pool(items, workers).run()
