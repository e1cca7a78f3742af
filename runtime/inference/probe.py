"""Device, precision and compile decisions, made by running something rather than trusting flags.

* CUDA is used only if a tiny op (and a tiny Conv3d) succeeds on it: under a cu128 torch a P100
  reports ``is_available()`` but fails at its first kernel.
* Precision: fp16 autocast below sm_80, bf16 from sm_80, fp32 on the CPU; a warm-up forward of the
  real window batch must be finite and agree with fp32, else fp32.
* ``torch.compile`` only where Triton can run (sm >= 7.0); it compiles lazily, so the guard is a
  warm-up forward of the real batch shape, compared with eager and timed; any failure means eager.
* A thread that cuts the next window batch: on a GPU where the host cuts windows (host
  accumulation); on the CPU only if a forward with such a thread beside it is timed faster.

Every decision carries a reason and can be forced. :class:`Platform` is the one door to the
hardware, so tests simulate a failing GPU or a failing compiler by overriding it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from runtime.contract.errors import DeviceError, InferenceError, ModelError, first_line
from runtime.contract.settings import Amp
from runtime.inference.segmentation_model import SegmentationModel
from runtime.inference.sliding_window import prefetch_pays

__all__ = [
    "BatchForward",
    "Decision",
    "Platform",
    "cpu_fallback",
    "estimate_forward_bytes",
    "is_out_of_memory",
    "planned_compile",
    "planned_precision",
    "prepare_forward",
    "probe_devices",
    "torch_warnings",
]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# A faster compiled forward is only worth its recompile risk if it is clearly faster.
_COMPILE_MIN_GAIN = 0.05
# The other memory layout must win by this much to be chosen over the timing noise.
_LAYOUT_MIN_GAIN = 0.05
# Share of warm-up voxels allowed to disagree (|a - b| > 0.05 + 0.05 |b|) with the reference.
_AGREEMENT = 0.99
# A window thread must make a CPU forward this much faster to be used: where it helps at all
# (a busy machine) it was 34-89% faster; two single forwards on a quiet one differed by up to 11%.
_PREFETCH_MIN_GAIN = 0.20


@dataclass
class Decision:
    """One choice the engine made, what it chose, and why."""

    name: str  # e.g. "device", "precision", "compile", "channels_last", "tta"
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} = {self.value} ({self.reason})"


class Platform:
    """What the probe asks of torch and the hardware; override a method to simulate a failure."""

    def torch_version(self) -> str:
        return torch.__version__

    def cuda_device_count(self) -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def device_name(self, index: int) -> str:
        return torch.cuda.get_device_name(index)

    def capability(self, index: int) -> tuple[int, int]:
        return torch.cuda.get_device_capability(index)

    def smoke_test(self, device: str) -> None:
        """Run a tiny op and a tiny Conv3d on ``device``; raise whatever the device raises."""
        values = torch.arange(16, dtype=torch.float32, device=device)
        float((values * 2).sum().item())
        kernel = torch.ones(1, 1, 3, 3, 3, device=device)
        float(torch.nn.functional.conv3d(torch.ones(1, 1, 4, 4, 4, device=device), kernel).sum())

    def cudnn_version(self) -> int | None:
        """The cuDNN loaded at run time (e.g. 91002 for 9.10.2); None without one."""
        if not torch.backends.cudnn.is_available():
            return None
        return torch.backends.cudnn.version()

    def cpu_bf16_instructions(self) -> str | None:
        """The CPU's bf16 instruction set (``amx_bf16`` or ``avx512_bf16``) if it has one (Linux)."""
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("flags"):
                        flags = set(line.partition(":")[2].split())
                        return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)
        except OSError:
            pass
        return None

    def triton_available(self) -> bool:
        return importlib.util.find_spec("triton") is not None

    def compile(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
        return torch.compile(function, dynamic=False)

    def synchronize(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def free_memory(self, device: torch.device) -> tuple[int, int] | None:
        """(free, total) bytes on a CUDA device; None for the CPU.

        Memory this process's caching allocator holds but does not use counts as free: the driver
        reports it as taken, yet a new allocation reuses it (or has it released and retried before
        failing). Without it the warm-ups' and earlier volumes' cached memory would be subtracted
        once here and again as the forward's working memory.
        """
        if device.type != "cuda":
            return None
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        cached = torch.cuda.memory_reserved(device) - allocated
        usable = free + max(cached, 0)
        # A cap set with torch.cuda.set_per_process_memory_fraction (a GPU shared with another
        # process) is where this process's allocations fail, whatever the driver has free.
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if fraction is not None:
            usable = min(usable, max(int(fraction(device) * total) - allocated, 0))
        return usable, total

    def empty_cache(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def host_free_memory(self) -> int | None:
        """Bytes of host memory available to a new allocation (Linux MemAvailable); None if
        unknown."""
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            pass
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors and failed host allocations."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text
    )


# --- devices --------------------------------------------------------------------------------
def probe_devices(requested: str, platform: Platform) -> tuple[list[torch.device], Decision]:
    """The CUDA devices that really run ops (or the CPU), and why.

    ``requested`` is "auto", "cpu", "cuda" (every usable GPU) or "cuda:N". A forced CUDA choice
    that cannot run raises DeviceError instead of silently taking hours on the CPU.
    """
    if requested == "cpu":
        return [torch.device("cpu")], Decision("device", "cpu", "forced with --device cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", requested)
    if requested != "auto" and not match:
        raise InferenceError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")
    count = platform.cuda_device_count()
    forced = requested != "auto"
    if match and match.group(1) is not None:
        index = int(match.group(1))
        if index >= count:
            raise DeviceError(
                f"--device {requested}: torch {platform.torch_version()} sees {count} CUDA "
                "device(s); use --device auto to fall back to the CPU"
            )
        candidates = [index]
    else:
        candidates = list(range(count))
    usable: list[torch.device] = []
    failures: list[str] = []
    names: list[str] = []
    for index in candidates:
        label = f"cuda:{index}"
        description = _describe(platform, index)
        try:
            platform.smoke_test(label)
        except Exception as error:
            failures.append(f"{label} ({description}) failed a test op: {first_line(error)}")
            continue
        usable.append(torch.device(label))
        names.append(description)
    failed = "; ".join(failures)
    if usable:
        how = "forced, and " if forced else ""
        reason = f"{how}{', '.join(names)} passed a test op"
        return usable, Decision(
            "device", ", ".join(map(str, usable)), reason + (f"; {failed}" if failed else "")
        )
    if forced:
        why = failed or f"torch {platform.torch_version()} sees no CUDA device"
        raise DeviceError(f"--device {requested} cannot run: {why}; use --device auto or cpu")
    reason = failed or f"no CUDA device visible to torch {platform.torch_version()}"
    return [torch.device("cpu")], Decision("device", "cpu", f"{reason}; using the CPU")


def _describe(platform: Platform, index: int) -> str:
    try:
        major, minor = platform.capability(index)
        return f"{platform.device_name(index)}, sm_{major}{minor}"
    except Exception as error:  # a broken device may fail even these queries
        return f"unknown GPU: {first_line(error)}"


def torch_warnings(
    version: str, device: torch.device, precision: str, cudnn_version: int | None = None
) -> list[Decision]:
    """Known torch regressions that hit this configuration.

    torch 2.9.0 runs fp16/bf16 Conv3d without cuDNN (about 4x slower); 2.9.1 turns cuDNN back on
    only when the cuDNN loaded at run time is 9.15 or later, which its own wheels do not ship.
    ``cudnn_version`` is ``torch.backends.cudnn.version()`` (9.15.0 is 91500), None if unknown.
    """
    if device.type != "cuda" or precision == "fp32" or not version.startswith("2.9."):
        return []
    fix = "use torch 2.10 or later, or compare with --amp off"
    if version.startswith("2.9.0"):
        why = f"{precision} Conv3d runs about 4x slower on torch 2.9.0 (cuDNN is disabled for it)"
    elif cudnn_version is not None and cudnn_version < 91500:
        why = (
            f"{precision} Conv3d runs about 4x slower on torch {version} with cuDNN "
            f"{_cudnn_text(cudnn_version)}: it uses cuDNN for it only from cuDNN 9.15"
        )
        fix = "install cuDNN 9.15 or later (nvidia-cudnn-cu12>=9.15), use torch 2.10+, or compare with --amp off"
    else:
        return []
    return [Decision("warning", f"torch {version}", f"{why}; {fix}")]


def _cudnn_text(version: int) -> str:
    major, rest = divmod(version, 10000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


# --- the forward pass ------------------------------------------------------------------------
class BatchForward:
    """Runs one normalized window batch on one device in the probed precision and mode.

    If the compiled function fails later (a recompile for a new batch shape can fail as lazily as
    the first compile), it switches to eager for good and notes why.
    """

    def __init__(
        self,
        model: SegmentationModel,
        device: torch.device,
        precision: str,
        channels_last: bool,
        compiled: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self._compiled = compiled
        self.notes: list[str] = []

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._run(self._compiled, batch)
            except Exception as error:
                if is_out_of_memory(error) or isinstance(error, ModelError):
                    raise
                self._compiled = None
                self.notes.append(f"compiled forward failed ({first_line(error)}); now eager")
        return self._run(self.model.foreground_logits, batch)

    def eager(self) -> BatchForward:
        """The same forward without compilation."""
        return BatchForward(self.model, self.device, self.precision, self.channels_last)

    def in_fp32(self) -> BatchForward:
        """The same replica, eager and without autocast."""
        return BatchForward(self.model, self.device, "fp32", self.channels_last)

    def _run(
        self, function: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
    ) -> torch.Tensor:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        if self.precision == "fp32":
            return function(batch)
        with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
            return function(batch)


@dataclass
class PreparedForward:
    forward: BatchForward
    decisions: list[Decision]
    batch_seconds: float  # one warm forward of the chosen configuration, for the time budget
    peak_bytes: int | None  # device memory one batch forward needed (CUDA only)
    prefetch: bool | None = None  # cut windows on a thread (None: where it pays, see BlendSettings)


def prepare_forward(
    model: SegmentationModel,
    device: torch.device,
    batch_shape: tuple[int, ...],
    *,
    amp: Amp | str = Amp.AUTO,
    compile: bool | None = None,
    platform: Platform | None = None,
) -> PreparedForward:
    """Put a replica of ``model`` on ``device`` and settle precision and compilation by warm-ups.

    ``batch_shape`` is the real ``(B, 1, Z, Y, X)`` window batch; warm-ups use exactly it, so the
    compiled graph and cuDNN's autotuning are the ones the run will use. The steps, in order:
    precision (autocast must agree with fp32), memory layout, then compilation (must agree with
    eager and, unless forced, be faster), and on the CPU whether a window thread helps.
    """
    platform = platform or Platform()
    amp = Amp(amp)  # one of the settings' values (runtime.contract.settings)
    capability = platform.capability(device.index or 0) if device.type == "cuda" else None
    cpu_bf16 = platform.cpu_bf16_instructions() if device.type == "cpu" else None
    precision, precision_reason = planned_precision(device, amp, capability, cpu_bf16=cpu_bf16)
    channels_last = device.type == "cuda" and precision != "fp32"
    replica = model.replicate(device)
    if channels_last:
        replica.to_channels_last()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sample = _warm_up_batch(model, batch_shape, device)
    want_compile, compile_reason = planned_compile(device, compile, capability, platform)

    with torch.inference_mode():
        step = _settle_precision(
            BatchForward(replica, device, precision, channels_last),
            precision_reason,
            sample,
            platform,
        )
        decisions = [step.decision]
        step = _settle_layout(step, sample, platform)
        decisions += step.extra
        if want_compile:
            # Forced compilation is kept even if no faster; auto must earn its recompile risk.
            step = _settle_compile(
                step, compile_reason, sample, platform, require_gain=compile is None
            )
        else:
            step = dataclasses.replace(step, decision=Decision("compile", "off", compile_reason))
        decisions.append(step.decision)
        decisions += _output_range_warnings(step.reference, model)
        prefetch, prefetch_decision, seconds = _settle_prefetch(step, sample, platform)
        decisions.append(prefetch_decision)
        peak = _forward_peak(step.forward, sample)
    return PreparedForward(step.forward, decisions, seconds, peak, prefetch)


def _output_range_warnings(output: torch.Tensor | None, model: SegmentationModel) -> list[Decision]:
    """A model that ends in a sigmoid returns probabilities, which read as logits give a wrong
    mask (at threshold 0.5, every voxel is foreground): warn when every warm-up output lies in
    [0, 1], which logits of a trained model on CT-like noise never do."""
    if output is None or output.numel() == 0:
        return []
    low, high = float(output.min()), float(output.max())
    if low < 0.0 or high > 1.0:
        return []
    return [
        Decision(
            "warning",
            "outputs in [0, 1]",
            f"every warm-up output of model {model.name} lies in [{low:.3g}, {high:.3g}], as "
            "if it returned probabilities (it ends in a sigmoid) rather than logits: its masks "
            "will be wrong (at threshold 0.5, every voxel is foreground); export it without "
            "its final sigmoid or softmax",
        )
    ]


class _LivePeak(TorchDispatchMode):
    """The peak bytes of the tensors alive during a forward, counted op by op on any device."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if _is_tensor(t)}
        for tensor in tree_leaves(out):
            if _is_tensor(tensor) and tensor.untyped_storage()._cdata not in inputs:
                size = tensor.untyped_storage().nbytes()  # a new allocation, not an in-place op
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


def estimate_forward_bytes(model: SegmentationModel, batch_shape: tuple[int, ...]) -> int | None:
    """Memory one fp32 forward of ``batch_shape`` needs (weights and the peak of live tensors),
    estimated on the meta device, where nothing is allocated or computed; None if the model
    cannot run there (a TorchScript module, say)."""
    try:
        replica = model.replicate("meta")
        weights = sum(p.numel() * p.element_size() for p in replica.network.parameters())
        tracker = _LivePeak()
        with torch.inference_mode(), tracker:
            sample = torch.empty(batch_shape, device="meta")
            output = replica.foreground_logits(sample)
            del output, sample
        return weights + tracker.peak
    except Exception:
        return None


@dataclass(frozen=True)
class _Step:
    """Where the warm-ups stand: the forward chosen so far, its warm time, the output to agree with."""

    forward: BatchForward
    seconds: float
    reference: torch.Tensor | None  # None: the fp32 reference did not fit in memory
    decision: Decision
    extra: tuple[Decision, ...] = ()


def _settle_precision(
    candidate: BatchForward, reason: str, sample: torch.Tensor, platform: Platform
) -> _Step:
    """fp32 first as the reference; autocast only if its warm-up agrees with it (or is finite)."""
    device, precision = candidate.device, candidate.precision
    reference_forward = BatchForward(candidate.model, device, "fp32", candidate.channels_last)
    # Timed warm whenever its time is compared: cuDNN autotunes on the first call, and the
    # CPU layout and compile choices compare it with other warm forwards.
    warm = precision == "fp32"
    reference: torch.Tensor | None
    try:
        reference, seconds = _timed(reference_forward, sample, platform, repeat=warm)
    except Exception as error:
        # fp16 needs about half the activation memory: a batch may fit only in fp16.
        if precision == "fp32" or not is_out_of_memory(error):
            raise
        reference, seconds = None, 0.0
    if precision == "fp32":
        return _Step(reference_forward, seconds, reference, Decision("precision", "fp32", reason))
    verdict, candidate_out, candidate_seconds = _try(candidate, sample, reference, platform)
    if verdict is None:
        checked = "agrees with fp32" if reference is not None else "is finite"
        decision = Decision("precision", precision, f"{reason}; the warm-up forward {checked}")
        return _Step(candidate, candidate_seconds, candidate_out, decision)
    if reference is None:
        raise torch.OutOfMemoryError(
            f"the fp32 warm-up ran out of memory and the {precision} one {verdict}"
        )
    # Timed again, now warm, so later comparisons are fair.
    _, seconds = _timed(reference_forward, sample, platform, repeat=False)
    decision = Decision(
        "precision", "fp32", f"{reason}; but the {precision} warm-up {verdict}, so fp32"
    )
    return _Step(reference_forward, seconds, reference, decision)


def _settle_layout(step: _Step, sample: torch.Tensor, platform: Platform) -> _Step:
    """channels_last_3d, timed against the other layout (on a GPU only under autocast)."""
    forward = step.forward
    extra: tuple[Decision, ...] = ()
    if forward.device.type == "cuda":
        extra = (Decision("cudnn_benchmark", "on", "window and batch shapes are fixed, tune once"),)
        if not forward.channels_last:
            layout = Decision("channels_last", "off", "only useful for fp16/bf16 on a GPU")
            return dataclasses.replace(step, extra=(layout, *extra))
    forward, seconds, layout = _timed_layout(
        forward, step.seconds, sample, step.reference, platform
    )
    return dataclasses.replace(step, forward=forward, seconds=seconds, extra=(layout, *extra))


def _settle_compile(
    step: _Step, reason: str, sample: torch.Tensor, platform: Platform, *, require_gain: bool
) -> _Step:
    compiled, seconds, verdict = _compile_guarded(
        step.forward, sample, step.reference, step.seconds, platform, require_gain=require_gain
    )
    if compiled is None:
        return dataclasses.replace(
            step, decision=Decision("compile", "off", f"{reason}, but {verdict}; eager")
        )
    return dataclasses.replace(
        step,
        forward=compiled,
        seconds=seconds,
        decision=Decision("compile", "on", f"{reason}; {verdict}"),
    )


def _settle_prefetch(
    step: _Step, sample: torch.Tensor, platform: Platform
) -> tuple[bool | None, Decision, float]:
    """Whether the blending loop cuts the next window batch on a thread, why, and the batch time.

    On a GPU by the rule of :func:`prefetch_pays` (per volume: only with host accumulation). On
    the CPU the thread shares the forward's cores, so all it can hide is its copies, a few percent
    of a forward at most; but it also changes how the forward's OpenMP threads wait: once libgomp
    manages more threads than there are CPUs it stops spin-waiting, which on a busy machine made
    forwards up to 7x faster (bench/RESULTS.md). So on the CPU it is timed: one forward alone, one
    with a window thread beside it.
    """
    forward, device = step.forward, step.forward.device
    if device.type != "cpu":
        _, reason = prefetch_pays(device, "device")
        _, host_reason = prefetch_pays(device, "host")
        decision = Decision(
            "window_prefetch", "with host accumulation only", f"{reason}; {host_reason}"
        )
        return None, decision, step.seconds
    _, alone = _timed(forward, sample, platform, repeat=False)
    beside = _timed_beside_window_thread(forward, sample)
    timing = f"{beside * 1e3:.0f} ms vs {alone * 1e3:.0f} ms per batch"
    if beside < alone * (1.0 - _PREFETCH_MIN_GAIN):
        reason = f"a forward with a window thread beside it is faster on this machine: {timing}"
        return True, Decision("window_prefetch", "on", reason), beside
    reason = f"on the CPU a window thread only competes for the cores; not faster: {timing}"
    return False, Decision("window_prefetch", "off", reason), alone


def _timed_beside_window_thread(forward: BatchForward, sample: torch.Tensor) -> float:
    """Seconds of one forward while a thread cuts a batch of windows, as the blending loop does."""
    source = torch.randint(0, 256, tuple(sample.shape[2:]), dtype=torch.uint8)
    buffer = torch.empty(sample.shape, dtype=torch.float32)

    def cut() -> None:
        with torch.inference_mode():  # thread-local, like the loop's
            for slot in range(buffer.shape[0]):
                torch.sub(source, 127.5, out=buffer[slot, 0])
            buffer.mul_(1.0 / 64.0)

    with ThreadPoolExecutor(1, thread_name_prefix="window-prefetch") as pool:
        pool.submit(cut).result()  # its first ops: the thread has its own OpenMP team from now
        start = time.perf_counter()
        job = pool.submit(cut)
        forward(sample)
        job.result()
        return time.perf_counter() - start


def _forward_peak(forward: BatchForward, sample: torch.Tensor) -> int | None:
    """Device memory one warm forward of the chosen configuration needs; None on the CPU.

    Measured on its own forward, not over the warm-ups: their peak holds cuDNN's autotuning
    workspaces (sized from the free memory) and, under autocast, the fp32 reference forward,
    either of which can be several times what a batch needs, and the engine would then keep
    the accumulators off the GPU for nothing. The allocator's counters are kept on the host at
    allocation time, so no synchronisation is needed.
    """
    if forward.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(forward.device)
    baseline = torch.cuda.memory_allocated(forward.device)
    forward(sample)
    return torch.cuda.max_memory_allocated(forward.device) - baseline


def cpu_fallback(model: SegmentationModel) -> BatchForward:
    """The last resort: fp32, eager, on the CPU."""
    return BatchForward(model.replicate("cpu"), torch.device("cpu"), "fp32", False)


def planned_precision(
    device: torch.device,
    amp: str,
    capability: tuple[int, int] | None,
    *,
    cpu_bf16: str | None = None,
) -> tuple[str, str]:
    """The precision to try before any warm-up, and why; ``capability`` is None on the CPU.

    ``cpu_bf16`` names the CPU's bf16 instructions, if any: fp32 stays the CPU's default (its
    masks are the reference ones), but the reason tells the user that ``--amp bf16`` may pay.
    """
    if amp == "off":
        return "fp32", "forced with --amp off"
    if amp in _DTYPES:
        return amp, f"forced with --amp {amp}"
    if capability is None:
        if cpu_bf16:
            # Measured (bench/RESULTS.md): an nnU-Net ResEnc-M 2.2x faster, masks 99.7% equal.
            return "fp32", (
                f"the default on the CPU; this CPU has {cpu_bf16}, so --amp bf16 may be about "
                "2x faster (masks differ from fp32 on a fraction of a percent of voxels)"
            )
        return "fp32", "CPU autocast is often slower than fp32"
    sm = f"sm_{capability[0]}{capability[1]}"
    if capability >= (8, 0):
        return "bf16", f"{sm} has bf16: fp32's range, no overflow"
    if capability >= (7, 0):
        return "fp16", f"{sm} has fp16 tensor cores but no bf16"
    return "fp16", f"{sm} has no tensor cores, but fp16 halves memory traffic and has no bf16"


def planned_compile(
    device: torch.device,
    requested: bool | None,
    capability: tuple[int, int] | None,
    platform: Platform,
) -> tuple[bool, str]:
    """Whether to try torch.compile, and why (the warm-up guard may still say no)."""
    if requested is False:
        return False, "forced with --no-compile"
    if requested:
        return True, "forced with --compile"
    if capability is None:
        return False, "on the CPU, compile time rarely pays back; force with --compile"
    if capability < (7, 0):
        return False, f"Triton needs sm >= 7.0, this GPU is sm_{capability[0]}{capability[1]}"
    if not platform.triton_available():
        return False, "Triton is not installed"
    return True, f"Triton can run on sm_{capability[0]}{capability[1]}"


def _timed_layout(
    current: BatchForward,
    seconds: float,
    sample: torch.Tensor,
    reference: torch.Tensor | None,
    platform: Platform,
) -> tuple[BatchForward, float, Decision]:
    """Time the other memory layout and keep it only if clearly faster.

    On the CPU oneDNN is often, not always, faster with channels_last_3d (the current forward is
    contiguous). On a GPU under autocast tensor-core Conv3d prefers it (the current forward has
    it), but a network with a norm after every convolution can lose: ``instance_norm`` returns a
    contiguous tensor, so every conv-norm pair copies its activations between layouts.
    """
    flipped = not current.channels_last
    replica = current.model.replicate(current.device).to_channels_last(flipped)
    candidate = BatchForward(replica, current.device, current.precision, flipped)
    verdict, _, candidate_seconds = _try(candidate, sample, reference, platform)
    kept, other = ("on", "off") if current.channels_last else ("off", "on")
    timing = f"{candidate_seconds * 1e3:.0f} ms vs {seconds * 1e3:.0f} ms per batch"
    if not flipped:
        timing = f"without it {timing}"
    if verdict is not None:
        return current, seconds, Decision("channels_last", kept, f"its {other} warm-up {verdict}")
    if candidate_seconds < seconds * (1.0 - _LAYOUT_MIN_GAIN):
        return candidate, candidate_seconds, Decision("channels_last", other, f"faster: {timing}")
    return current, seconds, Decision("channels_last", kept, f"{other} is not faster: {timing}")


def _compile_guarded(
    eager: BatchForward,
    sample: torch.Tensor,
    reference: torch.Tensor | None,
    eager_seconds: float,
    platform: Platform,
    *,
    require_gain: bool,
) -> tuple[BatchForward | None, float, str]:
    """Compile, run the real batch (where a lazy failure shows), compare with eager and time."""
    try:
        function = platform.compile(eager.model.foreground_logits)
    except Exception as error:
        return None, eager_seconds, f"torch.compile failed: {first_line(error)}"
    candidate = BatchForward(
        eager.model, eager.device, eager.precision, eager.channels_last, function
    )
    try:
        # The first call compiles: a Triton or C++ compiler failure surfaces here.
        first = candidate._run(function, sample)
    except Exception as error:
        return None, eager_seconds, f"the warm-up forward failed: {_compile_error(error)}"
    problem = _disagreement(first, reference)
    if problem:
        return None, eager_seconds, f"its output {problem}"
    _, seconds = _timed(candidate, sample, platform, repeat=True)
    if not candidate.compiled:  # it failed on a later call and switched itself to eager
        return None, eager_seconds, candidate.notes[-1]
    if require_gain and seconds > eager_seconds * (1.0 - _COMPILE_MIN_GAIN):
        return (
            None,
            eager_seconds,
            (
                f"it is not faster ({seconds * 1e3:.0f} ms vs eager {eager_seconds * 1e3:.0f} ms per batch)"
            ),
        )
    return (
        candidate,
        seconds,
        (
            f"warm-up matches eager, {seconds * 1e3:.0f} ms vs eager {eager_seconds * 1e3:.0f} ms per batch"
        ),
    )


def _compile_error(error: BaseException) -> str:
    """What went wrong, not dynamo's wrapper line (``backend='inductor' raised:``)."""
    inner = getattr(error, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{first_line(error).removesuffix(':')} {type(inner).__name__}: {first_line(inner)}"
    return first_line(error)


def _try(
    forward: BatchForward,
    sample: torch.Tensor,
    reference: torch.Tensor | None,
    platform: Platform,
) -> tuple[str | None, torch.Tensor | None, float]:
    """(None if usable else what went wrong, its output, seconds of a warm forward)."""
    try:
        output, seconds = _timed(forward, sample, platform, repeat=True)
    except Exception as error:
        if isinstance(error, ModelError):
            raise
        return f"failed ({first_line(error)})", reference, 0.0
    return _disagreement(output, reference), output, seconds


def _timed(
    forward: BatchForward, sample: torch.Tensor, platform: Platform, *, repeat: bool
) -> tuple[torch.Tensor, float]:
    """Output and seconds of one forward; with ``repeat`` a first (warm-up) call is not timed."""
    if repeat:
        forward(sample)
        platform.synchronize(forward.device)
    start = time.perf_counter()
    output = forward(sample)
    platform.synchronize(forward.device)
    seconds = time.perf_counter() - start
    _check_shape(output, sample, forward.model)
    return output.float(), seconds


def _disagreement(output: torch.Tensor, reference: torch.Tensor | None) -> str | None:
    output = output.float()
    if not bool(torch.isfinite(output).all()):
        return "has non-finite values"
    if reference is None:
        return None
    if tuple(output.shape) != tuple(reference.shape):
        return f"has shape {tuple(output.shape)}, expected {tuple(reference.shape)}"
    off = (output - reference).abs() > 0.05 + 0.05 * reference.abs()
    share = float(off.float().mean())
    if share > 1.0 - _AGREEMENT:
        return f"differs from the reference at {share:.1%} of voxels"
    return None


def _check_shape(output: torch.Tensor, sample: torch.Tensor, model: SegmentationModel) -> None:
    expected = (sample.shape[0], model.window_channels, *sample.shape[2:])
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelError(
            f"model {model.name} returned {got} for a window batch of shape "
            f"{tuple(sample.shape)}; it must keep the spatial size and give one foreground "
            "logit per voxel"
        )


def _warm_up_batch(
    model: SegmentationModel, batch_shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Deterministic noise like the real normalized windows (``model.warm_up_batch``).

    An inference tensor, as the real batches are (built under inference_mode): dynamo guards on
    that, so a plain tensor here would make the first real batch recompile, outside the guard.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        return model.warm_up_batch(tuple(batch_shape), generator).float().to(device)
