"""One block on a worker: read its hull once, run the global windows that reach it, write it.

A worker process keeps one :class:`~runtime.inference.engine.Segmenter` per run (the model loads
and warms up once per process, not per block). Settings that would make a worker's result differ
from another's are pinned here: torch's CPU threads (a convolution's low bits depend on them),
cuDNN autotuning off and deterministic algorithms, and the engine's exact mode (fixed batch
shape, no back-off).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.scroll.grid import Block, hull, member_plans
from runtime.scroll.source import InputVolume, any_chunk_stored, open_input
from runtime.scroll.store import OutputStore

__all__ = ["BlockJob", "run_block"]

_CACHE: dict[str, Any] = {}  # fingerprint -> Segmenter, per worker process


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for any block of one run (small, sent with every task)."""

    fingerprint: str
    input_url: str
    level: int
    output_url: str
    kinds: tuple[str, ...]  # "mask" and/or "probability"
    predict_options: Any  # runtime.scroll.run.ResolvedRun: settings and pinned engine options
    patches: tuple[tuple[int, int, int], ...]  # each member's window, as the run's grid has it
    overlap: float
    threads: int  # torch CPU threads per worker
    skip_below: float | None
    gpu_by_worker_name: bool  # an embedded cluster: worker N uses cuda:N


def run_block(job: BlockJob, block: Block) -> dict[str, Any]:
    """Process ``block`` and mark it done; returns its record (also stored in its marker)."""
    start = time.perf_counter()
    segmenter, source, store = _resources(job)
    around = hull(source.shape, list(job.patches), job.overlap, block.box)
    record: dict[str, Any] = {
        "block": block.name,
        "box": [list(axis) for axis in block.box],
        "worker": _worker_name(),
    }
    target = tuple(slice(a, b) for a, b in block.box)
    if source.any_chunk_stored(around):
        data = source.read(around)
        record["read_voxels"] = int(data.size)
        skip = _skip_reason(data, source.fill_value, job.skip_below)
    else:
        data, skip = np.empty((0, 0, 0), source.dtype), "never written"
        record["read_voxels"] = 0
    inner = tuple(slice(a - h, b - h) for (a, b), (h, _) in zip(block.box, around, strict=True))
    if skip:
        for array in store.arrays.values():
            # Only chunks an earlier attempt left need clearing: absent ones already read 0.
            if any_chunk_stored(store.url, array, block.box):
                array[target] = 0  # all-zero chunks are removed (write_empty_chunks off)
        record.update(skipped=skip, foreground_voxels=0)
    else:
        plans = member_plans(source.shape, list(job.patches), job.overlap, block.box, around)
        result = segmenter.segment_windows(data, plans)
        del data
        mask = result.mask[inner]
        if "mask" in store.arrays:
            store.arrays["mask"][target] = mask
        if "probability" in store.arrays:
            from runtime.volumes.probability import encode

            assert result.probability is not None
            store.arrays["probability"][target] = encode(result.probability[inner], "uint8")
        record.update(
            skipped=None,
            foreground_voxels=int(np.count_nonzero(mask)),
            windows=sum(plan.n_windows for plan in plans),
            device=result.device,
            precision=result.precision,
            notes=result.notes,
        )
    record["forward"] = _forward_settings(segmenter)
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["peak_rss_bytes"] = _peak_rss()
    store.mark_done(block.name, record)
    return record


# Decisions a warm-up settles (some by timing) that change a window's low bits.
_BIT_DECISIONS = ("device", "precision", "channels_last", "compile")


def _forward_settings(segmenter: Any) -> dict[str, str]:
    """What this worker's warm-ups chose; every block of a run must show the same."""
    chosen: dict[str, str] = {}
    for decision in segmenter.decisions:
        if decision.name in _BIT_DECISIONS:
            value = decision.value
            if decision.name == "device":
                value = value.split(":")[0]  # cuda:0 and cuda:1 are the same kind
            chosen.setdefault(decision.name, value)
    return chosen


def _skip_reason(data: np.ndarray, fill: Any, below: float | None) -> str | None:
    if below is not None and float(data.max()) < below:
        return f"below {below:g}"
    if np.all(data == fill):
        return "fill"
    return None


def _resources(job: BlockJob) -> tuple[Any, InputVolume, OutputStore]:
    """The run's segmenter (loaded once per process) and the stores (opened per block: cheap,
    and never stale when the same settings write another output)."""
    segmenter = _CACHE.get(job.fingerprint)
    if segmenter is None:
        _CACHE.clear()  # one run per process at a time: free the previous run's model
        import torch

        torch.set_num_threads(job.threads)
        torch.backends.cudnn.deterministic = True
        segmenter = _segmenter(job)
        # After the warm-ups: the probe turns autotuning on, whose choice may differ by worker.
        torch.backends.cudnn.benchmark = False
        chosen = tuple(tuple(patch) for patch in segmenter.patch_sizes)
        if chosen != job.patches:
            raise RuntimeError(
                f"this worker chose windows {chosen}, the run's grid has {job.patches}"
            )
        _CACHE[job.fingerprint] = segmenter
    source = open_input(job.input_url, job.level)
    return segmenter, source, _open_output(job, source)


def _segmenter(job: BlockJob) -> Any:
    from runtime.inference.engine import Segmenter
    from runtime.pipeline.models import load_run_models

    resolved = job.predict_options
    inference = resolved.inference
    if inference.device == "auto" and job.gpu_by_worker_name:
        import torch

        name = _worker_name()
        if torch.cuda.is_available() and name.isdigit():
            device = f"cuda:{int(name) % torch.cuda.device_count()}"
            inference = dataclasses.replace(inference, device=device)
    return Segmenter(load_run_models(resolved.settings), inference, log=lambda message: None)


def _open_output(job: BlockJob, source: InputVolume) -> OutputStore:
    import zarr

    group = zarr.open_group(store=job.output_url, mode="r+")
    path = "{}/0" if source.ome else "{}"
    arrays = {kind: group[path.format(kind)] for kind in job.kinds}
    return OutputStore(job.output_url, group, arrays)


def _peak_rss() -> int:
    """This worker process's peak resident memory so far.

    VmHWM where /proc has it: ``ru_maxrss`` survives the exec of a spawned worker and may report
    the parent's peak instead.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
