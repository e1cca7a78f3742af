"""The Segmenter: end-to-end blending, out-of-memory backoff, many volumes, the time budget."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import numpy as np
import pytest
import torch

from runtime.contract.errors import InferenceError, ModelError, VolumeError
from runtime.contract.settings import OptionError, RunRequest, resolve
from runtime.contract.tta import IDENTITY, PRESETS, mirror_transforms
from runtime.inference.engine import InferenceOptions, Segmenter, VolumeResult
from runtime.inference.models import load_model
from runtime.inference.probe import Platform
from runtime.inference.segmentation_model import SegmentationModel
from runtime.inference.sliding_window import logit_threshold
from runtime.inference.time_budget import TimeBudget
from runtime.inference.unet import UNet3D, UNetConfig
from runtime.inference.workers import ordered_map
from runtime.pipeline.models import model_facts
from tests.test_sliding_window import assert_mask_matches, reference_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unet_model(seed: int = 0) -> SegmentationModel:
    torch.manual_seed(seed)
    network = UNet3D(UNetConfig(channels=(4, 8), norm="none"))
    return SegmentationModel.from_module(
        network, name="unet", normalization=(127.5, 64.0), size_multiple=2
    )


def volume(shape=(20, 26, 18), seed=0, dtype=np.uint8) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(dtype)


class Simulated(torch.nn.Module):
    """A small conv net whose failures and slowness tests switch on after construction.

    Class attributes, because the engine works on deep copies of the module.
    """

    max_batch: ClassVar[int | None] = None  # batches above this raise out-of-memory
    only_under_autocast: ClassVar[bool] = False  # ... and only under autocast
    hot: ClassVar[float | None] = None  # ... and only for batches holding a value above this
    delay: ClassVar[float] = 0.0  # seconds per forward

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = type(self)
        limit = cls.max_batch
        autocast = torch.is_autocast_enabled(x.device.type)
        hot = cls.hot is None or float(x.amax()) > cls.hot
        if (
            limit is not None
            and x.shape[0] > limit
            and (autocast or not cls.only_under_autocast)
            and hot
        ):
            raise torch.OutOfMemoryError(
                "simulated: CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"
            )
        if cls.delay:
            time.sleep(cls.delay)
        return self.conv(x)


@pytest.fixture
def simulated() -> SegmentationModel:
    yield SegmentationModel.from_module(Simulated(), name="simulated", normalization=(128.0, 50.0))
    Simulated.max_batch = None
    Simulated.only_under_autocast = False
    Simulated.hot = None
    Simulated.delay = 0.0


def small_options(**overrides) -> InferenceOptions:
    values = {"patch_size": (12, 12, 12), "batch_size": 4}
    values.update(overrides)
    return InferenceOptions(**values)


# --- one volume -----------------------------------------------------------------------------
def test_segment_equals_the_reference_with_tta_and_a_threshold() -> None:
    model = unet_model()
    log: list[str] = []
    options = InferenceOptions(
        patch_size=(11, 16, 13),
        overlap=0.5,
        batch_size=3,
        threshold=0.35,
        tta=mirror_transforms((2, 0)),
    )
    segmenter = Segmenter(model, options, log=log.append)
    assert segmenter.patch_size == (12, 16, 14)  # rounded up to the U-Net's multiple of 2
    data = volume((25, 19, 30), dtype=np.uint16)
    result = segmenter.segment(data)
    expected = reference_logits(
        data, model.network, (12, 16, 14), 0.5, mirror_transforms((0, 2)), (127.5, 64.0)
    )
    assert_mask_matches(result.mask, expected, logit_threshold(0.35))
    assert result.tta == mirror_transforms((0, 2))
    assert result.device == "cpu" and result.precision == "fp32"
    assert result.foreground_fraction == pytest.approx(result.mask.mean())
    assert result.notes == [] and result.seconds > 0
    names = [d.name for d in segmenter.decisions]
    for name in ("device", "patch_size", "batch_size", "normalization", "precision", "compile"):
        assert name in names
    assert "tta" in names
    assert any(line.startswith("decision: normalization = (v - 127.5) / 64 (") for line in log)
    assert "decision: patch_size = 12x16x14 (asked, rounded up to multiples of 2)" in log


def test_benches_reach_the_probed_forward_through_a_public_method() -> None:
    model = unet_model()
    segmenter = Segmenter(model, small_options())
    probed = segmenter.probed_forward()
    assert probed.device == torch.device("cpu") and probed.batch_size == segmenter.batch_size
    assert probed.batch_seconds > 0 and probed.forward.precision == "fp32"
    batch = torch.randn(probed.batch_size, 1, *segmenter.patch_size)
    with torch.inference_mode():
        torch.testing.assert_close(probed.forward(batch), model.foreground_logits(batch))


def test_patch_size_comes_from_the_model_or_a_default() -> None:
    model = unet_model()
    model.recommended = {"patch_size": [8, 8, 8]}
    assert Segmenter(model, InferenceOptions(batch_size=1)).patch_size == (8, 8, 8)
    plain = SegmentationModel.from_module(torch.nn.Conv3d(1, 1, 1), name="plain")
    segmenter = Segmenter(plain, InferenceOptions(batch_size=1))
    assert segmenter.patch_size == (128, 128, 128)
    assert "default" in next(d for d in segmenter.decisions if d.name == "patch_size").reason


@pytest.mark.slow
def test_an_exported_program_fixes_the_window_shape(tmp_path) -> None:
    module = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    program = torch.export.export(module, (torch.zeros(3, 1, 8, 8, 8),))
    torch.export.save(program, str(tmp_path / "fixed.pt2"))
    model = load_model(tmp_path / "fixed.pt2")
    segmenter = Segmenter(model, InferenceOptions())
    assert segmenter.patch_size == (8, 8, 8) and segmenter.batch_size == 3
    result = segmenter.segment(volume((9, 17, 5)))
    expected = reference_logits(volume((9, 17, 5)), module, (8, 8, 8), 0.5)
    assert_mask_matches(result.mask, expected, 0.0)
    asked = RunRequest(models=("fixed.pt2",), patch_size=(16, 16, 16))
    with pytest.raises(OptionError, match=r"fixed was exported for windows of 8x8x8 only"):
        resolve(asked, model_facts(model))


def test_bad_volumes_and_options_fail_with_one_line() -> None:
    segmenter = Segmenter(unet_model(), small_options())
    for bad, message in [
        (np.zeros((4, 4)), "expected a 3D"),
        (np.zeros((0, 4, 4)), "empty"),
        (np.array([["a"]], dtype=object).reshape(1, 1, 1), "unsupported voxel type"),
    ]:
        with pytest.raises(VolumeError, match=message):
            segmenter.segment(bad)
    with pytest.raises(OptionError) as error:  # the settings check what the engine is given
        resolve(RunRequest(overlap=1.0, threshold=0.0, tta=("flip_w",)))  # type: ignore[arg-type]
    text = str(error.value)
    assert "\n" not in text
    assert "--overlap must be in [0, 1)" in text and "--threshold" in text and "--tta" in text


# --- out of memory --------------------------------------------------------------------------
def test_out_of_memory_halves_the_batch_for_that_volume_only(simulated: SegmentationModel) -> None:
    data = volume((30, 20, 20))
    expected = Segmenter(simulated, small_options(batch_size=1)).segment(data).mask
    segmenter = Segmenter(simulated, small_options(batch_size=4))
    Simulated.max_batch = 1
    result = segmenter.segment(data)
    steps = [
        "out of memory on cpu at batch 4 (simulated: CUDA out of memory. Tried to allocate "
        "2.00 GiB); retrying with batch 2",
        "out of memory on cpu at batch 2 (simulated: CUDA out of memory. Tried to allocate "
        "2.00 GiB); retrying with batch 1",
    ]
    assert result.notes == steps and result.batch_size == 1
    np.testing.assert_array_equal(result.mask, expected)
    # Every volume starts again from the probed batch, and reports its own back-off.
    assert segmenter.segment(data).notes == steps
    Simulated.max_batch = None
    again = segmenter.segment(data)
    assert again.notes == [] and again.batch_size == 4


def test_a_back_off_on_the_second_of_three_volumes_is_that_volumes_own(
    simulated: SegmentationModel,
) -> None:
    """Out of memory under autocast on the middle volume only: it ends on the CPU in fp32."""
    segmenter = Segmenter(simulated, small_options(amp="bf16", batch_size=2))
    Simulated.max_batch, Simulated.only_under_autocast = 0, True
    Simulated.hot = 100.0  # normalized: only a voxel far above the uint16 ramp of volume 2
    volumes = [volume((16, 16, 16), seed=i, dtype=np.uint16) for i in range(3)]
    volumes[1][8, 8, 8] = 60_000
    results = [r for _, r in segmenter.segment_many((str(i), v) for i, v in enumerate(volumes))]
    assert [type(r) for r in results] == [VolumeResult] * 3
    first, second, third = results
    assert first.notes == [] and third.notes == []
    assert (third.device, third.precision, third.batch_size) == ("cpu", "bf16", 2)
    assert [note.split("; ")[-1] for note in second.notes] == [
        "retrying with batch 1",
        "retrying on the CPU (fp32, eager)",
    ]
    assert (second.precision, second.batch_size) == ("fp32", 2)


class PassThroughCompiler(Platform):
    """A 'compiler' that returns the function itself: compilation is decided, nothing compiled."""

    def compile(self, function):
        return lambda batch: function(batch)


def test_out_of_memory_drops_compilation_with_the_batch(simulated: SegmentationModel) -> None:
    """A compiled graph was checked for the probed batch shape only."""
    data = volume((30, 20, 20))
    expected = Segmenter(simulated, small_options(batch_size=1)).segment(data).mask
    segmenter = Segmenter(
        simulated, small_options(batch_size=4, compile=True), platform=PassThroughCompiler()
    )
    assert next(d for d in segmenter.decisions if d.name == "compile").value == "on"
    Simulated.max_batch = 2
    result = segmenter.segment(data)
    assert [note.split("; ")[-1] for note in result.notes] == ["retrying with batch 2, eager"]
    assert not result.compiled
    np.testing.assert_array_equal(result.mask, expected)


def test_out_of_memory_ends_on_the_cpu_in_fp32(simulated: SegmentationModel) -> None:
    data = volume((16, 16, 16))
    expected = Segmenter(simulated, small_options()).segment(data).mask
    segmenter = Segmenter(simulated, small_options(amp="bf16", batch_size=2))
    assert next(d for d in segmenter.decisions if d.name == "precision").value == "bf16"
    Simulated.max_batch, Simulated.only_under_autocast = 0, True
    result = segmenter.segment(data)
    assert [note.split("; ")[-1] for note in result.notes] == [
        "retrying with batch 1",
        "retrying on the CPU (fp32, eager)",
    ]
    assert (result.device, result.precision, result.compiled) == ("cpu", "fp32", False)
    np.testing.assert_array_equal(result.mask, expected)


def test_out_of_memory_on_the_cpu_at_batch_one_is_an_error(simulated: SegmentationModel) -> None:
    segmenter = Segmenter(simulated, small_options(batch_size=1))
    Simulated.max_batch = 0
    with pytest.raises(InferenceError, match="out of memory on the CPU at batch 1 .* RAM"):
        segmenter.segment(volume((8, 8, 8)))


def test_a_warm_up_out_of_memory_halves_the_batch(simulated: SegmentationModel) -> None:
    Simulated.max_batch = 1
    segmenter = Segmenter(simulated, small_options(batch_size=4))
    halved = [d for d in segmenter.decisions if "warm-up ran out of memory" in d.reason]
    assert [d.value for d in halved] == ["2", "1"]
    assert segmenter.segment(volume((14, 14, 14))).notes == []


# --- many volumes ---------------------------------------------------------------------------
def test_segment_many_keeps_order_and_isolates_failures() -> None:
    segmenter = Segmenter(unet_model(), small_options())
    items = [
        ("a", volume((12, 12, 12), seed=1)),
        ("bad", np.zeros((3, 3))),
        ("c", volume((20, 9, 15), seed=2)),
    ]
    results = list(segmenter.segment_many(items))
    assert [name for name, _ in results] == ["a", "bad", "c"]
    assert isinstance(results[1][1], VolumeError)
    for (_, data), (_, result) in zip([items[0], items[2]], [results[0], results[2]], strict=True):
        assert isinstance(result, VolumeResult)
        np.testing.assert_array_equal(result.mask, segmenter.segment(data).mask)


def test_an_error_from_the_items_themselves_is_raised_in_order() -> None:
    def items():
        yield "a", volume((12, 12, 12))
        raise OSError("disk gone")

    segmenter = Segmenter(unet_model(), small_options())
    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for name, result in segmenter.segment_many(items()):
            seen.append((name, isinstance(result, VolumeResult)))
    assert seen == [("a", True)]


def test_ordered_map_spreads_work_over_workers_and_keeps_order() -> None:
    used: dict[str, list[int]] = {"w0": [], "w1": []}

    def worker(tag: str, delay: float):
        def run(name: str, value: int) -> int:
            used[tag].append(value)
            time.sleep(delay * (1 + value % 3))
            if value == 5:
                raise ValueError(f"item {name} failed")
            return value * 10

        return run

    items = [(f"v{i}", i) for i in range(10)]
    results = list(ordered_map(items, [worker("w0", 0.01), worker("w1", 0.02)]))
    assert [name for name, _ in results] == [f"v{i}" for i in range(10)]
    values = [r for _, r in results]
    assert isinstance(values[5], ValueError)
    assert values[:5] + values[6:] == [0, 10, 20, 30, 40, 60, 70, 80, 90]
    assert used["w0"] and used["w1"]
    assert sorted(used["w0"] + used["w1"]) == list(range(10))


def test_closing_ordered_map_early_stops_its_threads() -> None:
    before = threading.active_count()
    stream = ordered_map(((str(i), i) for i in range(100)), [lambda n, v: v, lambda n, v: v])
    assert next(stream) == ("0", 0)
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


# --- the time budget ------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MIRROR8 = mirror_transforms((0, 1, 2))


def test_time_budget_reduces_tta_from_the_measured_pace() -> None:
    clock, log = FakeClock(), []
    budget = TimeBudget(
        100.0, MIRROR8, total=10, workers=1, batch_seconds=0.1, log=log.append, clock=clock
    )
    # 27 windows x 8 passes / batch 2 = 108 batches x 0.1 s x 10 volumes = 108 s > 90 s;
    # 6 passes: 81 batches, 81 s.
    transforms, message = budget.transforms_for(27, 2)
    assert transforms == MIRROR8[:6] and log == [message]
    assert "TTA reduced to identity, flip_z, flip_y, flip_x, flip_zy, flip_zx (6 passes)" in message
    clock.now = 8.1
    budget.finished(27, 6, 2, 8.1)
    assert budget.transforms_for(27, 2) == (MIRROR8[:6], None)  # on pace
    clock.now = 28.1
    budget.finished(27, 6, 2, 20.0)  # much slower than the warm-up said
    transforms, message = budget.transforms_for(27, 2)
    assert transforms == MIRROR8[:3] and "28 s used of 100 s; 8 volume(s) left" in message
    clock.now = 29.0
    budget.finished(27, 3, 2, 0.9)  # a fast volume never brings TTA back
    assert budget.transforms_for(27, 2)[0] == MIRROR8[:3]


def test_time_budget_limits() -> None:
    log: list[str] = []
    two = mirror_transforms((0, 1))
    unknown = TimeBudget(1.0, two, total=None, workers=1, batch_seconds=10.0, log=log.append)
    assert not unknown.active and unknown.transforms_for(100, 1) == (two, None)
    hopeless = TimeBudget(1.0, two, total=5, workers=1, batch_seconds=10.0, log=log.append)
    transforms, message = hopeless.transforms_for(100, 1)
    assert transforms == (IDENTITY,) and "none (1 pass)" in message and "over the budget" in message
    one = mirror_transforms((0,))
    two_gpus = TimeBudget(100.0, one, total=10, workers=2, batch_seconds=0.5, log=log.append)
    # 27 x 2 / 2 = 27 batches x 0.5 s = 13.5 s per volume; 5 rounds of 2 = 67.5 s fits.
    assert two_gpus.transforms_for(27, 2) == (one, None)


def test_segment_many_cuts_tta_when_the_pace_would_overrun(simulated: SegmentationModel) -> None:
    log: list[str] = []
    options = small_options(batch_size=1, tta=MIRROR8, time_budget=0.8)
    segmenter = Segmenter(simulated, options, log=log.append)
    Simulated.delay = 0.03  # the warm-up was fast; the real run is not
    items = [(f"v{i}", volume((12, 12, 12), seed=i)) for i in range(5)]
    results = [result for _, result in segmenter.segment_many(items)]
    used = [result.tta for result in results]
    assert used[0] == MIRROR8
    assert len(used[-1]) < 8
    assert all(len(a) >= len(b) for a, b in zip(used, used[1:], strict=False))
    assert all(u == MIRROR8[: len(u)] for u in used)  # always a prefix, the identity first
    first_cut = next(r for r in results if len(r.tta) < 8)
    assert any(note.startswith("time budget: ") for note in first_cut.notes)
    assert any("TTA reduced to" in line for line in log)
    assert any(d.name == "time_budget" and d.value == "0.8 s" for d in segmenter.decisions)


def test_without_a_budget_tta_is_kept(simulated: SegmentationModel) -> None:
    segmenter = Segmenter(simulated, small_options(tta=mirror_transforms((1,))))
    items = ((str(i), volume((12, 12, 12), seed=i)) for i in range(3))
    expected = [mirror_transforms((1,))] * 3
    assert [r.tta for _, r in segmenter.segment_many(items)] == expected


def test_a_rotation_the_patch_cannot_take_is_refused_by_name(simulated: SegmentationModel) -> None:
    with pytest.raises(OptionError, match=r"'rot90_yx_1' would turn the 12x12x16 window"):
        Segmenter(simulated, small_options(patch_size=(12, 12, 16), tta=PRESETS["rot7"]))


class ScarceMemory(Platform):
    """Reports little free device memory, as a crowded GPU would."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes

    def free_memory(self, device: torch.device) -> tuple[int, int]:
        return self.free_bytes, 16 * 2**30


@pytest.mark.parametrize(("free_bytes", "mode"), [(60_000, "slab"), (1_000, "host")])
def test_accumulation_follows_free_memory(free_bytes: int, mode: str) -> None:
    data = volume((40, 20, 20))  # 16,000 voxels: 7 bytes each need 112 kB on the device
    expected = Segmenter(unet_model(), small_options()).segment(data).mask
    segmenter = Segmenter(unet_model(), small_options(), platform=ScarceMemory(free_bytes))
    result = segmenter.segment(data)
    assert result.notes == [
        f"{mode} accumulation on cpu: a whole-volume fp32 accumulator for (40, 20, 20) "
        "does not fit in free memory"
    ]
    np.testing.assert_array_equal(result.mask, expected)


def test_kept_probabilities_come_with_the_same_mask() -> None:
    model = unet_model(seed=4)
    image = volume((22, 20, 18), seed=4)
    plain = Segmenter(model, small_options(threshold=0.4)).segment(image)
    kept = Segmenter(model, small_options(threshold=0.4, keep_probability=True)).segment(image)
    assert plain.probability is None
    assert kept.probability is not None and kept.probability.shape == image.shape
    assert np.array_equal(kept.mask, plain.mask)
    assert np.array_equal(kept.mask, (kept.probability > 0.4).astype(np.uint8)) or (
        np.mean(kept.mask != (kept.probability > 0.4)) < 1e-4  # float rounding at the cut only
    )


# --- non-finite numbers ---------------------------------------------------------------------
def test_nan_and_inf_voxels_are_replaced_by_the_normalization_mean_and_counted() -> None:
    model = unet_model(seed=5)
    segmenter = Segmenter(model, small_options())
    clean = volume((20, 20, 20), seed=5).astype(np.float32)
    dirty = clean.copy()
    dirty[10, 10, 10], dirty[0, 3, 4], dirty[19, 0, 0] = np.nan, np.inf, -np.inf
    filled = clean.copy()
    filled[10, 10, 10] = filled[0, 3, 4] = filled[19, 0, 0] = 127.5  # the model's mean
    result = segmenter.segment(dirty)
    assert result.nonfinite_voxels == 3
    assert result.notes == [
        "3 non-finite voxel(s) (NaN or inf) replaced by 127.5, the model's normalization mean"
    ]
    np.testing.assert_array_equal(result.mask, segmenter.segment(filled).mask)
    assert np.isnan(dirty[10, 10, 10])  # the caller's array is left as it was
    assert segmenter.segment(clean).nonfinite_voxels == 0


class NonFinite(torch.nn.Module):
    """Returns inf where the input is above 1000 (never in warm-ups); under autocast only, if so
    configured."""

    only_under_autocast: ClassVar[bool] = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        if autocast or not type(self).only_under_autocast:
            return torch.where(x > 1000.0, torch.full_like(x, float("inf")), x)
        return x


def test_non_finite_outputs_are_an_error_of_that_volume() -> None:
    model = SegmentationModel.from_module(NonFinite(), name="nonfinite", normalization=(0, 1))
    segmenter = Segmenter(model, small_options(batch_size=1))
    calm, wild = np.zeros((12, 12, 12), np.float32), np.zeros((12, 12, 12), np.float32)
    wild[3, 3, 3] = 5000.0
    results = dict(segmenter.segment_many([("calm", calm), ("wild", wild)]))
    assert isinstance(results["calm"], VolumeResult)
    assert isinstance(results["wild"], ModelError)
    assert "returned non-finite values (NaN or inf)" in str(results["wild"])


def test_non_finite_outputs_under_autocast_are_retried_in_fp32() -> None:
    NonFinite.only_under_autocast = True
    try:
        model = SegmentationModel.from_module(NonFinite(), name="nonfinite", normalization=(0, 1))
        segmenter = Segmenter(model, small_options(batch_size=1, amp="bf16"))
        wild = np.zeros((12, 12, 12), np.float32)
        wild[3, 3, 3] = 5000.0
        result = segmenter.segment(wild)
    finally:
        NonFinite.only_under_autocast = False
    assert result.precision == "fp32" and result.mask[3, 3, 3] == 1
    (note,) = result.notes
    assert note.endswith("under bf16; retrying in fp32")


# --- several GPUs (simulated) ---------------------------------------------------------------
class FakeT4s(Platform):
    """``count`` T4s that pass their test op; the warm-ups are simulated (see below)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def torch_version(self) -> str:
        return "2.10.0+cu128"

    def cuda_device_count(self) -> int:
        return self.count

    def device_name(self, index: int) -> str:
        return "Tesla T4"

    def capability(self, index: int) -> tuple[int, int]:
        return (7, 5)

    def smoke_test(self, device: str) -> None:
        pass

    def empty_cache(self, device: torch.device) -> None:
        pass


@pytest.mark.parametrize(
    ("gpus", "failing", "expected"),
    [(2, {"cuda:1"}, ["cuda:0"]), (2, {"cuda:0"}, ["cuda:1"]), (1, {"cuda:0"}, ["cpu"])],
)
def test_a_gpu_whose_warm_up_runs_out_of_memory_is_dropped_unless_no_gpu_is_left(
    monkeypatch: pytest.MonkeyPatch,
    simulated: SegmentationModel,
    gpus: int,
    failing: set[str],
    expected: list[str],
) -> None:
    import runtime.inference.engine as engine

    real = engine.prepare_forward

    def warm_up(model, device, batch_shape, **_):  # type: ignore[no-untyped-def]
        if str(device) in failing:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        # A working fake GPU warms up on the CPU: only the engine's choice of workers is tested.
        return real(model, torch.device("cpu"), batch_shape, amp="off", compile=False)

    monkeypatch.setattr(engine, "prepare_forward", warm_up)
    segmenter = Segmenter(simulated, small_options(batch_size=2), platform=FakeT4s(gpus))
    assert segmenter.devices == expected
    (dropped,) = [d for d in segmenter.decisions if d.value.endswith(" dropped")]
    assert dropped.value == f"{min(failing)} dropped"
    assert "warm-up ran out of memory at batch 1" in dropped.reason
    devices = [d.value for d in segmenter.decisions if d.name == "device"]
    assert devices[-1] == (expected[0] if expected == ["cpu"] else f"{min(failing)} dropped")


# --- the time budget, from the start of the run ---------------------------------------------
def test_the_time_budget_counts_from_the_start_and_reserves_the_zipping() -> None:
    def first_passes(**changes) -> int:
        clock = FakeClock()
        clock.now = 50.0
        values = {"total": 10, "workers": 1, "batch_seconds": 0.01, "log": [].append}
        values.update(changes)
        budget = TimeBudget(100.0, MIRROR8, clock=clock, **values)  # type: ignore[arg-type]
        return len(budget.transforms_for(27, 2)[0])

    # 27 windows x 8 passes / batch 2 = 108 batches x 0.01 s x 10 volumes = 10.8 s.
    assert first_passes() == 8  # started now: 10.8 s of 90 s
    assert first_passes(start=0.0) == 8  # 50 s spent loading: 60.8 s still fits
    assert first_passes(start=0.0, after=lambda: 30.0) == 7  # 90.8 s with the zipping; 7: 89.5


def test_a_budget_without_tta_to_cut_says_so_and_warns_once_when_over(
    simulated: SegmentationModel,
) -> None:
    log: list[str] = []
    budget = TimeBudget(10.0, (IDENTITY,), total=5, workers=1, batch_seconds=1.0, log=log.append)
    # 4 windows / batch 2 = 2 batches x 1 s x 5 volumes = 10 s, over 90% of 10 s.
    transforms, message = budget.transforms_for(4, 2)
    assert transforms == (IDENTITY,) and "over the budget, and there is no TTA to cut" in message
    assert log == [f"warning: {message}"]
    assert budget.transforms_for(4, 2) == ((IDENTITY,), None)  # once

    segmenter = Segmenter(simulated, small_options(time_budget=3600.0))
    list(segmenter.segment_many([("a", volume((12, 12, 12)))]))
    (decision,) = [d for d in segmenter.decisions if d.name == "time_budget"]
    assert decision.value == "3600 s, warning only" and "no TTA to cut" in decision.reason


# --- windows too big for any memory, and models that return probabilities -------------------
class LittleMemory(Platform):
    def host_free_memory(self) -> int:
        return 2**30


def test_a_window_that_fits_in_no_memory_is_refused_before_any_warm_up() -> None:
    started = time.perf_counter()
    with pytest.raises(InferenceError) as refused:
        Segmenter(
            unet_model(),
            InferenceOptions(patch_size=(1000, 1000, 1000), device="cpu"),
            platform=LittleMemory(),
        )
    message = str(refused.value)
    assert message.startswith("a window of 1000x1000x1000 needs about ")
    assert "more than the 1.0 GiB of memory free on any device here" in message
    assert "use a patch size of at most about " in message and "\n" not in message
    assert time.perf_counter() - started < 60  # estimated on the meta device, never run
    from runtime.inference.probe import estimate_forward_bytes

    # Sane: more than the input and output windows, less than what 1000 channels would need.
    needed = estimate_forward_bytes(unet_model(), (1, 1, 32, 32, 32))
    assert needed is not None and 2 * 4 * 32**3 < needed < 1000 * 4 * 32**3


class EndsInSigmoid(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def test_a_model_that_ends_in_a_sigmoid_is_warned_about() -> None:
    log: list[str] = []
    model = SegmentationModel.from_module(EndsInSigmoid(), name="probabilities")
    Segmenter(model, small_options(batch_size=1), log=log.append)
    (warning,) = [line for line in log if "outputs in [0, 1]" in line]
    assert warning.startswith("decision: warning = outputs in [0, 1] (every warm-up output of")
    assert "ends in a sigmoid" in warning and "export it without its final sigmoid" in warning
    log.clear()
    logits = SegmentationModel.from_module(Simulated(), name="logits", normalization=(128, 50))
    Segmenter(logits, small_options(batch_size=1), log=log.append)
    assert log and not [line for line in log if "outputs in [0, 1]" in line]
