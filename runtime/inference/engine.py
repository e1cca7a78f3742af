"""The segmentation engine: probe once, then segment volumes without ever losing one.

:class:`Segmenter` probes the devices and settles precision and compilation with warm-up
forwards (see :mod:`runtime.inference.probe`), then runs :func:`runtime.inference.sliding_window.blend` per
volume. Out of memory, it halves the window batch, then accumulates on the host, then runs on the
CPU; that back-off is the volume's own, and the next volume starts again from the probed settings
on its device. ``segment_many`` spreads volumes over the usable GPUs, one worker each, yields in
input order, and reduces test-time augmentation when the measured pace would overrun the time budget.

Non-finite numbers: NaN and inf input voxels are replaced by the model's normalization mean (what
the model reads as "no information"), counted, and noted on the volume; non-finite model outputs
are an error of that volume (after one retry in fp32 when they came from fp16 or bf16).

A model with its own preprocessing (an nnU-Net folder) prepares each volume itself and gets its
results pasted back (:meth:`SegmentationModel.prepare_volume`). An :class:`Ensemble` runs every
member with its own patch, batch, normalization, preprocessing and probed forward, one after the
other on the same device, and fuses their per-volume probabilities or log-odds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from runtime.contract.errors import (
    InferenceError,
    KaggleOfflineError,
    ModelError,
    VolumeError,
    first_line,
)
from runtime.contract.settings import Amp, EnsembleMode, OptionError
from runtime.contract.tta import IDENTITY, Transform, check_patch, describe, mirror_transforms
from runtime.fusion import Fusion, sigmoid
from runtime.inference.cost import check_batch, check_overlap
from runtime.inference.probe import (
    BatchForward,
    Decision,
    Platform,
    cpu_fallback,
    estimate_forward_bytes,
    is_out_of_memory,
    prepare_forward,
    probe_devices,
    torch_warnings,
)
from runtime.inference.segmentation_model import Ensemble, SegmentationModel
from runtime.inference.sliding_window import (
    Blended,
    BlendSettings,
    NonFiniteOutput,
    WindowPlan,
    blend,
    choose_accumulation,
    plan_windows,
    source_itemsize,
)
from runtime.inference.time_budget import TimeBudget
from runtime.inference.workers import ordered_map

__all__ = [
    "DEFAULT_PATCH",
    "Decision",
    "InferenceOptions",
    "ProbedForward",
    "Segmenter",
    "VolumeResult",
]

DEFAULT_PATCH = (128, 128, 128)
_ESTIMATED_FROM = 2**23  # window voxels (about 203^3) from which memory is estimated first
_logger = logging.getLogger("runtime.inference.engine")


@dataclass(frozen=True)
class InferenceOptions:
    """How to run inference; every field can be left at its default.

    ``runtime.pipeline`` builds them from a run's resolved settings
    (:func:`runtime.contract.settings.resolve`), which checked every value: the engine does not
    check them again.
    """

    patch_size: tuple[int, int, int] | None = None  # None -> model.recommended or DEFAULT_PATCH
    # One overlap for every model, or one per ensemble member in order (each its own windows).
    overlap: float | tuple[float, ...] = 0.5
    batch_size: int = 2
    threshold: float = 0.5
    # Test-time transforms, the identity first (runtime.contract.tta); a time budget drops them
    # from the end. None ("auto"): each model's own mirror axes (an nnU-Net checkpoint's; others
    # have none), every flip combination of them.
    tta: tuple[Transform, ...] | None = (IDENTITY,)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: Amp = Amp.AUTO
    compile: bool | None = None  # None = decided by the probe
    time_budget: float | None = None  # seconds for the whole run (segment_many)
    # time.monotonic() when the run began, which the budget counts from (None: when the
    # Segmenter was created, so model loading is not counted but warm-ups are).
    time_budget_start: float | None = None
    # Also return each volume's blended foreground probability (float32, the volume's shape).
    keep_probability: bool = False
    # Every window's result independent of the volume it is cut from and of its batch partners:
    # fixed batch shape (a short last batch padded: on the CPU a sample's output depends on the
    # batch size), and no per-volume back-off (out of memory or a non-finite fp16 output fails
    # the volume instead of changing batch, precision or device). Block runs need it: a block
    # equals the same box of the whole volume bit for bit only if every window does.
    exact: bool = False
    # Pin the memory layout (channels_last_3d) instead of timing it at the warm-up; None: timed.
    channels_last: bool | None = None


@dataclass
class VolumeResult:
    mask: np.ndarray  # uint8 0/1, same shape as the input volume
    foreground_fraction: float
    seconds: float  # inference time for this volume
    device: str
    precision: str  # "fp32" | "fp16" | "bf16"
    compiled: bool
    tta: tuple[Transform, ...]  # what was actually used (the time budget may reduce it)
    notes: list[str] = field(default_factory=list)  # fallbacks taken
    probability: np.ndarray | None = None  # float32 foreground probability, if kept
    batch_size: int = 0  # windows per forward this volume ended with (after any back-off)
    accumulation: str = "device"  # where its accumulator lived: "device", "slab" or "host"
    nonfinite_voxels: int = 0  # NaN/inf input voxels, replaced by the normalization mean


@dataclass
class _Worker:
    """One device's forward and the settings its warm-up settled; every volume starts from them."""

    device: torch.device
    forward: BatchForward
    batch_size: int
    batch_seconds: float
    peak_bytes: int | None  # device memory of one warm-up forward of ``probe_batch`` windows
    probe_batch: int
    prefetch: bool | None = None  # window thread as probed; None: where it pays


@dataclass
class _Attempt:
    """One volume's settings: the worker's, until an out-of-memory back-off changes them."""

    worker: _Worker
    forward: BatchForward
    batch_size: int
    accumulate: str | None = None  # None: chosen from free memory; "host" once backed off

    @classmethod
    def starting(cls, worker: _Worker) -> _Attempt:
        return cls(worker, worker.forward, worker.batch_size)

    @property
    def device(self) -> torch.device:
        # Where the forward runs: a fallback to the CPU swaps the forward, so the two never part.
        return self.forward.device


@dataclass(frozen=True)
class ProbedForward:
    """What the warm-up settled on one device, for benches and tests that time the bare forward
    the engine runs (see :meth:`Segmenter.probed_forward`)."""

    device: torch.device
    forward: BatchForward
    batch_size: int
    batch_seconds: float
    prefetch: bool | None  # a window thread on the CPU, as probed


@dataclass
class _Member:
    """One model of the run (the only one, or an ensemble member) and its workers per device."""

    model: SegmentationModel
    weight: float
    overlap: float
    patch_size: tuple[int, int, int]
    batch_size: int
    tta: tuple[Transform, ...]
    workers: list[_Worker]  # one per device, in the order of Segmenter.devices
    cpu_fallback: BatchForward | None = None  # the last resort, made once when first needed

    def worker(self, slot: int) -> _Worker:
        # A member that lost a GPU at its warm-up shares its remaining workers between slots.
        return self.workers[slot % len(self.workers)]


class Segmenter:
    """Segments 3D volumes with one model; construction probes the devices once.

    ``decisions`` lists every choice made (device, precision, compile, ...) with its reason; each
    is also passed to ``log``. ``platform`` is the door to the hardware, replaceable in tests.
    One Segmenter must not run ``segment`` from several threads at once.
    """

    def __init__(
        self,
        model: SegmentationModel | Ensemble,
        options: InferenceOptions | None = None,
        log: Callable[[str], None] | None = None,
        *,
        platform: Platform | None = None,
    ) -> None:
        self._created = time.monotonic()
        self.model = model
        self.options = options or InferenceOptions()
        self._log = log or _logger.info
        self._platform = platform or Platform()
        self.decisions: list[Decision] = []
        self._member: str | None = None  # the ensemble member whose decisions are being made
        self._cpu_lock = threading.Lock()
        ensemble: Ensemble | None = None
        models: list[SegmentationModel] = []
        if isinstance(model, Ensemble):
            ensemble, models, weights = model, list(model.members), list(model.weights)
        else:
            models, weights = [model], [1.0]
        self.ensemble_mode = ensemble.mode if ensemble else None
        overlaps = self.options.overlap
        if not isinstance(overlaps, tuple):
            overlaps = (overlaps,) * len(models)
        for overlap in overlaps:  # the cost model: an overlap near 1 multiplies the windows
            check_overlap(overlap)
        devices, device_decision = probe_devices(self.options.device, self._platform)
        self._decide(device_decision)
        self._members: list[_Member] = []
        for member, weight, overlap in zip(models, weights, overlaps, strict=True):
            self._member = member.name if ensemble else None
            if ensemble:
                self._decide(Decision("member", member.name, f"weight {weight:.4g}"))
            patch = self._choose_patch(member)
            batch = self._choose_batch(member)
            self._check_patch_fits(member, patch, devices)
            check_batch(batch, patch, member.window_channels, self._platform.host_free_memory())
            self._decide(_normalization_decision(member))
            workers = self._prepare_all(member, patch, batch, devices)
            transforms = self._choose_tta(member, patch)
            self._members.append(
                _Member(member, weight, overlap, patch, batch, transforms, workers)
            )
            # Every member runs on the devices the first one could use.
            devices = [worker.device for worker in workers]
        self._member = None
        if ensemble:
            self._decide(
                Decision(
                    "ensemble",
                    f"{len(models)} models, mean of {ensemble.mode}",
                    "each member blends the whole volume with its own windows; fused per volume",
                )
            )
        if self._workers[0].device.type == "cpu":
            self._decide(Decision("threads", str(torch.get_num_threads()), "torch CPU threads"))
        # What the time budget cuts: dropping axis k from the end drops it from every member.
        self.tta = max((m.tta for m in self._members), key=len)
        version, cudnn = self._platform.torch_version(), self._platform.cudnn_version()
        warnings = {
            warning.reason: warning
            for member in self._members
            for worker in member.workers
            for warning in torch_warnings(version, worker.device, worker.forward.precision, cudnn)
        }
        for warning in warnings.values():  # once, however many GPUs it concerns
            self._decide(warning)

    @property
    def devices(self) -> list[str]:
        return [str(worker.device) for worker in self._workers]

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The first model's window (each ensemble member has its own)."""
        return self._members[0].patch_size

    @property
    def patch_sizes(self) -> list[tuple[int, int, int]]:
        """Every member's window, in the order of the ensemble (one for a single model)."""
        return [member.patch_size for member in self._members]

    @property
    def batch_size(self) -> int:
        return self._members[0].batch_size

    @property
    def _workers(self) -> list[_Worker]:
        return self._members[0].workers

    def probed_forward(self, slot: int = 0, *, member: int = 0) -> ProbedForward:
        """The forward the warm-up settled for one device (``slot``, in the order of
        :attr:`devices`) of one model (``member``, for an ensemble): replica, precision, layout,
        compilation, batch and the CPU window thread, as the engine runs it."""
        worker = self._members[member].worker(slot)
        return ProbedForward(
            worker.device, worker.forward, worker.batch_size, worker.batch_seconds, worker.prefetch
        )

    def segment(self, volume: np.ndarray) -> VolumeResult:
        """Segment one volume (any 3D shape; uint8, uint16 or float) on the first device."""
        return self._segment(0, volume, self.tta, [])

    def segment_windows(self, volume: np.ndarray, plans: list[WindowPlan]) -> VolumeResult:
        """Segment a block of a larger volume with given window grids, one per model member.

        ``volume`` is the input under every window that reaches the block; ``plans`` hold those
        windows of the whole volume's grid, shifted to ``volume``'s corner, in the grid's order.
        Voxels reached by all of their windows come out as the whole volume's run gives them.
        Models that prepare volumes themselves (crop, per-case statistics) are refused.
        """
        for member in self._members:
            if type(member.model).prepare_volume is not SegmentationModel.prepare_volume:
                raise InferenceError(
                    f"model {member.model.name} prepares each volume itself (crop, per-case "
                    "normalization): it cannot run block by block"
                )
        if len(plans) != len(self._members):
            raise ValueError(f"{len(plans)} window plans for {len(self._members)} models")
        return self._segment(0, volume, self.tta, [], plans=plans)

    def segment_many(
        self,
        items: Iterable[tuple[str, np.ndarray]],
        total: int | None = None,
        *,
        after_seconds: Callable[[], float] | None = None,
    ) -> Iterator[tuple[str, VolumeResult | Exception]]:
        """Segment ``(name, volume)`` pairs, spread over the devices, yielded in input order.

        A volume that fails yields its exception and the others go on. ``total`` (or ``len`` of
        ``items``) lets the time budget predict the end of the run; ``after_seconds`` says how
        long the caller will still need after the last volume (zipping), asked at each check.
        """
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        start = self.options.time_budget_start
        budget = TimeBudget(
            self.options.time_budget,
            self.tta,
            total=total,
            workers=len(self._workers),
            # One "batch" of the budget is one batch of every member, one after the other.
            batch_seconds=sum(m.workers[0].batch_seconds for m in self._members),
            log=self._log,
            start=self._created if start is None else start,
            after=after_seconds,
        )
        if self.options.time_budget is not None:
            seconds = f"{self.options.time_budget:g} s"
            if not budget.active:
                reason = "the number of volumes is unknown"
                self._decide(Decision("time_budget", "inactive", reason))
            elif len(self.tta) > 1:
                reason = (
                    "TTA transforms are cut for the remaining volumes if the pace would overrun"
                )
                self._decide(Decision("time_budget", seconds, reason))
            else:
                reason = (
                    "no TTA to cut (--tta): the budget can only warn when the run is "
                    "predicted to overrun it"
                )
                self._decide(Decision("time_budget", f"{seconds}, warning only", reason))
        workers = [
            functools.partial(self._segment_budgeted, slot, budget)
            for slot in range(len(self._workers))
        ]
        return ordered_map(items, workers)

    # --- one volume -----------------------------------------------------------------------
    def _segment_budgeted(
        self, slot: int, budget: TimeBudget, name: str, volume: np.ndarray
    ) -> VolumeResult:
        _check_volume(volume)
        # The budget counts forward batches, of every member, per mirror pass.
        batches = sum(self._batches(member, slot, volume.shape) for member in self._members)
        transforms, message = budget.transforms_for(batches, 1)
        if message:
            name = "tta" if len(self.tta) > 1 else "time_budget"
            self.decisions.append(Decision(name, describe(transforms), message))
        try:
            result = self._segment(slot, volume, transforms, [message] if message else [])
        except Exception:
            budget.finished(batches, len(transforms), 1, None)
            raise
        budget.finished(batches, len(transforms), 1, result.seconds)
        return result

    def _batches(self, member: _Member, slot: int, shape: tuple[int, ...]) -> int:
        windows = plan_windows(shape, member.patch_size, member.overlap).n_windows
        return math.ceil(windows / member.worker(slot).batch_size)

    def _segment(
        self,
        slot: int,
        volume: np.ndarray,
        transforms: tuple[Transform, ...],
        notes: list[str],
        plans: list[WindowPlan] | None = None,
    ) -> VolumeResult:
        """``transforms``: the run's test-time transforms now (a budget may have cut them); each
        member keeps as many of its own."""
        _check_volume(volume)
        start = time.perf_counter()
        fused: Fusion | None = None
        used: tuple[Transform, ...] = ()
        replaced = 0
        for index, member in enumerate(self._members):
            worker = member.worker(slot)
            member_tta = member.tta[: len(transforms)]
            used = max(used, member_tta, key=len)
            finite, replaced = self._finite(member.model, volume, notes)
            prepared = member.model.prepare_volume(finite)
            del finite
            if plans is None:
                plan = plan_windows(prepared.data.shape, member.patch_size, member.overlap)
            else:
                plan = plans[index]
            # An ensemble fuses its members' log-odds, and a resampled volume's logits go back
            # to the volume's grid before thresholding; otherwise one model gives its mask.
            direct = len(self._members) == 1 and prepared.resample_back is None
            if not direct:
                output = "logits"
            else:
                output = "mask+probability" if self.options.keep_probability else "mask"
            # A back-off is this volume's only: the next one starts again from the probed
            # settings.
            attempt = _Attempt.starting(worker)
            with _on(worker.device):
                blended, accumulate = self._blend_with_backoff(
                    member, attempt, prepared.data, plan, member_tta, notes, output
                )
            if direct:
                assert blended.mask is not None
                mask = prepared.restore(blended.mask, 0)
                probability = blended.probability
                if probability is not None:
                    probability = prepared.restore(probability, 0.0)
                return _volume_result(
                    attempt, accumulate, mask, probability, used, notes, start, replaced
                )
            assert blended.logits is not None
            logits = prepared.restore(blended.logits, -math.inf)
            del blended
            if fused is None:
                fused = Fusion(self.ensemble_mode or EnsembleMode.PROBABILITIES, volume.shape)
            fused.add(sigmoid(logits), member.weight)
            del logits
        assert fused is not None
        probability = fused.probability()
        mask = (probability > np.float32(self.options.threshold)).astype(np.uint8)
        kept = probability if self.options.keep_probability else None
        return _volume_result(attempt, accumulate, mask, kept, used, notes, start, replaced)

    def _finite(
        self, model: SegmentationModel, volume: np.ndarray, notes: list[str]
    ) -> tuple[np.ndarray, int]:
        """The volume with NaN and inf voxels replaced, and how many there were.

        A NaN fed to a convolution spreads over every window that sees it and then compares
        false with the threshold, erasing the mask around it; the model's normalization mean
        is what the model reads as "no information" (0 after normalization).
        """
        if volume.dtype.kind != "f":
            return volume, 0
        bad = ~np.isfinite(volume)
        kind = "NaN or inf"
        if beyond_float32(volume):  # a float64 1e300 is inf once the model reads float32
            bad |= np.abs(volume) > np.finfo(np.float32).max
            kind = "NaN, inf or beyond float32's range"
        count = int(np.count_nonzero(bad))
        if not count:
            return volume, 0
        fill = model.normalization[0]
        note = (
            f"{count} non-finite voxel(s) ({kind}) replaced by {fill:g}, the model's "
            "normalization mean"
        )
        if len(self._members) > 1:
            note = f"{model.name}: {note}"
        notes.append(note)
        return np.where(bad, volume.dtype.type(fill), volume), count

    def _blend_with_backoff(
        self,
        member: _Member,
        attempt: _Attempt,
        volume: np.ndarray,
        plan: WindowPlan,
        transforms: tuple[Transform, ...],
        notes: list[str],
        output: str,
    ) -> tuple[Blended, str]:
        model = member.model
        while True:
            accumulate = attempt.accumulate or self._accumulation(
                member, attempt, plan, volume.dtype, output
            )
            if accumulate != "device" and attempt.accumulate is None:
                note = (
                    f"{accumulate} accumulation on {attempt.device}: a whole-volume fp32 "
                    f"accumulator for {plan.padded_shape} does not fit in free memory"
                )
                notes.append(note)
                self._log(note)
            settings = BlendSettings(
                patch=member.patch_size,
                overlap=member.overlap,
                batch_size=attempt.batch_size,
                transforms=transforms,
                threshold=self.options.threshold,
                normalization=model.normalization,
                accumulate=accumulate,
                # The probe timed the window thread for the worker's own CPU forward.
                prefetch=attempt.worker.prefetch if attempt.device.type == "cpu" else None,
                importance=model.importance,
                padding=model.padding,
                channels=model.window_channels,
                pad_last_batch=self.options.exact or _needs_fixed_batch(model, attempt),
            )
            forward = attempt.forward
            seen = len(forward.notes)
            try:
                blended = blend(volume, forward, settings, attempt.device, output, plan=plan)
                notes.extend(forward.notes[seen:])
                return blended, accumulate
            except NonFiniteOutput as error:
                if forward.precision == "fp32" or self.options.exact:
                    raise
                # fp16 overflows where fp32 does not: this volume is tried again in fp32.
                note = f"{first_line(error)} under {forward.precision}; retrying in fp32"
                attempt.forward = forward.in_fp32()
                notes.append(note)
                self._log(note)
                continue
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                reason = first_line(error)
                if self.options.exact:
                    raise InferenceError(
                        f"out of memory on {attempt.device} at batch {attempt.batch_size} "
                        f"({reason}); an exact run never backs off (use a smaller block)"
                    ) from None
            # Outside the except block the traceback, and the tensors its frames hold, are gone.
            self._platform.empty_cache(attempt.device)
            note = self._back_off(member, attempt, accumulate, reason, volume.shape)
            notes.append(note)
            self._log(note)

    def _back_off(
        self,
        member: _Member,
        attempt: _Attempt,
        accumulate: str,
        reason: str,
        shape: tuple[int, ...],
    ) -> str:
        """Take the next step of the out-of-memory chain, for this volume only."""
        where = f"out of memory on {attempt.device} at batch {attempt.batch_size} ({reason})"
        if len(self._members) > 1:
            where = f"{member.model.name}: {where}"
        model = member.model
        static_batch = model.static_input_shape and model.static_input_shape[0]
        if attempt.batch_size > 1 and not static_batch:
            attempt.batch_size //= 2
            if attempt.forward.compiled:
                # The compiled graph was checked against eager for the probed batch shape only; a
                # new one would recompile lazily and unchecked, in a worker thread that may run
                # beside another GPU's (dynamo is not thread-safe).
                attempt.forward = attempt.forward.eager()
                return f"{where}; retrying with batch {attempt.batch_size}, eager"
            return f"{where}; retrying with batch {attempt.batch_size}"
        if attempt.device.type != "cpu" and accumulate != "host":
            attempt.accumulate = "host"
            return f"{where}; retrying with accumulation on the host"
        current = attempt.forward
        if attempt.device.type != "cpu" or current.precision != "fp32" or current.compiled:
            attempt.forward = self._cpu_forward(member)
            attempt.batch_size = member.batch_size
            attempt.accumulate = None
            return f"{where}; retrying on the CPU (fp32, eager)"
        raise InferenceError(
            f"out of memory on the CPU at batch 1 ({reason}) for a volume of shape "
            f"{tuple(shape)}: it needs more RAM than this machine has"
        )

    def _cpu_forward(self, member: _Member) -> BatchForward:
        """The last resort, made once and shared by every worker that falls back to it."""
        with self._cpu_lock:
            if member.cpu_fallback is None:
                member.cpu_fallback = cpu_fallback(member.model)
            return member.cpu_fallback

    def _accumulation(
        self,
        member: _Member,
        attempt: _Attempt,
        plan: WindowPlan,
        dtype: np.dtype,
        output: str,
    ) -> str:
        memory = self._platform.free_memory(attempt.device)  # None: the CPU, RAM is plenty
        if memory is None:
            return "device"
        worker = attempt.worker
        working = (worker.peak_bytes or 0) * attempt.batch_size // worker.probe_batch
        return choose_accumulation(
            plan,
            source_itemsize=source_itemsize(dtype),
            # Probabilities and logits are divided by the weight sum, as is a cut off 0.5.
            weight_sum=self.options.threshold != 0.5 or output != "mask",
            free_bytes=memory[0],
            working_bytes=working,
            channels=member.model.window_channels,
        )

    # --- set-up ---------------------------------------------------------------------------
    def _prepare_all(
        self,
        model: SegmentationModel,
        patch: tuple[int, int, int],
        batch_size: int,
        devices: list[torch.device],
    ) -> list[_Worker]:
        """One worker per device that warms up; the CPU only if no GPU does.

        A GPU that runs out of memory even at batch 1 is dropped: beside GPUs that work, a CPU
        worker would take volumes at a fraction of their pace and finish last.
        """
        prepared = [
            self._prepare(model, patch, batch_size, device, first=i == 0)
            for i, device in enumerate(devices)
        ]
        workers = [worker for worker in prepared if worker is not None]
        if workers:
            return workers
        reason = "no GPU's warm-up fits in its memory, even at batch 1; using the CPU"
        self._decide(Decision("device", "cpu", reason))
        cpu = self._prepare(model, patch, batch_size, torch.device("cpu"), first=False)
        assert cpu is not None  # the CPU raises rather than being dropped
        return [cpu]

    def _prepare(
        self,
        model: SegmentationModel,
        patch: tuple[int, int, int],
        batch_size: int,
        device: torch.device,
        *,
        first: bool,
    ) -> _Worker | None:
        """Warm up on ``device``; out of memory halves the batch, then drops a GPU (None)."""
        batch = batch_size
        static_batch = bool(model.static_input_shape and model.static_input_shape[0])
        while True:
            try:
                prepared = prepare_forward(
                    model,
                    device,
                    (batch, 1, *patch),
                    amp=self.options.amp,
                    compile=self.options.compile,
                    platform=self._platform,
                    channels_last=self.options.channels_last,
                )
                break
            except KaggleOfflineError:
                raise
            except Exception as error:
                if not is_out_of_memory(error):
                    raise ModelError(
                        f"model {model.name}: its warm-up forward of a {batch}-window batch "
                        f"of {_shape_text(patch)} failed on {device}: {_error_text(error)}"
                    ) from None
                reason = first_line(error)
            self._platform.empty_cache(device)
            if batch > 1 and not static_batch:
                batch //= 2
                why = f"the warm-up ran out of memory ({reason}); halved"
                self._decide(Decision("batch_size", str(batch), f"{device}: {why}"))
                continue
            if device.type == "cpu":
                raise InferenceError(
                    f"the warm-up forward of a {batch}-window batch of {patch} ran out "
                    f"of memory on the CPU ({reason}); use a smaller patch size"
                )
            why = f"its warm-up ran out of memory at batch {batch} ({reason})"
            self._decide(Decision("device", f"{device} dropped", why))
            return None
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
            prefetch=prepared.prefetch,
        )

    def _choose_patch(self, model: SegmentationModel) -> tuple[int, int, int]:
        static = model.static_input_shape
        fixed = static[2:] if static and all(isinstance(d, int) for d in static[2:]) else None
        asked = self.options.patch_size
        if fixed:  # a different --patch-size was refused by the settings (ModelFacts.fixed_patch)
            patch = tuple(int(d) for d in fixed)  # type: ignore[arg-type]
            self._decide(
                Decision("patch_size", _shape_text(patch), "fixed by the exported program")
            )
            return patch  # type: ignore[return-value]
        recommended = model.recommended.get("patch_size")
        if asked:
            chosen, source = tuple(asked), "asked"
        elif recommended:
            chosen, source = tuple(recommended), f"recommended by model {model.name}"
        else:
            chosen, source = DEFAULT_PATCH, "default (the model recommends none)"
        multiple = model.size_multiple
        patch = tuple(math.ceil(int(d) / multiple) * multiple for d in chosen)
        if patch != chosen:
            source += f", rounded up to multiples of {multiple}"
        self._decide(Decision("patch_size", _shape_text(patch), source))
        return patch  # type: ignore[return-value]

    def _check_patch_fits(
        self, model: SegmentationModel, patch: tuple[int, int, int], devices: list[torch.device]
    ) -> None:
        """Refuse a window that fits nowhere, before a warm-up tries it (and fills the RAM).

        One window's forward is estimated on the meta device and compared with the memory of
        the largest place it could run: the host (the last resort) or a GPU. Windows under
        _ESTIMATED_FROM voxels are not estimated: any sane model fits them, and the estimate's
        first run costs seconds of imports.
        """
        voxels = math.prod(patch)
        if voxels < _ESTIMATED_FROM:
            return
        places = [self._platform.host_free_memory()]
        places += [
            memory[0]
            for device in devices
            if (memory := self._platform.free_memory(device)) is not None
        ]
        room = max((place for place in places if place is not None), default=None)
        needed = estimate_forward_bytes(model, (1, 1, *patch))
        if room is None or needed is None or needed <= room:
            return
        multiple = model.size_multiple
        # Activations grow with the window's voxels; 80% of the room leaves some to the rest.
        side = int((voxels * 0.8 * room / needed) ** (1 / 3)) // multiple * multiple
        raise InferenceError(
            f"a window of {_shape_text(patch)} needs about {needed / 2**30:.1f} GiB "
            f"for one forward of model {model.name} (estimated without running it), more "
            f"than the {room / 2**30:.1f} GiB of memory free on any device here; use a "
            f"patch size of at most about {max(side, multiple)} per axis (--patch-size)"
        )

    def _choose_batch(self, model: SegmentationModel) -> int:
        static = model.static_input_shape
        if static and isinstance(static[0], int):
            self._decide(Decision("batch_size", str(static[0]), "fixed by the exported program"))
            return static[0]
        batch = self.options.batch_size
        self._decide(Decision("batch_size", str(batch), "windows per forward, fixed shape"))
        return batch

    def _choose_tta(
        self, model: SegmentationModel, patch: tuple[int, int, int]
    ) -> tuple[Transform, ...]:
        """In the order given, the identity first: a time budget drops transforms from the end."""
        asked = self.options.tta
        if asked is None:
            transforms = mirror_transforms(model.mirror_axes or ())
            why = (
                f"auto: the mirror axes model {model.name} was trained with"
                if model.mirror_axes
                else f"auto: model {model.name} names no mirror axes"
            )
        else:
            transforms = asked
            why = "asked with --tta" if len(asked) > 1 else "no test-time transforms asked"
        try:
            check_patch(transforms, patch)
        except ValueError as error:
            raise OptionError(f"model {model.name}: {error}") from None
        self._decide(Decision("tta", describe(transforms), why))
        return transforms

    def _decide(self, decision: Decision) -> None:
        member = self._member
        if member and decision.name != "member":
            decision.reason = f"{member}: {decision.reason}"
        self.decisions.append(decision)
        self._log(f"decision: {decision}")


def beyond_float32(volume: np.ndarray) -> bool:
    """Whether a wider-than-float32 volume holds finite values that float32 cannot hold."""
    if volume.dtype.kind != "f" or volume.dtype.itemsize <= 4 or volume.size == 0:
        return False
    import warnings

    top = np.finfo(np.float32).max
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN volume has no extremes
        return bool(np.nanmax(volume) > top or np.nanmin(volume) < -top)


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


def _error_text(error: BaseException) -> str:
    """One line for a model's own error; TorchScript puts the Python error on its last line."""
    lines = str(error).strip().splitlines()
    if isinstance(error, torch.jit.Error) and lines:
        return first_line(lines[-1])
    return f"{type(error).__name__}: {first_line(error)}"


def _on(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Make ``device`` current in this thread: compiled kernels launch on the current GPU."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _normalization_decision(model: SegmentationModel) -> Decision:
    what, why = model.describe_normalization()
    return Decision("normalization", what, why)


def _needs_fixed_batch(model: SegmentationModel, attempt: _Attempt) -> bool:
    """Only an eager CPU forward gains from running a short last batch at its true size: on a
    GPU cuDNN re-tunes per shape, a compiled graph recompiles, an exported batch is fixed."""
    static = bool(model.static_input_shape and model.static_input_shape[0])
    return attempt.device.type != "cpu" or attempt.forward.compiled or static


def _volume_result(
    attempt: _Attempt,
    accumulation: str,
    mask: np.ndarray,
    probability: np.ndarray | None,
    transforms: tuple[Transform, ...],
    notes: list[str],
    start: float,
    replaced: int,
) -> VolumeResult:
    return VolumeResult(
        mask=mask,
        probability=probability,
        foreground_fraction=float(mask.mean()),
        seconds=time.perf_counter() - start,
        device=str(attempt.device),
        precision=attempt.forward.precision,
        compiled=attempt.forward.compiled,
        tta=transforms,
        notes=notes,
        batch_size=attempt.batch_size,
        accumulation=accumulation,
        nonfinite_voxels=replaced,
    )
