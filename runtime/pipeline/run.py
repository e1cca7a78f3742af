"""Volumes in, validated submission.zip out: the pipeline behind ``python -m runtime predict``.

Three stages run at once so the accelerator never waits for disk (the threads and bounded queues
are :mod:`runtime.pipeline.stages`): a reader decodes the next volume, the engine segments the
current one, and a writer exports the previous one (:mod:`runtime.volumes.export`). The run's
settings are resolved by :func:`runtime.contract.settings.resolve`; this module is the run and its
failure policy.

Before any work, every output is checked against the inputs and each other, and an earlier
submission.zip is moved to ``<name>.previous.zip``, so that a failed or killed run never leaves it
where the scorer looks (see :mod:`runtime.volumes.outputs`).

Failure policy (one bad volume must not cost the submission; any exception of one volume, memory
included, is that volume's):

* a volume that cannot be read or segmented but whose shape is known from a plausible header gets
  an all-zero mask, so the zip stays valid; the error is logged and recorded in metrics.json.
* a volume with no usable shape (an id from test.csv with no file, a non-TIFF, a 2D image, a
  broken header or one claiming more data than its file holds, a stand-in that does not fit in
  memory), or whose id cannot name a zip member, cannot get a mask. The others are still
  processed, then the run fails naming those ids and keeps the zip as ``<name>.partial.zip``: a
  zip missing an id scores nothing, so it is never written under the real name.
  ``allow_missing`` writes it there anyway.
* non-finite voxels are replaced by the engine (see :mod:`runtime.inference.engine`), counted in
  metrics.json and warned about.
* ``strict`` turns every error into a failure: missing ids stop the run before any work, and a
  zero-mask stand-in makes it end with an error and a ``.partial.zip`` instead of submission.zip.

metrics.json is written whatever happens once the outputs are checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.contract.errors import (
    InputError,
    KaggleOfflineError,
    OutputError,
    SubmissionError,
    Terminated,
    VolumeError,
    first_line,
)
from runtime.contract.settings import RunRequest, RunSettings, resolve
from runtime.volumes.postprocess import PostprocessOptions
from runtime.volumes.run_metrics import VolumeRecord

if TYPE_CHECKING:
    import numpy as np

    from runtime.inference.engine import Segmenter
    from runtime.volumes.export import Export
    from runtime.volumes.inputs import VolumeInputs
    from runtime.volumes.mask_settings import MaskSettings
    from runtime.volumes.outputs import Output

__all__ = ["PredictReport", "predict"]

Log = Callable[[str], None]


@dataclasses.dataclass
class PredictReport:
    """What a successful run produced."""

    submission: Path
    sha256: str
    metrics: Path
    volumes: list[VolumeRecord]
    seconds: float

    @property
    def failed(self) -> list[VolumeRecord]:
        return [record for record in self.volumes if record.errors]


def predict(
    input_path: Path | str,
    output: Path | str,
    request: RunRequest | None = None,
    *,
    log: Log | None = None,
    segmenter: Segmenter | None = None,
) -> PredictReport:
    """Segment every volume under ``input_path`` and write a validated submission zip.

    ``request`` is resolved into the run's settings by :func:`runtime.contract.settings.resolve`
    twice: before anything is read (every rule that does not depend on the models) and once the
    models are loaded (their formats and recommendations). ``segmenter`` reuses an engine that
    is already set up (its model and engine options win over the request's). Raises
    :class:`OptionError` for options that do not apply or conflict, :class:`InputError` for
    unusable inputs, :class:`OutputError` for outputs that would overwrite an input or each
    other or cannot be written, :class:`SubmissionError` when the zip would be incomplete or
    ``strict`` saw errors, and :class:`ModelError` from model loading. metrics.json is written
    in every case that got past the checks of the inputs and outputs.
    """
    # torch first: without it the run stops before anything is read, moved or written
    from runtime.pipeline.models import set_up_engine
    from runtime.volumes.inputs import find_volumes
    from runtime.volumes.outputs import check_outputs
    from runtime.volumes.space import predict_estimates
    from runtime.volumes.stale import invalidate, remove_abandoned_workdirs
    from runtime.volumes.submission import id_problem

    request = request or RunRequest()
    settings = resolve(request)
    masks = _masks(settings)  # a tuned postprocess.json is read before anything else
    log = log or _print_line
    output = Path(output)
    if output.is_dir():  # a folder to write into, like `cp FILE DIR`
        output = output / "submission.zip"
    metrics_path = settings.metrics_path or output.with_name("metrics.json")
    started = time.perf_counter()
    budget_start = time.monotonic()  # --time-budget counts from here: loading included

    inputs = find_volumes(input_path)
    places = predict_estimates(
        _outputs(output, metrics_path, settings, inputs),
        inputs,
        own_workdir=settings.workdir is None,
        encoding=str(settings.probability_encoding),
    )
    check_outputs(places, _read_files(inputs, settings))
    for note in inputs.notes:
        log(note)
    records = [VolumeRecord(id=s.id, path=str(s.path) if s.path else None) for s in inputs.sources]
    for record in records:
        if record.path is None:
            _fail(record, f"{record.id}: listed in {inputs.csv_path} but no file found", log)
            record.status = "no-mask"
        elif (problem := id_problem(record.id)) is not None:
            _fail(record, f"{record.path}: cannot be in the zip: {problem}; rename it", log)
            record.status = "no-mask"

    run: dict[str, Any] = {
        "input": str(input_path),
        "output": str(output),
        "options": _options_summary(settings, masks),
        "outcome": "failed",
    }
    previous = _set_aside_earlier_submission(output, log)
    invalidate([metrics_path], log)  # a kill -9 must not leave the last run's "ok" beside no zip
    remove_abandoned_workdirs(output.parent, output.stem, log)
    if previous is not None:
        run["previous_submission"] = str(previous)
    workdir, own_workdir = _workdir(settings.workdir, output)
    export = _export(settings, masks, workdir)
    if settings.save_probabilities is not None:
        from runtime.volumes.probability import MANIFEST_NAME

        # Files of an earlier run must never pass for this run's: the manifest comes back at the end.
        settings.save_probabilities.mkdir(parents=True, exist_ok=True)
        (settings.save_probabilities / MANIFEST_NAME).unlink(missing_ok=True)
    from runtime.volumes.run_metrics import PeakMemory

    with PeakMemory() as memory:
        try:
            if inputs.missing and settings.strict:  # the run would fail: fail before the work
                raise InputError(_missing_message(inputs.missing, inputs.csv_path))
            settings, segmenter = set_up_engine(
                request, log, segmenter=segmenter, budget_start=budget_start
            )
            _, decided, encoding = masks
            if decided is not None:
                log(f"masks: {decided.describe()} (on {encoding} probabilities)")
            run["options"] = _options_summary(settings, masks)
            _run_pipeline(records, segmenter, settings.prefetch, settings.progress_bar, export, log)
            report = _assemble(records, output, metrics_path, settings, workdir, log, run)
            report.seconds = time.perf_counter() - started
            return report
        except BaseException as error:
            run["error"] = str(error) if isinstance(error, KaggleOfflineError) else repr(error)
            if isinstance(error, Terminated):  # no time left to keep masks for a look
                run["outcome"] = "terminated"
            raise
        finally:
            decisions = getattr(segmenter, "decisions", None) or []
            run["decisions"] = [_plain(decision) for decision in decisions]
            run["seconds"] = round(time.perf_counter() - started, 3)
            if settings.save_probabilities is not None:
                _write_probability_manifest(
                    settings.save_probabilities, settings, records, run, log
                )
            _write_run_metrics(metrics_path, run, records, memory, log)
            if own_workdir:
                done = "submission_sha256" in run or "partial_zip" in run
                _clean_workdir(workdir, zipped=done or run["outcome"] == "terminated", log=log)


# --- the three stages (threads: runtime.pipeline.stages) --------------------------------------
@dataclasses.dataclass
class _Item:
    """A volume travelling from the reader to the writer."""

    record: VolumeRecord
    volume: np.ndarray | None = None  # dropped once handed to the engine
    preview_slice: np.ndarray | None = None  # the input's middle z slice, kept for the preview
    mask: np.ndarray | None = None  # None with a known shape: the writer writes zeros
    probability: np.ndarray | None = None  # the engine's, when the run keeps it


def _run_pipeline(
    records: list[VolumeRecord],
    segmenter: Segmenter,
    prefetch: int,
    progress_bar: bool | None,
    export: Export,
    log: Log,
) -> None:
    from runtime.pipeline.stages import run_stages

    readable = [record for record in records if record.status != "no-mask"]
    progress = _Progress(len(records), progress_bar, log)
    log = progress.log
    for record in records:
        if record.status == "no-mask":
            progress.done(record)
    keep_slice = export.preview_dir is not None
    warned: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in warned:
            warned.add(message)
            log(f"warning: {message}")

    try:
        run_stages(
            readable,
            read=lambda record: _read_one(record, keep_slice),
            ready=lambda item: _engine_input(item, log),
            engine=lambda feed: segmenter.segment_many(
                feed, total=len(readable), after_seconds=lambda: _zip_seconds(records)
            ),
            take=lambda item, outcome: _take_result(item, outcome, log),
            write=lambda item: _write_one(item, export, progress, warn_once, log),
            prefetch=prefetch,
        )
    finally:
        progress.close()


def _read_one(record: VolumeRecord, keep_slice: bool) -> _Item:
    """Reader thread: decode one volume; a bad one travels on with its error."""
    from runtime.volumes.tiff import read_volume_header, read_volume_with_header

    item = _Item(record)
    started = time.perf_counter()
    header = None
    try:
        header, item.volume = read_volume_with_header(Path(record.path or ""), name=record.path)
        if keep_slice:
            item.preview_slice = item.volume[item.volume.shape[0] // 2].copy()
    except Exception as error:  # one volume's failure, whatever its kind, is that volume's
        item.volume = item.preview_slice = None
        record.errors.append(_read_error(record, error))
        with contextlib.suppress(Exception):
            # A header that parses (and is plausible) still gives the shape for a stand-in.
            header = read_volume_header(Path(record.path or ""), name=record.path)
    record.read_seconds = time.perf_counter() - started
    if header is not None:
        record.shape = list(header.shape)
        record.dtype, record.compression = header.dtype, header.compression
        record.decoder = header.decoder
    return item


def _engine_input(item: _Item, log: Log) -> tuple[str, np.ndarray] | None:
    """A readable volume for the engine (which then holds its only reference); one that failed
    to read bypasses the engine, its errors said now."""
    if item.volume is None:
        for error in item.record.errors:
            log(f"error: {error}")
        return None
    volume, item.volume = item.volume, None
    return item.record.id, volume


def _read_error(record: VolumeRecord, error: Exception) -> str:
    if isinstance(error, VolumeError):
        return str(error)  # names the file already
    return f"{record.path}: cannot read it: {_problem(error)}"


def _problem(error: Exception) -> str:
    """One line for an unexpected error of one volume."""
    if isinstance(error, MemoryError):
        return "out of host memory"
    return f"{type(error).__name__}: {first_line(error)}"


def _take_result(item: _Item, outcome: Any, log: Log) -> None:
    """Record what the engine returned for one volume (a VolumeResult or an Exception)."""
    record = item.record
    if isinstance(outcome, BaseException):
        _fail(record, f"{record.path}: segmentation failed: {first_line(outcome)}", log)
        return
    record.infer_seconds = float(outcome.seconds)
    record.device, record.precision = str(outcome.device), str(outcome.precision)
    record.compiled = bool(outcome.compiled)
    record.tta = [transform.name for transform in outcome.tta]
    record.batch_size = int(outcome.batch_size) or None
    record.accumulation = str(outcome.accumulation)
    record.notes.extend(str(note) for note in outcome.notes)
    record.nonfinite_voxels = int(outcome.nonfinite_voxels)
    if record.nonfinite_voxels:
        log(
            f"warning: {record.path}: {record.nonfinite_voxels} NaN or inf voxel(s) replaced by "
            "the model's normalization mean before inference (recorded in metrics.json)"
        )
    mask = outcome.mask
    if record.shape is not None and tuple(mask.shape) != tuple(record.shape):
        _fail(record, f"{record.path}: engine returned a mask of shape {mask.shape}", log)
        return
    item.mask = mask
    item.probability = getattr(outcome, "probability", None)


def _write_one(item: _Item, export: Export, progress: _Progress, warn: Log, log: Log) -> None:
    """Writer thread: the volume's outputs (see :mod:`runtime.volumes.export`), then progress;
    whatever fails here, memory included, is this volume's failure, not the run's."""
    from runtime.volumes.export import export_volume

    record = item.record
    try:
        probability, item.probability = item.probability, None
        export_volume(
            record, item.mask, probability, item.preview_slice, export, warn=warn, log=log
        )
    except OutputError:  # no space left, or an output that cannot be written: the run's
        raise
    except Exception as error:
        item.mask = None
        _fail(record, f"{record.id}: no mask written: {_problem(error)}", log)
        record.status = "no-mask"
    progress.done(record)


def _write_probability_manifest(
    folder: Path, settings: RunSettings, records: list[VolumeRecord], run: dict[str, Any], log: Log
) -> None:
    from runtime.volumes.probability import write_manifest

    saved: dict[str, Sequence[int]] = {
        r.id: r.shape for r in records if r.probability_file and r.shape and not r.errors
    }
    try:
        path = write_manifest(
            folder,
            str(settings.probability_encoding),
            saved,
            {"input": run.get("input"), "models": [choice.spec for choice in settings.models]},
        )
        run["probabilities_manifest"] = str(path)
    except (OSError, OutputError) as error:
        log(f"warning: probability manifest not written: {error}")


# --- the zip -------------------------------------------------------------------------------------
def _assemble(
    records: list[VolumeRecord],
    output: Path,
    metrics_path: Path,
    settings: RunSettings,
    workdir: Path,
    log: Log,
    run: dict[str, Any],
) -> PredictReport:
    from runtime.volumes.submission import partial_path, write_submission

    masked = [r for r in records if r.status in ("ok", "zero-mask")]
    without = [r for r in records if r.status not in ("ok", "zero-mask")]
    failed = [r for r in records if r.errors]
    members = [(r.id, workdir / f"{r.id}.tif") for r in masked]
    shapes = {r.id: r.shape for r in masked if r.shape is not None}

    blockers: list[str] = []
    if without and not settings.allow_missing:
        blockers.append(f"no mask for {len(without)} id(s): {_ids(without)}")
    if failed and settings.strict:
        blockers.append(f"--strict: {len(failed)} volume(s) failed: {_ids(failed)}")
    if blockers:
        if not members:
            raise SubmissionError(f"{output} not written: {'; '.join(blockers)}")
        partial = partial_path(output)
        started = time.perf_counter()
        write_submission(partial, members, shapes)
        run["zip_seconds"] = round(time.perf_counter() - started, 3)
        run["partial_zip"] = str(partial)
        raise SubmissionError(
            f"{output} not written: {'; '.join(blockers)}; the {len(members)} mask(s) made are in "
            f"{partial}, and metrics in {metrics_path}"
        )

    started = time.perf_counter()
    digest = write_submission(output, members, shapes)
    run["zip_seconds"] = round(time.perf_counter() - started, 3)
    run["submission_sha256"] = digest
    run["submission_bytes"] = output.stat().st_size
    run["outcome"] = "ok" if not failed else "ok-with-stand-ins"
    summary = f"wrote {output} ({len(members)} masks, sha256 {digest[:12]})"
    stand_ins = [r for r in masked if r.status == "zero-mask"]
    other = [r for r in masked if r.errors and r.status != "zero-mask"]
    if stand_ins:
        summary += f"; all-zero stand-ins for {len(stand_ins)} failed volume(s): {_ids(stand_ins)}"
    if other:
        summary += f"; errors (mask kept) for: {_ids(other)}"
    if without:
        summary += f"; left out (no shape known): {_ids(without)}"
    log(summary)
    return PredictReport(output, digest, metrics_path, records, 0.0)


# --- helpers -------------------------------------------------------------------------------------
class _Progress:
    """One line per finished volume; a tqdm bar too where tqdm is installed and wanted."""

    def __init__(self, total: int, bar: bool | None, log: Log) -> None:
        self.total, self.count, self._log = total, 0, log
        self._lock = threading.Lock()
        self._bar: Any = None
        if bar is not False:
            try:
                from tqdm import tqdm

                # disable=None: only on a terminal, unless asked for explicitly
                self._bar = tqdm(total=total, unit="vol", disable=None if bar is None else False)
            except ImportError:
                pass

    def log(self, message: str) -> None:
        """Log a line; above a live bar when logging goes to our own stderr printer."""
        if self._bar is not None and not self._bar.disable and self._log is _print_line:
            self._bar.write(message, file=sys.stderr)
        else:
            self._log(message)

    def done(self, record: VolumeRecord) -> None:
        with self._lock:
            self.count += 1
            self.log(f"[{self.count}/{self.total}] {_record_line(record)}")
            if self._bar is not None:
                self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _record_line(record: VolumeRecord) -> str:
    shape = "x".join(str(n) for n in record.shape) if record.shape else "?"
    parts = [f"{record.id} {shape}", record.status]
    if record.status != "no-mask":
        parts.append(
            f"read {record.read_seconds:.2f}s infer {record.infer_seconds:.2f}s "
            f"post {record.postprocess_seconds:.2f}s write {record.write_seconds:.2f}s"
        )
    if record.foreground_fraction is not None:
        parts.append(f"fg {100 * record.foreground_fraction:.2f}%")
    if record.device:
        engine = f"{record.device} {record.precision}"
        engine += " compiled" if record.compiled else ""
        engine += f" tta {'+'.join(record.tta[1:])}" if record.tta and len(record.tta) > 1 else ""
        parts.append(engine)
    return " | ".join(parts)


# Zipping (deflate) and validating (inflate, decode with tifffile and Pillow) a mask costs about
# 17 ns per voxel on two CPU cores; the time budget reserves this much for it.
_ZIP_SECONDS_PER_VOXEL = 30e-9


def _zip_seconds(records: list[VolumeRecord]) -> float:
    """What zipping every mask will take, from the shapes known so far (for the time budget)."""
    sizes = [math.prod(record.shape) for record in records if record.shape]
    if not sizes:
        return 0.0
    masks = sum(record.status != "no-mask" for record in records)
    return _ZIP_SECONDS_PER_VOXEL * sum(sizes) / len(sizes) * masks


Masks = tuple[PostprocessOptions, "MaskSettings | None", str]


def _masks(settings: RunSettings) -> Masks:
    """The settings' mask rule as the volumes layer applies it: the clean-up after the engine's
    threshold, or the rule that decides masks from probabilities and the encoding it compares
    them in (a tuned postprocess.json is read here)."""
    from runtime.volumes.mask_settings import MaskSettings, read_postprocess_file

    rule = settings.mask
    postprocess = PostprocessOptions(
        min_component_voxels=rule.min_component_voxels,
        closing_radius=rule.closing_radius,
        fill_holes=rule.fill_holes,
    )
    if rule.postprocess_file is not None:
        tuned, encoding = read_postprocess_file(rule.postprocess_file)
        return tuned.postprocess, tuned, encoding
    if rule.rule == "threshold":
        return postprocess, None, "float32"
    decided = MaskSettings(
        threshold=rule.threshold,
        hysteresis_high=rule.hysteresis_high,
        foreground_fraction=rule.foreground_fraction,
        postprocess=postprocess,
    )
    return postprocess, decided, settings.mask_encoding


def _export(settings: RunSettings, masks: Masks, workdir: Path) -> Export:
    from runtime.volumes.export import Export

    postprocess, decided, encoding = masks
    return Export(
        workdir=workdir,
        postprocess=postprocess,
        mask_settings=decided,
        mask_encoding=encoding,
        save_probabilities=settings.save_probabilities,
        probability_encoding=str(settings.probability_encoding),
        preview_dir=settings.preview_dir,
    )


def _write_run_metrics(
    path: Path, run: dict[str, Any], records: list[VolumeRecord], memory: Any, log: Log
) -> None:
    from runtime.volumes.run_metrics import gpu_peak_memory, library_versions, write_metrics

    run = dict(run)
    run["peak_host_rss_bytes"] = memory.peak_bytes
    run["peak_host_rss_source"] = memory.source
    run["peak_gpu_memory_bytes"] = gpu_peak_memory()
    run["environment"] = library_versions()
    run["counts"] = {
        status: sum(r.status == status for r in records)
        for status in ("ok", "zero-mask", "no-mask", "pending")
    }
    try:
        write_metrics(path, {"run": run, "volumes": [r.to_dict() for r in records]})
    except (OSError, OutputError) as error:  # never let metrics mask the real outcome
        log(f"warning: metrics not written to {path}: {error}")


def _options_summary(settings: RunSettings, masks: Masks) -> dict[str, Any]:
    """The resolved settings, for metrics.json."""
    summary = _plain(settings)
    summary["models"] = [_plain(choice) for choice in settings.models]
    encoding = summary.pop("probability_encoding")
    if settings.save_probabilities is not None:
        summary["save_probabilities"] = {"dir": settings.save_probabilities, "encoding": encoding}
    postprocess, decided, mask_encoding = masks
    summary["postprocess"] = dataclasses.asdict(postprocess)
    summary["mask_settings"] = (
        {
            **decided.to_dict(),
            "encoding": mask_encoding,
            "file": str(settings.mask.postprocess_file) if settings.mask.postprocess_file else None,
        }
        if decided is not None
        else None
    )
    return _json_ready(summary)


def _json_ready(value: Any) -> Any:
    """Paths as text, tuples as lists (enums are text already): what metrics.json holds."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _outputs(
    output: Path, metrics_path: Path, settings: RunSettings, inputs: VolumeInputs
) -> list[Output]:
    """Every path the run writes: one line here per new output."""
    from runtime.volumes.outputs import Output
    from runtime.volumes.submission import MASK_SUFFIX, partial_path

    ids = tuple(source.id for source in inputs.sources)
    outputs = [
        Output("-o", output),
        Output("-o (its .partial.zip)", partial_path(output)),
        Output("-o (the earlier zip set aside)", _previous_path(output)),
        Output("--metrics", metrics_path),
    ]
    if settings.workdir is not None:
        outputs.append(
            Output("--workdir", settings.workdir, tuple(f"{i}{MASK_SUFFIX}" for i in ids))
        )
    if settings.preview_dir is not None:
        outputs.append(Output("--preview", settings.preview_dir, tuple(f"{i}.png" for i in ids)))
    if settings.save_probabilities is not None:
        from runtime.volumes.probability import MANIFEST_NAME

        files = (*(f"{i}.npy" for i in ids), MANIFEST_NAME)
        outputs.append(Output("--save-probabilities", settings.save_probabilities, files))
    return outputs


def _read_files(inputs: VolumeInputs, settings: RunSettings) -> list[Path]:
    """Every file the run reads: the volumes, test.csv, and the files of each model given."""
    files = [source.path for source in inputs.sources if source.path is not None]
    if inputs.csv_path is not None:
        files.append(inputs.csv_path)
    for spec in (choice.spec for choice in settings.models):
        path = Path(spec)
        if str(spec) != "demo" and path.is_dir():
            files.extend(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
    return files


def _previous_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.previous{output.suffix or '.zip'}")


def _set_aside_earlier_submission(output: Path, log: Log) -> Path | None:
    """Move an earlier run's zip out of the way, so that a failed run never leaves it looking
    like this run's (the scorer takes whatever submission.zip it finds). Returns where it went.
    """
    from runtime.volumes.submission import partial_path

    stale_partial = partial_path(output)
    if stale_partial.is_file():
        stale_partial.unlink()
        log(f"removed {stale_partial}, left by an earlier run")
    if not output.is_file():
        return None
    previous = _previous_path(output)
    output.replace(previous)
    log(f"moved the earlier {output} to {previous}: this run writes a new one or none")
    return previous


def _workdir(requested: Path | None, output: Path) -> tuple[Path, bool]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        return requested, False
    output.parent.mkdir(parents=True, exist_ok=True)
    from runtime.volumes.stale import workdir_prefix

    return Path(tempfile.mkdtemp(prefix=workdir_prefix(output.stem), dir=output.parent)), True


def _clean_workdir(workdir: Path, *, zipped: bool, log: Log) -> None:
    """Remove our temporary mask folder, unless it holds masks that no zip holds yet."""
    if zipped or not any(workdir.glob("*.tif")):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"masks written so far are kept in {workdir}")


def _plain(decision: Any) -> Any:
    if dataclasses.is_dataclass(decision) and not isinstance(decision, type):
        return dataclasses.asdict(decision)
    return str(decision)


def _fail(record: VolumeRecord, message: str, log: Log) -> None:
    record.errors.append(message)
    log(f"error: {message}")


def _missing_message(missing: list[str], csv_path: Path | None) -> str:
    where = f" (listed in {csv_path})" if csv_path else ""
    return f"no file for {len(missing)} id(s){where}: {', '.join(missing[:20])}"


def _ids(records: list[VolumeRecord]) -> str:
    ids = [r.id for r in records]
    return ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


def _print_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
