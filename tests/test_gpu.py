"""The GPU path on a real CUDA device: probe, autocast, compile, layout, accumulation, memory.

Opt-in (``pytest -m gpu``; ``bench/gpu_check.sh`` runs them) and skipped cleanly where torch sees
no CUDA device or the device fails a test op (a P100 under a cu128 torch). Everything runs the
trained demo model, whose masks mean something, on synthetic papyrus volumes.

Stated tolerances, autocast (fp16/bf16) against fp32 on the same windows:

* masks: at least 99.5% of voxels equal;
* blended logits: ``|half - fp32| <= 0.1 + 0.05 * |fp32|`` on at least 99.9% of voxels.

Compiled against eager and channels_last on against off run different kernels (fused by
inductor; NDHWC against NCDHW cuDNN kernels, TF32 even in fp32), which round differently: their
masks may differ on at most 0.1% of voxels, and only where the blended logit lies within 0.5 of
the threshold logit. The same kernels on other data paths (device, slab and host accumulation; two
replicas) must give the same masks up to ties at the threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.probe import (
    BatchForward,
    Platform,
    planned_compile,
    planned_precision,
    probe_devices,
)
from runtime.inference.segmentation_model import SegmentationModel
from runtime.inference.sliding_window import BlendSettings, blend_volume
from runtime.pipeline.models import load_model
from runtime.samples.sample import write_lzw_stack
from runtime.samples.synthetic import synthetic_volume
from runtime.volumes.scoring import dice_score
from runtime.volumes.submission import validate_submission

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PATCH = (64, 64, 64)  # the demo model's own
HALF_MASK_AGREEMENT = 0.995
HALF_LOGIT_SHARE = 0.999
OTHER_KERNELS_SHARE = 1e-3  # most voxels whose mask may flip when the kernels differ
NEAR_CUT = 0.5  # ... and how close to the threshold logit they must be
SAME_KERNELS = 0.9999  # least share of equal mask voxels when only the data path differs

pytestmark = pytest.mark.gpu


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA device")
    try:
        Platform().smoke_test("cuda:0")
    except Exception as error:  # e.g. no kernel image for this GPU in this torch build
        pytest.skip(f"cuda:0 fails a test op: {str(error).splitlines()[0]}")
    return torch.device("cuda:0")


@pytest.fixture(scope="module")
def demo(cuda: torch.device) -> SegmentationModel:
    return load_model("demo")


@pytest.fixture(scope="module")
def papyrus(cuda: torch.device):
    """A synthetic chunk (image, label) of 3 x 4 x 4 windows' worth."""
    chunk = synthetic_volume((96, 128, 128), 3)
    return chunk.image, chunk.label


@pytest.fixture(autouse=True)
def _release_memory() -> Iterator[None]:
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def options(**changes: object) -> InferenceOptions:
    """cuda:0, the demo's patch, no compilation unless a test asks (it costs a minute)."""
    values: dict[str, object] = {"device": "cuda:0", "patch_size": PATCH, "compile": False}
    values.update(changes)
    return InferenceOptions(**values)  # type: ignore[arg-type]


def expected_precision() -> str:
    return "bf16" if torch.cuda.get_device_capability(0) >= (8, 0) else "fp16"


def blended_logits(
    volume: np.ndarray, forward: BatchForward, model: SegmentationModel, **changes: object
) -> np.ndarray:
    settings = BlendSettings(PATCH, normalization=model.normalization, **changes)  # type: ignore[arg-type]
    return blend_volume(volume, forward, settings, forward.device, output="logits")


def forward_of(
    model: SegmentationModel, device: torch.device, precision: str, channels_last: bool
) -> BatchForward:
    replica = model.replicate(device)
    if channels_last:
        replica.to_channels_last()
    return BatchForward(replica, device, precision, channels_last)


def tiled(chunk: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A large volume from a small synthetic chunk (generating 320^3 directly takes minutes)."""
    reps = [-(-s // c) for s, c in zip(shape, chunk.shape, strict=True)]
    return np.ascontiguousarray(np.tile(chunk, reps)[: shape[0], : shape[1], : shape[2]])


def decisions(segmenter: Segmenter) -> dict[str, object]:
    return {d.name: d for d in segmenter.decisions}


# --- the probe ------------------------------------------------------------------------------
def test_the_probe_runs_a_real_op_and_picks_precision_by_capability(
    cuda: torch.device, demo: SegmentationModel
) -> None:
    platform = Platform()
    devices, decision = probe_devices("auto", platform)
    assert cuda in devices and decision.value.startswith("cuda:0")
    capability = torch.cuda.get_device_capability(0)
    sm = f"sm_{capability[0]}{capability[1]}"
    assert sm in decision.reason and torch.cuda.get_device_name(0) in decision.reason
    assert planned_precision(cuda, "auto", capability)[0] == expected_precision()
    want, why = planned_compile(cuda, None, capability, platform)
    assert want == (capability >= (7, 0) and platform.triton_available()), why

    segmenter = Segmenter(demo, options())
    chosen = decisions(segmenter)
    precision = chosen["precision"]
    assert precision.value == expected_precision(), precision
    assert sm in precision.reason and "agrees with fp32" in precision.reason
    layout = chosen["channels_last"]  # on under autocast unless contiguous was timed faster
    assert layout.value in ("on", "off") and "ms per batch" in layout.reason, layout
    assert chosen["cudnn_benchmark"].value == "on" and torch.backends.cudnn.benchmark
    assert chosen["window_prefetch"].value == "with host accumulation only"
    assert segmenter.devices == ["cuda:0"]


def test_forced_fp16_is_used_whatever_the_capability(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    image, label = papyrus
    segmenter = Segmenter(demo, options(amp="fp16"))
    precision = decisions(segmenter)["precision"]
    assert precision.value == "fp16" and "forced with --amp fp16" in precision.reason
    result = segmenter.segment(image)
    assert result.precision == "fp16" and result.device == "cuda:0"
    assert dice_score(result.mask, label) > 0.8


# --- precision, compilation, layout ---------------------------------------------------------
def test_autocast_masks_and_logits_agree_with_fp32_on_the_trained_model(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    image, label = papyrus
    fp32 = Segmenter(demo, options(amp="off")).segment(image)
    half = Segmenter(demo, options()).segment(image)
    assert fp32.precision == "fp32" and half.precision == expected_precision()
    equal = float((fp32.mask == half.mask).mean())
    assert equal >= HALF_MASK_AGREEMENT, f"masks equal on {equal:.4%} of voxels"
    assert dice_score(half.mask, label) > 0.8

    reference = blended_logits(image, forward_of(demo, cuda, "fp32", False), demo)
    logits = blended_logits(image, forward_of(demo, cuda, half.precision, True), demo)
    difference = np.abs(logits - reference)
    within = float((difference <= 0.1 + 0.05 * np.abs(reference)).mean())
    assert within >= HALF_LOGIT_SHARE, (
        f"{half.precision} logits within tolerance on {within:.4%} of voxels; |difference| "
        f"median {np.median(difference):.3g}, max {difference.max():.3g}"
    )


def test_compiled_and_eager_give_the_same_mask(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    image, _ = papyrus
    torch._dynamo.reset()  # nothing earlier counts against the recompile limit
    try:
        eager = Segmenter(demo, options()).segment(image)
        segmenter = Segmenter(demo, options(compile=True))
        compiled_decision = decisions(segmenter)["compile"]
        assert compiled_decision.value == "on", compiled_decision
        compiled = segmenter.segment(image)
    finally:
        torch._dynamo.reset()
    assert compiled.compiled and not eager.compiled and compiled.notes == []
    logits = blended_logits(image, forward_of(demo, cuda, eager.precision, True), demo)
    differ = compiled.mask != eager.mask
    assert differ.mean() <= OTHER_KERNELS_SHARE, f"masks differ on {differ.mean():.4%} of voxels"
    assert np.all(np.abs(logits[differ]) < NEAR_CUT), np.abs(logits[differ]).max()


def test_the_compile_guard_falls_back_to_eager_when_the_backend_fails(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    class FailingBackend(Platform):
        """Real torch.compile with a backend that raises: it fails lazily, at the first call."""

        def compile(self, function):
            def backend(graph, example_inputs):
                raise RuntimeError("simulated: this backend cannot compile the graph")

            return torch.compile(function, backend=backend, dynamic=False)

    image, _ = papyrus
    torch._dynamo.reset()
    try:
        segmenter = Segmenter(demo, options(compile=True), platform=FailingBackend())
        result = segmenter.segment(image)
    finally:
        torch._dynamo.reset()
    decision = decisions(segmenter)["compile"]
    assert decision.value == "off", decision
    assert "simulated: this backend cannot compile the graph" in decision.reason
    assert not result.compiled
    np.testing.assert_array_equal(result.mask, Segmenter(demo, options()).segment(image).mask)


@pytest.mark.parametrize("precision", ["fp32", "half"])
def test_channels_last_on_and_off_give_the_same_masks(
    cuda: torch.device, demo: SegmentationModel, papyrus, precision: str
) -> None:
    image, _ = papyrus
    precision = expected_precision() if precision == "half" else precision
    on = forward_of(demo, cuda, precision, True)
    weights = [p for p in on.model.network.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    off = forward_of(demo, cuda, precision, False)
    logits_on = blended_logits(image, on, demo)
    logits_off = blended_logits(image, off, demo)
    differ = (logits_on > 0) != (logits_off > 0)
    assert differ.mean() <= OTHER_KERNELS_SHARE, f"masks differ on {differ.mean():.4%} of voxels"
    assert np.all(np.abs(logits_off[differ]) < NEAR_CUT), np.abs(logits_off[differ]).max()
    if precision != "fp32":
        difference = np.abs(logits_on - logits_off)
        within = float((difference <= 0.1 + 0.05 * np.abs(logits_off)).mean())
        assert within >= HALF_LOGIT_SHARE, f"within tolerance on {within:.4%} of voxels"


# --- accumulation and memory ----------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_device_slab_and_host_accumulation_give_identical_masks(
    cuda: torch.device, demo: SegmentationModel, papyrus, threshold: float
) -> None:
    image, _ = papyrus
    forward = forward_of(demo, cuda, expected_precision(), True)
    masks = {}
    for accumulate in ("device", "slab", "host"):
        settings = BlendSettings(
            PATCH, threshold=threshold, normalization=demo.normalization, accumulate=accumulate
        )
        masks[accumulate] = blend_volume(image, forward, settings, cuda)
    np.testing.assert_array_equal(masks["slab"], masks["device"])
    # The host adds the same values in the same order, in the CPU's fp32 arithmetic.
    logits = blended_logits(image, forward, demo, threshold=threshold)
    cut = float(np.log(threshold / (1 - threshold)))
    differ = masks["host"] != masks["device"]
    assert differ.mean() <= 1e-5 and np.all(np.abs(logits[differ] - cut) < 1e-4)
    # Host accumulation is where the window thread runs: forcing it either way changes nothing.
    for prefetch in (True, False):
        settings = BlendSettings(
            PATCH, threshold=threshold, normalization=demo.normalization, accumulate="host",
            prefetch=prefetch,
        )  # fmt: skip
        np.testing.assert_array_equal(blend_volume(image, forward, settings, cuda), masks["host"])


class CapUnseen(Platform):
    """The driver's free memory only, as a torch without get_per_process_memory_fraction sees."""

    def free_memory(self, device: torch.device) -> tuple[int, int] | None:
        return torch.cuda.mem_get_info(device)


def test_a_volume_that_does_not_fit_under_a_memory_cap_still_gets_a_correct_mask(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    """464^3 voxels (100 M): uint8 source + fp32 sums need 500 MB; the cap allows 384 MiB."""
    image, _ = papyrus
    volume = tiled(image, (464, 464, 464))
    expected = Segmenter(demo, options()).segment(volume).mask  # uncapped: device accumulation
    total = torch.cuda.mem_get_info(cuda)[1]
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(384 * 2**20 / total, cuda)
    try:
        # The cap is seen: slab (or host) accumulation is chosen before anything fails.
        seen = Segmenter(demo, options()).segment(volume)
        assert seen.notes and "accumulation on cuda:0" in seen.notes[0], seen.notes
        assert not any("out of memory" in note for note in seen.notes), seen.notes
        # The cap unseen: device accumulation runs out of memory, the batch is halved, then the
        # host accumulates.
        torch.cuda.empty_cache()
        unseen = Segmenter(demo, options(), platform=CapUnseen()).segment(volume)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda)
        torch.cuda.empty_cache()
    notes = unseen.notes
    assert any("out of memory" in n and "retrying with batch 1" in n for n in notes), notes
    assert "retrying with accumulation on the host" in notes[-1], notes
    for result in (seen, unseen):
        assert result.device == "cuda:0"
        # Under the cap cuDNN may have to take kernels with smaller workspaces.
        assert float((result.mask == expected).mean()) >= 1 - OTHER_KERNELS_SHARE


def test_two_workers_share_one_gpu_through_the_pool(
    cuda: torch.device, demo: SegmentationModel, papyrus
) -> None:
    image, _ = papyrus
    segmenter = Segmenter(demo, options())
    # A second replica on the same GPU: what segment_many does with one worker per device.
    second = segmenter._prepare(demo, segmenter.patch_size, segmenter.batch_size, cuda, first=False)
    assert second is not None
    segmenter._workers.append(second)
    threads: list[set[str]] = [set(), set()]
    for index, worker in enumerate(segmenter._workers):
        worker.forward.model.network.register_forward_hook(
            lambda *_, seen=threads[index]: seen.add(threading.current_thread().name)
        )
    volumes = [np.ascontiguousarray(np.roll(image, 8 * i, axis=2)) for i in range(6)]
    expected = [segmenter.segment(v).mask for v in volumes]
    for seen in threads:
        seen.clear()
    results = list(segmenter.segment_many([(f"v{i}", v) for i, v in enumerate(volumes)]))
    assert [name for name, _ in results] == [f"v{i}" for i in range(6)]
    for (_, result), mask in zip(results, expected, strict=True):
        assert not isinstance(result, Exception), result
        assert float((result.mask == mask).mean()) >= SAME_KERNELS
    assert all(len(seen) == 1 for seen in threads) and threads[0] != threads[1], threads


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs"
)
def test_every_gpu_gets_a_worker(demo: SegmentationModel, papyrus) -> None:
    image, _ = papyrus
    segmenter = Segmenter(demo, options(device="cuda"))
    assert len(segmenter.devices) == torch.cuda.device_count()
    expected = segmenter.segment(image).mask
    results = list(segmenter.segment_many([(f"v{i}", image) for i in range(4)]))
    assert {result.device for _, result in results} == set(segmenter.devices)
    for _, result in results:
        assert float((result.mask == expected).mean()) >= SAME_KERNELS


# --- end to end -----------------------------------------------------------------------------
def test_a_320_cubed_volume_end_to_end_through_runtime_predict(
    cuda: torch.device, demo: SegmentationModel, papyrus, tmp_path: Path
) -> None:
    image, label = papyrus
    volume, truth = tiled(image, (320, 320, 320)), tiled(label, (320, 320, 320))
    root = tmp_path / "competition"
    (root / "test_images").mkdir(parents=True)
    write_lzw_stack(root / "test_images" / "1407735.tif", volume)
    (root / "test.csv").write_text("id,scroll_id\n1407735,34117\n")
    out = tmp_path / "out" / "submission.zip"
    completed = subprocess.run(
        [
            sys.executable, "-m", "runtime", "predict", str(root), "--model", "demo",
            "-o", str(out), "--device", "cuda", "--no-compile", "--no-progress",
        ],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert validate_submission(out, {"1407735": (320, 320, 320)}) == []
    metrics = json.loads((out.parent / "metrics.json").read_text())
    (record,) = metrics["volumes"]
    assert record["status"] == "ok" and record["device"] == "cuda:0", record
    assert record["precision"] == expected_precision(), record
    import tifffile

    with zipfile.ZipFile(out) as archive, archive.open("1407735.tif") as member:
        mask = tifffile.imread(member)
    # Another process: cuDNN's autotuning may pick other kernels there.
    reference = Segmenter(demo, options()).segment(volume).mask
    assert float((mask == reference).mean()) >= 1 - OTHER_KERNELS_SHARE
    assert dice_score(mask, truth) > 0.8
