"""The probe: CUDA and compile failures simulated through Platform, precision by warm-up."""

from __future__ import annotations

import dataclasses
import shutil
import threading

import numpy as np
import pytest
import torch

import runtime.inference.probe
from runtime.contract.errors import DeviceError, InferenceError
from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.probe import (
    BatchForward,
    Platform,
    _compile_error,
    _forward_peak,
    is_out_of_memory,
    planned_compile,
    planned_precision,
    probe_devices,
    torch_warnings,
)
from runtime.inference.segmentation_model import SegmentationModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NO_KERNEL = "CUDA error: no kernel image is available for execution on the device"


class FakeGPUs(Platform):
    """GPUs that torch 'sees'; a GPU with an error fails its test op with it."""

    def __init__(self, *gpus: tuple[str, tuple[int, int], str | None], triton: bool = True):
        self.gpus = gpus
        self.triton = triton

    def torch_version(self) -> str:
        return "2.10.0+cu128"

    def cuda_device_count(self) -> int:
        return len(self.gpus)

    def device_name(self, index: int) -> str:
        return self.gpus[index][0]

    def capability(self, index: int) -> tuple[int, int]:
        return self.gpus[index][1]

    def smoke_test(self, device: str) -> None:
        error = self.gpus[int(device.split(":")[1])][2]
        if error:
            raise RuntimeError(error)

    def triton_available(self) -> bool:
        return self.triton


P100 = ("Tesla P100-PCIE-16GB", (6, 0), NO_KERNEL)
T4 = ("Tesla T4", (7, 5), None)


class LazyCompiler(Platform):
    """torch.compile stand-ins: ``behaviour`` says how the 'compiled' function misbehaves."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0

    def compile(self, function):
        if self.behaviour == "raise-now":
            raise RuntimeError("simulated: dynamo cannot trace this")

        def compiled(batch: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.behaviour == "lazy":
                raise RuntimeError("simulated: Triton needs sm >= 7.0 (found sm_60)")
            if self.behaviour == "wrong":
                return function(batch) + 5.0
            # The probe calls it five times: compile, warm-up and timed forward, then alone and
            # beside a window thread (on the CPU).
            if self.behaviour == "fails-later" and self.calls > 5:
                raise RuntimeError("simulated: recompile failed")
            return function(batch)

        return compiled


def small_model(seed: int = 0) -> SegmentationModel:
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 1, 3, padding=1)
    )
    return SegmentationModel.from_module(module, name="small", normalization=(127.5, 64.0))


def volume(shape=(20, 24, 18), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def options(**overrides) -> InferenceOptions:
    return InferenceOptions(patch_size=(12, 12, 12), batch_size=2, **overrides)


def decision(segmenter: Segmenter, name: str):
    return next(d for d in reversed(segmenter.decisions) if d.name == name)


# --- devices --------------------------------------------------------------------------------
def test_no_cuda_means_the_cpu() -> None:
    devices, chosen = probe_devices("auto", FakeGPUs())
    assert devices == [torch.device("cpu")]
    assert chosen.value == "cpu" and "no CUDA device visible to torch 2.10.0" in chosen.reason


def test_a_p100_under_cu128_fails_its_test_op_and_the_cpu_is_used() -> None:
    devices, chosen = probe_devices("auto", FakeGPUs(P100))
    assert devices == [torch.device("cpu")]
    assert "cuda:0 (Tesla P100-PCIE-16GB, sm_60) failed a test op" in chosen.reason
    assert "no kernel image" in chosen.reason and chosen.reason.endswith("using the CPU")


def test_every_usable_gpu_gets_a_worker() -> None:
    devices, chosen = probe_devices("auto", FakeGPUs(T4, T4))
    assert devices == [torch.device("cuda:0"), torch.device("cuda:1")]
    assert chosen.value == "cuda:0, cuda:1"
    broken = ("Tesla T4", (7, 5), "CUDA error: an illegal memory access was encountered")
    devices, chosen = probe_devices("auto", FakeGPUs(broken, T4))
    assert devices == [torch.device("cuda:1")]
    assert "cuda:0 (Tesla T4, sm_75) failed a test op: CUDA error: an illegal" in chosen.reason


def test_forced_devices() -> None:
    devices, chosen = probe_devices("cpu", FakeGPUs(T4))
    assert devices == [torch.device("cpu")] and "forced" in chosen.reason
    devices, _ = probe_devices("cuda:1", FakeGPUs(T4, T4))
    assert devices == [torch.device("cuda:1")]
    with pytest.raises(DeviceError, match="cannot run: cuda:0 .*no kernel image.*--device auto"):
        probe_devices("cuda", FakeGPUs(P100))
    with pytest.raises(DeviceError, match="sees 1 CUDA device"):
        probe_devices("cuda:2", FakeGPUs(T4))
    with pytest.raises(DeviceError, match="sees no CUDA device"):
        probe_devices("cuda", FakeGPUs())
    with pytest.raises(InferenceError, match="unknown device 'tpu'"):
        probe_devices("tpu", FakeGPUs())


def test_segmenting_after_a_failed_gpu_probe_runs_on_the_cpu() -> None:
    log: list[str] = []
    segmenter = Segmenter(small_model(), options(), log=log.append, platform=FakeGPUs(P100))
    result = segmenter.segment(volume())
    assert result.device == "cpu" and result.precision == "fp32"
    assert any("no kernel image" in line for line in log)
    assert all(line.startswith("decision: ") for line in log)


# --- precision and compile ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capability", "amp", "expected"),
    [
        ((7, 5), "auto", "fp16"),
        ((6, 0), "auto", "fp16"),
        ((8, 0), "auto", "bf16"),
        ((9, 0), "auto", "bf16"),
        (None, "auto", "fp32"),
        ((8, 0), "off", "fp32"),
        ((7, 5), "bf16", "bf16"),
        (None, "fp16", "fp16"),
    ],
)
def test_planned_precision(capability, amp: str, expected: str) -> None:
    device = torch.device("cpu" if capability is None else "cuda:0")
    precision, reason = planned_precision(device, amp, capability)
    assert precision == expected and reason


def test_a_cpu_with_bf16_instructions_keeps_fp32_and_says_bf16_may_pay() -> None:
    cpu = torch.device("cpu")
    precision, reason = planned_precision(cpu, "auto", None, cpu_bf16="avx512_bf16")
    assert precision == "fp32" and "avx512_bf16" in reason and "--amp bf16" in reason
    assert "--amp bf16" not in planned_precision(cpu, "auto", None)[1]
    assert planned_precision(cpu, "bf16", None, cpu_bf16="amx_bf16")[0] == "bf16"


def test_planned_compile() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert planned_compile(cpu, None, None, Platform()) == (
        False,
        "on the CPU, compile time rarely pays back; force with --compile",
    )
    want, reason = planned_compile(gpu, None, (6, 0), FakeGPUs())
    assert not want and "Triton needs sm >= 7.0, this GPU is sm_60" in reason
    assert planned_compile(gpu, None, (7, 5), FakeGPUs(triton=True))[0]
    assert planned_compile(gpu, None, (7, 5), FakeGPUs(triton=False)) == (
        False,
        "Triton is not installed",
    )
    assert planned_compile(cpu, True, None, Platform())[0]
    assert not planned_compile(gpu, False, (9, 0), FakeGPUs())[0]


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("lazy", "the warm-up forward failed: simulated: Triton needs sm >= 7.0 (found sm_60)"),
        ("raise-now", "torch.compile failed: simulated: dynamo cannot trace this"),
        ("wrong", "its output differs from the reference at 100.0% of voxels"),
    ],
)
def test_a_failing_compile_falls_back_to_eager(behaviour: str, why: str) -> None:
    model = small_model()
    eager = Segmenter(model, options(compile=False)).segment(volume())
    segmenter = Segmenter(model, options(compile=True), platform=LazyCompiler(behaviour))
    chosen = decision(segmenter, "compile")
    assert chosen.value == "off"
    assert chosen.reason == f"forced with --compile, but {why}; eager"
    result = segmenter.segment(volume())
    assert not result.compiled
    np.testing.assert_array_equal(result.mask, eager.mask)


def test_a_compile_that_fails_later_switches_to_eager_and_says_so() -> None:
    model = small_model()
    eager = Segmenter(model, options(compile=False)).segment(volume())
    platform = LazyCompiler("fails-later")
    segmenter = Segmenter(model, options(compile=True), platform=platform)
    assert decision(segmenter, "compile").value == "on"
    result = segmenter.segment(volume())
    assert not result.compiled
    assert result.notes == ["compiled forward failed (simulated: recompile failed); now eager"]
    np.testing.assert_array_equal(result.mask, eager.mask)


class CountingCompiler(Platform):
    """The real dynamo front end with a backend that only counts the graphs it is handed."""

    def __init__(self) -> None:
        from torch._dynamo.testing import CompileCounter

        self.counter = CompileCounter()

    def compile(self, function):
        return torch.compile(function, backend=self.counter, dynamic=False)


def test_the_compile_guard_covers_the_graph_the_run_uses() -> None:
    """Real batches are inference tensors; a warm-up on a plain one made the run recompile."""
    torch._dynamo.reset()
    platform = CountingCompiler()
    segmenter = Segmenter(small_model(), options(compile=True), platform=platform)
    assert decision(segmenter, "compile").value == "on"
    compiled = platform.counter.frame_count
    result = segmenter.segment(volume())
    assert result.compiled and result.notes == []
    assert platform.counter.frame_count == compiled == 1


def test_free_memory_and_peak_count_what_a_batch_really_needs(monkeypatch) -> None:
    """CUDA statistics simulated: cached-but-unused memory is free; the peak is one warm forward."""
    calls: list[tuple[str, object]] = []
    stats = {"allocated": 200, "peak": 900}

    def record(name, value):
        def call(device=None):
            calls.append((name, device))
            return value() if callable(value) else value

        return call

    def reset(device=None):
        calls.append(("reset", device))
        stats["peak"] = stats["allocated"]

    gpu = torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "mem_get_info", record("mem_get_info", (1_000, 16_000)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", record("reserved", 700))
    monkeypatch.setattr(torch.cuda, "memory_allocated", record("allocated", stats["allocated"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", record("peak", lambda: stats["peak"]))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    fraction = {"value": 1.0}
    monkeypatch.setattr(
        torch.cuda, "get_per_process_memory_fraction", record("fraction", lambda: fraction["value"])
    )
    assert Platform().free_memory(gpu) == (1_500, 16_000)
    fraction["value"] = 0.05  # a cap of 800 bytes, 200 of them allocated
    assert Platform().free_memory(gpu) == (600, 16_000)
    fraction["value"] = 1.0
    assert Platform().free_memory(torch.device("cpu")) is None

    def forward(batch: torch.Tensor) -> torch.Tensor:
        stats["peak"] = stats["allocated"] + 300  # what this forward allocates at most
        return batch

    model = SegmentationModel.from_module(torch.nn.Identity(), name="identity")
    model.foreground_logits = forward  # type: ignore[method-assign]
    assert _forward_peak(BatchForward(model, gpu, "fp32", False), torch.zeros(1, 1, 2, 2, 2)) == 300
    assert all(device == gpu for _, device in calls)


def test_a_working_compile_is_used() -> None:
    model = small_model()
    eager = Segmenter(model, options(compile=False)).segment(volume())
    platform = LazyCompiler("works")
    result = Segmenter(model, options(compile=True), platform=platform).segment(volume())
    assert result.compiled and platform.calls > 2
    np.testing.assert_array_equal(result.mask, eager.mask)


def test_forced_bf16_on_the_cpu_is_checked_against_fp32() -> None:
    model = small_model()
    segmenter = Segmenter(model, options(amp="bf16"))
    chosen = decision(segmenter, "precision")
    assert (chosen.value, chosen.reason) == (
        "bf16",
        "forced with --amp bf16; the warm-up forward agrees with fp32",
    )
    result = segmenter.segment(volume())
    reference = Segmenter(model, options()).segment(volume())
    assert result.precision == "bf16"
    assert (result.mask == reference.mask).mean() > 0.98


class NoHalfKernels(torch.nn.Module):
    """Fails like an op without a reduced-precision kernel does, only under autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            raise RuntimeError('simulated: "slow_conv3d" not implemented for BFloat16')
        return self.conv(x)


def test_a_precision_whose_warm_up_fails_falls_back_to_fp32() -> None:
    model = SegmentationModel.from_module(NoHalfKernels(), name="nohalf")
    segmenter = Segmenter(model, options(amp="bf16"))
    chosen = decision(segmenter, "precision")
    assert chosen.value == "fp32"
    assert 'but the bf16 warm-up failed (simulated: "slow_conv3d"' in chosen.reason
    assert segmenter.segment(volume()).precision == "fp32"


def test_torch_2_9_0_with_amp_conv3d_gets_a_warning() -> None:
    gpu = torch.device("cuda:0")
    (warning,) = torch_warnings("2.9.0+cu128", gpu, "fp16")
    assert warning.name == "warning" and "4x slower" in warning.reason
    assert torch_warnings("2.9.1+cu128", gpu, "fp16") == []  # cuDNN unknown
    assert torch_warnings("2.9.1+cu128", gpu, "bf16", 91500) == []
    (old_cudnn,) = torch_warnings("2.9.1+cu128", gpu, "bf16", 91002)
    assert "cuDNN 9.10.2" in old_cudnn.reason and "from cuDNN 9.15" in old_cudnn.reason
    assert torch_warnings("2.10.0+cu128", gpu, "fp16", 91002) == []
    assert torch_warnings("2.9.0+cu128", gpu, "fp32") == []
    assert torch_warnings("2.9.0+cpu", torch.device("cpu"), "fp32") == []


@pytest.mark.parametrize(("beside", "used"), [(0.0, True), (1e9, False)])
def test_a_window_thread_is_used_on_the_cpu_only_where_it_is_timed_faster(
    monkeypatch: pytest.MonkeyPatch, beside: float, used: bool
) -> None:
    """Timed, because besides hiding copies the thread changes how OpenMP threads wait."""
    seen: list[bool] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            names = [thread.name for thread in threading.enumerate()]
            seen.append(any(name.startswith("window-prefetch") for name in names))
            return x[:, :1] * 2.0 - 1.0

    monkeypatch.setattr(
        runtime.inference.probe, "_timed_beside_window_thread", lambda forward, sample: beside
    )
    model = SegmentationModel.from_module(Spy(), name="spy")
    segmenter = Segmenter(model, options())
    chosen = decision(segmenter, "window_prefetch")
    assert chosen.value == ("on" if used else "off") and "ms per batch" in chosen.reason
    seen.clear()
    segmenter.segment(volume((30, 30, 30)))
    assert len(seen) > 1 and all(
        flag == used for flag in seen[1:]
    )  # the first batch: no thread yet


def test_the_window_thread_timing_runs_a_real_forward() -> None:
    forward = BatchForward(small_model(), torch.device("cpu"), "fp32", False)
    with torch.inference_mode():
        seconds = runtime.inference.probe._timed_beside_window_thread(
            forward, torch.zeros(2, 1, 12, 12, 12)
        )
    assert seconds > 0
    assert not any(t.name.startswith("window-prefetch") for t in threading.enumerate())


def test_a_compile_failure_is_named_by_its_cause() -> None:
    """dynamo wraps a backend's error in a line that names only the backend."""

    class BackendFailed(RuntimeError):
        def __init__(self, inner: Exception) -> None:
            super().__init__(f"backend='inductor' raised:\n{type(inner).__name__}: {inner}")
            self.inner_exception = inner

    wrapped = BackendFailed(RuntimeError("Triton needs sm >= 7.0\nmore detail"))
    assert _compile_error(wrapped) == (
        "backend='inductor' raised RuntimeError: Triton needs sm >= 7.0"
    )
    assert _compile_error(RuntimeError("plain\nsecond line")) == "plain"


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_batch_forward_applies_channels_last_and_autocast() -> None:
    seen: list[tuple[bool, torch.dtype | None]] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            autocast = torch.is_autocast_enabled("cpu")
            seen.append(
                (
                    x.is_contiguous(memory_format=torch.channels_last_3d),
                    torch.get_autocast_dtype("cpu") if autocast else None,
                )
            )
            return x[:, :1]

    model = SegmentationModel.from_module(Spy(), name="spy")
    batch = torch.zeros(2, 3, 4, 4, 4)  # with one channel both layouts are contiguous
    BatchForward(model, torch.device("cpu"), "bf16", True)(batch)
    BatchForward(model, torch.device("cpu"), "fp32", False)(batch)
    assert seen == [(True, torch.bfloat16), (False, None)]


class LayoutPace(torch.nn.Module):
    """A Conv3d that takes 40 ms longer when its weight is stored in the slow layout."""

    def __init__(self, slow: torch.memory_format) -> None:
        super().__init__()
        self.spread = torch.nn.Conv3d(1, 2, 1)
        self.conv = torch.nn.Conv3d(2, 1, 3, padding=1)  # 2 in-channels: the layouts differ
        self.slow = slow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.weight.is_contiguous(memory_format=self.slow):
            threading.Event().wait(0.04)
        return self.conv(self.spread(x))


@pytest.mark.parametrize(
    ("starts_on", "slow", "expected", "reason"),
    [
        (False, torch.contiguous_format, "on", "faster: "),  # the CPU: oneDNN likes it
        (False, torch.channels_last_3d, "off", "on is not faster: "),
        (True, torch.channels_last_3d, "off", "faster: without it"),  # a GPU under autocast
        (True, torch.contiguous_format, "on", "off is not faster: without it"),
    ],
)
def test_the_other_memory_layout_is_timed_and_kept_only_when_faster(
    starts_on: bool, slow: torch.memory_format, expected: str, reason: str
) -> None:
    from runtime.inference.probe import _timed_layout

    model = SegmentationModel.from_module(LayoutPace(slow), name="pace")
    if starts_on:
        model.to_channels_last()
    current = BatchForward(model, torch.device("cpu"), "fp32", starts_on)
    sample = torch.rand(2, 1, 4, 4, 4)
    with torch.inference_mode():
        reference = current(sample)
        seconds = (
            0.04
            if slow == (torch.channels_last_3d if starts_on else torch.contiguous_format)
            else 0.0
        )
        forward, _, decision = _timed_layout(
            current, seconds + 0.001, sample, reference, Platform()
        )
    assert decision.name == "channels_last" and decision.value == expected, decision
    assert decision.reason.startswith(reason), decision
    assert forward.channels_last == (expected == "on")
    weight = forward.model.network.conv.weight
    assert weight.is_contiguous(
        memory_format=torch.channels_last_3d if expected == "on" else torch.contiguous_format
    )


# torch's own compile stack still calls a deprecated TorchScript helper.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_real_torch_compile_on_the_cpu_is_guarded_and_matches_eager() -> None:
    """The real thing, once: inductor needs a C++ compiler; without one the guard must hold."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(2, 1, 1)
    )
    model = SegmentationModel.from_module(module, name="tiny")
    small = InferenceOptions(patch_size=(8, 8, 8), batch_size=2)
    data = volume((10, 12, 9))
    eager = Segmenter(model, small).segment(data)
    segmenter = Segmenter(model, dataclasses.replace(small, compile=True))
    result = segmenter.segment(data)
    chosen = decision(segmenter, "compile")
    if shutil.which("c++") or shutil.which("g++") or shutil.which("gcc"):
        assert chosen.value == "on", chosen.reason
        assert result.compiled and result.notes == []
    else:
        assert chosen.value == "off" and "warm-up forward failed" in chosen.reason
    np.testing.assert_array_equal(result.mask, eager.mask)
