"""Running independent volume jobs in worker processes, results kept in task order.

The metric's work (labelling, distance tests) is numpy and C code that mostly holds the GIL, so
volumes are spread over processes, not threads. Workers are spawned (not forked): the parent may
run threads (a progress bar, an engine), and a forked copy of a locked lock never unlocks. Each
task carries file paths, never arrays, so nothing big is pickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["default_jobs", "run_tasks"]

Task = TypeVar("Task")

_WORTH_A_PROCESS = 8_000_000  # voxels of work below which one process is faster
_BYTES_PER_VOXEL = 48  # peak working memory of scoring one volume, measured on 320^3 volumes


def default_jobs(tasks: int, voxels_per_task: int | None = None) -> int:
    """As many workers as CPUs this process may use, no more than tasks, and no more than the
    available memory holds (when psutil can tell)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    jobs = max(1, min(cpus, tasks))
    if voxels_per_task and voxels_per_task * tasks < _WORTH_A_PROCESS:
        return 1  # starting workers (a second each: numpy, scipy) would cost more than it saves
    if voxels_per_task:
        try:
            import psutil

            fits = int(psutil.virtual_memory().available // (voxels_per_task * _BYTES_PER_VOXEL))
            jobs = max(1, min(jobs, fits))
        except ImportError:
            pass
    return jobs


def run_tasks(
    function: Callable[[Task], Any],
    tasks: Sequence[Task],
    *,
    jobs: int,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[function(task) for task in tasks]``, on ``jobs`` processes (in this one for 1).

    ``on_result(index, result)`` runs in this process as each task finishes. The first exception
    a task raises is raised here, after the others were cancelled.
    """
    results: list[Any] = [None] * len(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            results[index] = function(task)
            if on_result is not None:
                on_result(index, results[index])
        return results
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(function, task): index for index, task in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    index = futures[future]
                    results[index] = future.result()  # raises the task's exception
                    if on_result is not None:
                        on_result(index, results[index])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results
