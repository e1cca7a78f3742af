"""One whole-scroll run: input, global statistics, blocks, output, Dask, resume, report."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import InferenceError, InputError, ModelError
from runtime.scroll.blocks import BlockJob
from runtime.scroll.cluster import dask_client, run_blocks
from runtime.scroll.grid import Block, block_shape, blocks_in, check_fits, halo_factor
from runtime.scroll.source import InputVolume, open_input, parse_region
from runtime.scroll.stats import intensity_stats, read_stats_file
from runtime.scroll.store import OutputStore, file_digest

__all__ = ["ScrollConfig", "ScrollReport", "run_scroll"]

Log = Callable[[str], None]
_MAX_DEFAULT_BLOCK = 512
_HOST_SHARE = 0.5  # of the available RAM, split between this machine's workers


@dataclass
class ScrollConfig:
    """A whole-scroll run; ``predict`` holds the model and engine options predict has."""

    input: str
    output: str
    predict: Any  # runtime.contract.settings.RunRequest: the models and engine options asked
    level: int = 0
    region: str | None = None
    block: int | None = None  # voxels per axis, rounded to whole chunks; None: from memory
    workers: int | None = None  # embedded cluster's worker processes (None: one per GPU, or 1)
    scheduler: str | None = None  # a Dask scheduler address (or DASK_SCHEDULER_ADDRESS)
    kinds: tuple[str, ...] = ("mask", "probability")
    overwrite: bool = False
    intensity_stats: Path | None = None
    skip_below: float | None = None
    threads: int = 1  # torch CPU threads per worker: pinned, results depend on it
    in_flight: int | None = None  # blocks submitted ahead (None: twice the workers)


@dataclass(frozen=True)
class ResolvedRun:
    """The run's settings (resolved with the loaded models, runtime.contract.settings) and the
    engine options every worker uses, pinned for exactness; one window grid, one overlap."""

    settings: Any  # RunSettings
    inference: Any  # InferenceOptions
    overlap: float


@dataclass
class ScrollReport:
    output: str
    blocks: int  # of the region
    already_done: int  # finished by an earlier run (resumed)
    ran: int  # processed now, skipped ones included
    skipped: int  # written as zeros without a forward
    failed: list[tuple[str, str]]  # (block, one-line reason)
    seconds: float
    metrics: str
    records: list[dict[str, Any]] = field(default_factory=list)


def run_scroll(config: ScrollConfig, log: Log = print) -> ScrollReport:
    started = time.perf_counter()
    source = open_input(config.input, config.level)
    region = parse_region(config.region, source.shape)
    options, patches, models = _resolve_models(config.predict, log)
    check_fits(source.shape, patches)
    stats = (
        read_stats_file(config.intensity_stats)
        if config.intensity_stats
        else intensity_stats(source, region)
    )
    gpus = _gpu_count(options.inference.device)
    workers = config.workers or max(gpus, 1)
    block = block_shape(source.chunks, config.block or _default_block(patches, source, workers))
    blocks = blocks_in(source.shape, block, region)
    components = {
        "models": models,
        "inference": _inference_record(options, patches),
        "pinned": {
            "exact": True,
            "torch_threads_per_worker": config.threads,
            "cudnn": "deterministic, no autotuning",
            "compile": options.inference.compile,
            "channels_last": options.inference.channels_last,
        },
        "outputs": list(config.kinds),
        "skip_below": config.skip_below,
        "stats": stats,
        "grid": {
            "input": config.input,
            "level": config.level,
            "shape": list(source.shape),
            "dtype": str(source.dtype),
            "chunks": list(source.chunks),
            "block": list(block),
            "patches": [list(p) for p in patches],
            "overlap": options.overlap,
        },
    }
    store, resumed = OutputStore.open(
        config.output, source, config.kinds, components, overwrite=config.overwrite
    )
    done = store.done_names()
    pending = [b for b in blocks if b.name not in done]
    already = len(blocks) - len(pending)
    factor = halo_factor(block, patches[0], options.overlap)
    log(
        f"scroll: {source.shape} {source.dtype}, chunks {source.chunks}, {len(blocks)} block(s) "
        f"of {block} (halo factor {factor:.2f})"
        + (f", resuming: {already} already done" if resumed else "")
    )
    job = BlockJob(
        fingerprint=store.group.attrs["kaggle_offline_scroll"]["fingerprint"],
        input_url=config.input,
        level=config.level,
        output_url=config.output,
        kinds=config.kinds,
        predict_options=options,
        patches=tuple(patches),
        overlap=options.overlap,
        threads=config.threads,
        skip_below=config.skip_below,
        # Only the embedded cluster numbers its workers by GPU; a user's sets CUDA_VISIBLE_DEVICES.
        gpu_by_worker_name=not (config.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")),
    )
    records: list[dict[str, Any]] = []
    failures: list[tuple[Block, str]] = []
    if pending:
        progress = _Progress(len(pending), sum(b.voxels for b in pending), log)
        with dask_client(config.workers, config.scheduler, gpus, log) as (client, cluster):
            count = cluster["workers"] or workers
            failures = run_blocks(
                client,
                job,
                pending,
                in_flight=config.in_flight or 2 * max(count, 1),
                gpu=bool(gpus),
                on_done=lambda record: _collect(record, records, progress),
            )
        progress.close()
    skipped = sum(1 for r in records if r.get("skipped"))
    failed = [(block.name, reason) for block, reason in failures]
    # Workers settle precision and layout by warm-ups (the CPU layout by timing); blocks run
    # with different ones are not one exact result: the run fails naming them. Earlier runs'
    # blocks (their markers) count too.
    forward = _forward_settings_seen(store.records())
    if len(forward) > 1:
        failed.append(("all", f"workers settled different forward settings: {forward}"))
    seconds = round(time.perf_counter() - started, 3)
    metrics = {
        "input": config.input,
        "output": config.output,
        "region": [list(axis) for axis in region],
        "blocks": len(blocks),
        "already_done": already,
        "ran": len(records),
        "skipped": skipped,
        "failed": [{"block": name, "error": reason} for name, reason in failed],
        "halo_factor": factor,
        "forward_settings": forward,
        "seconds": seconds,
        "components": components,
        "records": records,
    }
    path = store.write_metrics(metrics)
    report = ScrollReport(
        config.output,
        len(blocks),
        already,
        len(records),
        skipped,
        failed,
        seconds,
        path,
        records,
    )
    log(
        f"scroll: {len(records)} block(s) run ({skipped} skipped without a forward), "
        f"{already} already done, {len(failed)} failed; metrics {path}"
    )
    if failed:
        for name, reason in failed:
            log(f"block {name} failed twice: {reason}")
        raise InferenceError(
            f"{len(failed)} block(s) failed ({', '.join(n for n, _ in failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''}): {failed[0][1]}"
        )
    return report


def _collect(record: dict[str, Any], records: list[dict[str, Any]], progress: _Progress) -> None:
    records.append(record)
    progress.advance(record)


def _forward_settings_seen(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for record in records:
        settings = record.get("forward")
        if settings and settings not in seen:
            seen.append(settings)
    return seen


def _resolve_models(request: Any, log: Log) -> tuple[ResolvedRun, list[tuple[int, int, int]], Any]:
    """Load the models here once: the run's settings resolved with them (the one resolution
    predict uses), their windows and file digests.

    What the engine leaves to a timing (compilation, the memory layout) is pinned unless asked,
    so that every worker makes the same choice; the engine runs in exact mode.
    """
    from runtime.contract.settings import resolve
    from runtime.inference.engine import DEFAULT_PATCH
    from runtime.inference.segmentation_model import Ensemble, SegmentationModel
    from runtime.pipeline.models import engine_options, load_run_models, model_facts

    if request.time_budget is not None:
        raise InputError("--time-budget does not apply to zarr input (blocks resume instead)")
    model = load_run_models(resolve(request))
    settings = resolve(request, model_facts(model))
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    patches = []
    for member in members:
        if type(member).prepare_volume is not SegmentationModel.prepare_volume:
            raise ModelError(
                f"model {member.name} prepares each volume itself (nnU-Net: crop to the "
                "non-zero box, per-case statistics): block runs of it are not supported"
            )
        patches.append(_member_patch(member, settings.patch_size, DEFAULT_PATCH))
    overlaps = sorted({choice.overlap for choice in settings.models})
    if len(overlaps) > 1:
        raise InputError(
            f"zarr input runs one window grid, and the models recommend overlaps "
            f"{', '.join(f'{o:g}' for o in overlaps)}: choose one with --overlap"
        )
    for note in settings.notes:
        log(note)
    inference = engine_options(settings)
    # The layout is otherwise timed at each worker's warm-up: on a loaded machine two workers
    # chose differently. channels_last pays on a GPU under autocast only.
    layout = inference.channels_last
    if layout is None:
        layout = inference.device != "cpu" and _gpu_count(inference.device) > 0
        layout = layout and inference.amp != "off"
    pinned = dataclasses.replace(
        inference,
        exact=True,
        channels_last=layout,
        compile=bool(inference.compile),
        keep_probability=True,
        overlap=overlaps[0],
    )
    specs = [choice.spec for choice in settings.models]
    digests = [{"model": spec, "sha256": _model_digest(spec)} for spec in specs]
    log(f"scroll: model(s) {', '.join(m.name for m in members)}, windows {patches}")
    return ResolvedRun(settings, pinned, overlaps[0]), patches, digests


def _member_patch(
    model: Any, asked: tuple[int, ...] | None, default: tuple[int, int, int]
) -> tuple[int, int, int]:
    """The engine's rule (Segmenter._choose_patch); each worker checks it chose the same."""
    static = model.static_input_shape
    if static and all(isinstance(d, int) for d in static[2:]):
        return tuple(int(d) for d in static[2:])  # type: ignore[return-value]
    chosen = asked or model.recommended.get("patch_size") or default
    multiple = model.size_multiple
    return tuple(math.ceil(int(d) / multiple) * multiple for d in chosen)


def _model_digest(spec: str) -> str:
    if spec == "demo":
        from runtime.samples.demo import DEMO_DIR

        return file_digest(Path(DEMO_DIR))
    path = Path(spec)
    if path.name == "config.json":
        path = path.parent
    return file_digest(path)


def _inference_record(options: ResolvedRun, patches: list[tuple[int, int, int]]) -> dict[str, Any]:
    settings, inference = options.settings, options.inference
    ensemble = settings.ensemble
    return {
        "models": [choice.spec for choice in settings.models],
        "ensemble_mode": str(ensemble.mode) if ensemble else None,
        "ensemble_weights": list(ensemble.weights) if ensemble else None,
        "foreground_class": settings.foreground_class,
        "patches": [list(p) for p in patches],
        "overlap": options.overlap,
        "threshold": inference.threshold,
        "batch_size": inference.batch_size,
        "tta": None if inference.tta is None else [t.name for t in inference.tta],
        "device": inference.device,
        "amp": str(inference.amp),
    }


def _gpu_count(device: str) -> int:
    if device == "cpu":
        return 0
    import torch

    if not torch.cuda.is_available():
        return 0
    return 1 if device.startswith("cuda:") else torch.cuda.device_count()


def _default_block(patches: list[tuple[int, int, int]], source: InputVolume, workers: int) -> int:
    """The largest block whose hull fits a share of the free RAM, at most 512 per axis.

    A block holds its hull's input, fp32 sums and weight sums per member, a float32
    probability, a mask and the uint8 outputs: about itemsize + 22 bytes per hull voxel.
    """
    import psutil

    budget = psutil.virtual_memory().available * _HOST_SHARE / max(workers, 1)
    per_voxel = source.dtype.itemsize + 8 * len(patches) + 14
    side = int((budget / per_voxel) ** (1 / 3)) - max(max(p) for p in patches)
    return max(min(side, _MAX_DEFAULT_BLOCK), min(source.chunks))


class _Progress:
    """Blocks done, voxels per second and an ETA (the engine's TaskProgress draws the bar)."""

    def __init__(self, total: int, voxels: int, log: Log) -> None:
        from runtime.volumes.progress import TaskProgress

        self.total_voxels, self.voxels = voxels, 0
        self.started = time.perf_counter()
        self.log = log
        self.bar = TaskProgress(total, unit="block", log=log, label="blocks")

    def advance(self, record: dict[str, Any]) -> None:
        box = record["box"]
        self.voxels += math.prod(b - a for a, b in box)
        self.bar.advance()

    def close(self) -> None:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        close = getattr(self.bar, "close", None)
        if close:
            close()
        self.log(f"scroll: {self.voxels / seconds:,.0f} voxels/s over {seconds:.1f} s")
