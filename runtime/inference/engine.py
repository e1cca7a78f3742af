"""The segmentation engine: probe once, then segment volumes without ever losing one.

:class:`Segmenter` probes the devices and settles precision and compilation with warm-up
forwards (see :mod:`runtime.inference.probe`), then runs :func:`runtime.inference.sliding_window.blend_volume` per
volume. Out of memory, it halves the window batch, then accumulates on the host, then runs on the
CPU. ``segment_many`` spreads volumes over the usable GPUs, one worker each, yields in input
order, and reduces mirror TTA when the measured pace would overrun the time budget.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from runtime.contract.errors import InferenceError, VolumeError, first_line
from runtime.inference.models import SegmentationModel
from runtime.inference.probe import (
    AMP_CHOICES,
    BatchForward,
    Decision,
    Platform,
    cpu_fallback,
    is_out_of_memory,
    prepare_forward,
    probe_devices,
    torch_warnings,
)
from runtime.inference.sliding_window import (
    Blended,
    BlendSettings,
    WindowPlan,
    blend_volume,
    blend_volume_with_probability,
    choose_accumulation,
    flip_combinations,
    plan_windows,
    source_itemsize,
)
from runtime.inference.time_budget import TimeBudget
from runtime.inference.workers import ordered_map

__all__ = [
    "DEFAULT_PATCH",
    "Decision",
    "InferenceOptions",
    "Segmenter",
    "VolumeResult",
]

DEFAULT_PATCH = (128, 128, 128)
_logger = logging.getLogger("runtime.inference.engine")


@dataclass
class InferenceOptions:
    """How to run inference; every field can be left at its default."""

    patch_size: tuple[int, int, int] | None = None  # None -> model.recommended or DEFAULT_PATCH
    overlap: float = 0.5
    batch_size: int = 2
    threshold: float = 0.5
    # Mirror TTA over all flip combinations of these axes; a time budget drops them from the end.
    tta_axes: tuple[int, ...] = ()
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "auto"  # "auto" | "fp16" | "bf16" | "off"
    compile: bool | None = None  # None = decided by the probe
    time_budget: float | None = None  # seconds for the whole run (segment_many)
    # Also return each volume's blended foreground probability (float32, the volume's shape).
    keep_probability: bool = False


@dataclass
class VolumeResult:
    mask: np.ndarray  # uint8 0/1, same shape as the input volume
    foreground_fraction: float
    seconds: float  # inference time for this volume
    device: str
    precision: str  # "fp32" | "fp16" | "bf16"
    compiled: bool
    tta_axes: tuple[int, ...]  # what was actually used (the time budget may reduce it)
    notes: list[str] = field(default_factory=list)  # fallbacks taken
    probability: np.ndarray | None = None  # float32 foreground probability, if kept


@dataclass
class _Worker:
    """One device's forward and its current (possibly backed-off) settings."""

    device: torch.device
    forward: BatchForward
    batch_size: int
    batch_seconds: float
    peak_bytes: int | None  # device memory of one warm-up forward of ``probe_batch`` windows
    probe_batch: int
    accumulate: str | None = None  # None: chosen per volume from free memory


class Segmenter:
    """Segments 3D volumes with one model; construction probes the devices once.

    ``decisions`` lists every choice made (device, precision, compile, ...) with its reason; each
    is also passed to ``log``. ``platform`` is the door to the hardware, replaceable in tests.
    One Segmenter must not run ``segment`` from several threads at once.
    """

    def __init__(
        self,
        model: SegmentationModel,
        options: InferenceOptions | None = None,
        log: Callable[[str], None] | None = None,
        *,
        platform: Platform | None = None,
    ) -> None:
        self.model = model
        self.options = options or InferenceOptions()
        self._log = log or _logger.info
        self._platform = platform or Platform()
        self.decisions: list[Decision] = []
        self._check_options()
        # In the order given: a time budget drops axes from the end.
        self.tta_axes = tuple(dict.fromkeys(self.options.tta_axes))
        devices, device_decision = probe_devices(self.options.device, self._platform)
        self._decide(device_decision)
        self.patch_size = self._choose_patch()
        self.batch_size = self._choose_batch()
        self._decide(_normalization_decision(model))
        self._workers = [self._prepare(device, first=i == 0) for i, device in enumerate(devices)]
        if devices[0].type == "cpu":
            self._decide(Decision("threads", str(torch.get_num_threads()), "torch CPU threads"))
        passes = 2 ** len(self.tta_axes)
        self._decide(
            Decision(
                "tta",
                f"axes {self.tta_axes} ({passes} passes)" if self.tta_axes else "off",
                "asked with tta_axes" if self.tta_axes else "no mirror axes asked",
            )
        )
        version = self._platform.torch_version()
        warnings = {
            warning.reason: warning
            for worker in self._workers
            for warning in torch_warnings(version, worker.device, worker.forward.precision)
        }
        for warning in warnings.values():  # once, however many GPUs it concerns
            self._decide(warning)

    @property
    def devices(self) -> list[str]:
        return [str(worker.device) for worker in self._workers]

    def segment(self, volume: np.ndarray) -> VolumeResult:
        """Segment one volume (any 3D shape; uint8, uint16 or float) on the first device."""
        return self._segment(self._workers[0], volume, self.tta_axes, [])

    def segment_many(
        self, items: Iterable[tuple[str, np.ndarray]], total: int | None = None
    ) -> Iterator[tuple[str, VolumeResult | Exception]]:
        """Segment ``(name, volume)`` pairs, spread over the devices, yielded in input order.

        A volume that fails yields its exception and the others go on. ``total`` (or ``len`` of
        ``items``) lets the time budget predict the end of the run.
        """
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        budget = TimeBudget(
            self.options.time_budget,
            self.tta_axes,
            total=total,
            workers=len(self._workers),
            batch_seconds=self._workers[0].batch_seconds,
            log=self._log,
        )
        if self.options.time_budget is not None:
            if budget.active:
                reason = "mirror TTA is cut for the remaining volumes if the pace would overrun"
                self._decide(Decision("time_budget", f"{self.options.time_budget:g} s", reason))
            else:
                self._decide(
                    Decision("time_budget", "inactive", "the number of volumes is unknown")
                )
        workers = [functools.partial(self._segment_budgeted, w, budget) for w in self._workers]
        return ordered_map(items, workers)

    # --- one volume -----------------------------------------------------------------------
    def _segment_budgeted(
        self, worker: _Worker, budget: TimeBudget, name: str, volume: np.ndarray
    ) -> VolumeResult:
        _check_volume(volume)
        n_windows = self._plan(volume).n_windows
        axes, message = budget.axes_for(n_windows, worker.batch_size)
        if message:
            self.decisions.append(Decision("tta", _axes_text(axes), message))
        batch = worker.batch_size
        try:
            result = self._segment(worker, volume, axes, [message] if message else [])
        except Exception:
            budget.finished(n_windows, 2 ** len(axes), batch, None)
            raise
        budget.finished(n_windows, 2 ** len(axes), batch, result.seconds)
        return result

    def _segment(
        self, worker: _Worker, volume: np.ndarray, axes: tuple[int, ...], notes: list[str]
    ) -> VolumeResult:
        _check_volume(volume)
        start = time.perf_counter()
        plan = self._plan(volume)
        flips = flip_combinations(axes)
        with _on(worker.device):
            blended = self._blend_with_backoff(worker, volume, plan, flips, notes)
        mask = blended.mask
        assert mask is not None
        return VolumeResult(
            mask=mask,
            probability=blended.probability,
            foreground_fraction=float(mask.mean()),
            seconds=time.perf_counter() - start,
            device=str(worker.device),
            precision=worker.forward.precision,
            compiled=worker.forward.compiled,
            tta_axes=axes,
            notes=notes,
        )

    def _blend_with_backoff(
        self,
        worker: _Worker,
        volume: np.ndarray,
        plan: WindowPlan,
        flips: tuple[tuple[int, ...], ...],
        notes: list[str],
    ) -> Blended:
        while True:
            accumulate = worker.accumulate or self._accumulation(worker, plan, volume.dtype)
            if accumulate != "device" and worker.accumulate is None:
                note = (
                    f"{accumulate} accumulation on {worker.device}: a whole-volume fp32 "
                    f"accumulator for {plan.padded_shape} does not fit in free memory"
                )
                notes.append(note)
                self._log(note)
            settings = BlendSettings(
                patch=self.patch_size,
                overlap=self.options.overlap,
                batch_size=worker.batch_size,
                flips=flips,
                threshold=self.options.threshold,
                normalization=self.model.normalization,
                accumulate=accumulate,
            )
            seen = len(worker.forward.notes)
            try:
                if self.options.keep_probability:
                    blended = blend_volume_with_probability(
                        volume, worker.forward, settings, worker.device
                    )
                else:
                    mask = blend_volume(volume, worker.forward, settings, worker.device)
                    blended = Blended(mask=mask)
                notes.extend(worker.forward.notes[seen:])
                return blended
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                reason = first_line(error)
            # Outside the except block the traceback, and the tensors its frames hold, are gone.
            self._platform.empty_cache(worker.device)
            note = self._back_off(worker, accumulate, reason, volume.shape)
            notes.append(note)
            self._log(note)

    def _back_off(
        self, worker: _Worker, accumulate: str, reason: str, shape: tuple[int, ...]
    ) -> str:
        """Take the next step of the out-of-memory chain; it sticks for later volumes."""
        where = f"out of memory on {worker.device} at batch {worker.batch_size} ({reason})"
        static_batch = self.model.static_input_shape and self.model.static_input_shape[0]
        if worker.batch_size > 1 and not static_batch:
            worker.batch_size //= 2
            if worker.forward.compiled:
                # The compiled graph was checked against eager for the probed batch shape only; a
                # new one would recompile lazily and unchecked, in a worker thread that may run
                # beside another GPU's (dynamo is not thread-safe).
                worker.forward = worker.forward.eager()
                return f"{where}; retrying with batch {worker.batch_size}, eager"
            return f"{where}; retrying with batch {worker.batch_size}"
        if worker.device.type != "cpu" and accumulate != "host":
            worker.accumulate = "host"
            return f"{where}; retrying with accumulation on the host"
        current = worker.forward
        if current.device.type != "cpu" or current.precision != "fp32" or current.compiled:
            worker.forward = cpu_fallback(self.model)
            worker.device = torch.device("cpu")
            worker.batch_size = self.batch_size
            worker.accumulate = None
            return f"{where}; retrying on the CPU (fp32, eager)"
        raise InferenceError(
            f"out of memory on the CPU at batch 1 ({reason}) for a volume of shape "
            f"{tuple(shape)}: it needs more RAM than this machine has"
        )

    def _accumulation(self, worker: _Worker, plan: WindowPlan, dtype: np.dtype) -> str:
        memory = self._platform.free_memory(worker.device)  # None: the CPU, RAM is plenty
        if memory is None:
            return "device"
        working = (worker.peak_bytes or 0) * worker.batch_size // worker.probe_batch
        mode = choose_accumulation(
            plan,
            source_itemsize=source_itemsize(dtype),
            weight_sum=self.options.threshold != 0.5 or self.options.keep_probability,
            free_bytes=memory[0],
            working_bytes=working,
        )
        return mode

    def _plan(self, volume: np.ndarray) -> WindowPlan:
        return plan_windows(volume.shape, self.patch_size, self.options.overlap)

    # --- set-up ---------------------------------------------------------------------------
    def _prepare(self, device: torch.device, *, first: bool) -> _Worker:
        """Warm up on ``device``; a warm-up out of memory halves the batch, then uses the CPU."""
        batch = self.batch_size
        static_batch = bool(self.model.static_input_shape and self.model.static_input_shape[0])
        while True:
            try:
                prepared = prepare_forward(
                    self.model,
                    device,
                    (batch, 1, *self.patch_size),
                    amp=self.options.amp,
                    compile=self.options.compile,
                    platform=self._platform,
                )
                break
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                reason = first_line(error)
            self._platform.empty_cache(device)
            if batch > 1 and not static_batch:
                batch //= 2
                why = f"the warm-up ran out of memory ({reason}); halved"
                self._decide(Decision("batch_size", str(batch), f"{device}: {why}"))
                continue
            if device.type == "cpu":
                raise InferenceError(
                    f"the warm-up forward of a {batch}-window batch of {self.patch_size} ran out "
                    f"of memory on the CPU ({reason}); use a smaller patch size"
                )
            why = f"{device} ran out of memory at batch {batch} ({reason}); using the CPU"
            self._decide(Decision("device", "cpu", why))
            device, batch, first = torch.device("cpu"), self.batch_size, False
        for decision in prepared.decisions:
            if not first:
                decision.reason = f"{device}: {decision.reason}"
            self._decide(decision)
        return _Worker(
            device=device,
            forward=prepared.forward,
            batch_size=batch,
            batch_seconds=prepared.batch_seconds,
            peak_bytes=prepared.peak_bytes,
            probe_batch=batch,
        )

    def _choose_patch(self) -> tuple[int, int, int]:
        static = self.model.static_input_shape
        fixed = static[2:] if static and all(isinstance(d, int) for d in static[2:]) else None
        asked = self.options.patch_size
        if fixed:
            if asked and tuple(asked) != tuple(fixed):
                raise InferenceError(
                    f"model {self.model.name} was exported for windows of {tuple(fixed)} only, "
                    f"not {tuple(asked)}; drop the patch size or re-export with dynamic shapes"
                )
            patch = tuple(int(d) for d in fixed)  # type: ignore[arg-type]
            self._decide(
                Decision("patch_size", _shape_text(patch), "fixed by the exported program")
            )
            return patch  # type: ignore[return-value]
        recommended = self.model.recommended.get("patch_size")
        if asked:
            chosen, source = tuple(asked), "asked"
        elif recommended:
            chosen, source = tuple(recommended), f"recommended by model {self.model.name}"
        else:
            chosen, source = DEFAULT_PATCH, "default (the model recommends none)"
        multiple = self.model.size_multiple
        patch = tuple(math.ceil(int(d) / multiple) * multiple for d in chosen)
        if patch != chosen:
            source += f", rounded up to multiples of {multiple}"
        self._decide(Decision("patch_size", _shape_text(patch), source))
        return patch  # type: ignore[return-value]

    def _choose_batch(self) -> int:
        static = self.model.static_input_shape
        if static and isinstance(static[0], int):
            self._decide(Decision("batch_size", str(static[0]), "fixed by the exported program"))
            return static[0]
        batch = self.options.batch_size
        self._decide(Decision("batch_size", str(batch), "windows per forward, fixed shape"))
        return batch

    def _check_options(self) -> None:
        o = self.options
        problems = []
        if not 0.0 <= o.overlap < 1.0:
            problems.append(f"overlap must be in [0, 1), got {o.overlap}")
        if not 0.0 < o.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {o.threshold}")
        if not isinstance(o.batch_size, int) or o.batch_size < 1:
            problems.append(f"batch size must be a positive integer, got {o.batch_size}")
        if any(axis not in (0, 1, 2) for axis in o.tta_axes):
            problems.append(f"TTA axes must be among 0, 1, 2 (z, y, x), got {o.tta_axes}")
        if o.amp not in AMP_CHOICES:
            problems.append(f"amp must be one of {', '.join(AMP_CHOICES)}, got {o.amp!r}")
        if o.patch_size is not None and (
            len(o.patch_size) != 3 or any(int(d) < 1 for d in o.patch_size)
        ):
            problems.append(f"patch size must be 3 positive integers, got {o.patch_size}")
        if o.time_budget is not None and not o.time_budget > 0:
            problems.append(f"time budget must be positive seconds, got {o.time_budget}")
        if problems:
            raise InferenceError("invalid inference options: " + "; ".join(problems))

    def _decide(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self._log(f"decision: {decision}")


def _check_volume(volume: np.ndarray) -> None:
    if not isinstance(volume, np.ndarray):
        raise VolumeError(f"expected a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise VolumeError(f"expected a 3D (Z, Y, X) volume, got shape {volume.shape}")
    if 0 in volume.shape:
        raise VolumeError(f"the volume is empty (shape {volume.shape})")
    if not (np.issubdtype(volume.dtype, np.number) or volume.dtype == np.bool_):
        raise VolumeError(f"unsupported voxel type {volume.dtype}: expected integers or floats")
    if np.issubdtype(volume.dtype, np.complexfloating):
        raise VolumeError(f"unsupported voxel type {volume.dtype}: expected integers or floats")


def _on(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Make ``device`` current in this thread: compiled kernels launch on the current GPU."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _axes_text(axes: tuple[int, ...]) -> str:
    return f"axes {axes} ({2 ** len(axes)} passes)" if axes else "off"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _normalization_decision(model: SegmentationModel) -> Decision:
    # A model whose file carries no config gets raw voxel values: say so, since a model trained
    # on [0, 1] or standardised inputs then gives silently wrong masks.
    mean, std = model.normalization
    if (mean, std) == (0.0, 1.0):
        return Decision(
            "normalization",
            "none",
            "raw voxel values: the model has no config.json normalization; add one if it was "
            "trained on scaled inputs",
        )
    return Decision("normalization", f"(v - {mean:g}) / {std:g}", f"from model {model.name}")
