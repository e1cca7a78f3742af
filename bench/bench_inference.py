"""Sliding-window inference: this engine against MONAI and against the bare forward, in one run.

    .venv/bin/python bench/bench_inference.py [--device cpu|cuda] [--model NAME|PATH]
        [--shape Z Y X] [--patch P] [--overlap O] [--batch B|auto] [--repeat R]
        [--amp auto|fp16|bf16|off] [--compile|--no-compile] [--json PATH]

Models: ``demo`` (the trained 85k-parameter U-Net), ``random`` (a seeded built-in U-Net),
``plainconv`` and ``resenc-m`` (nnU-Net's PlainConvUNet and ResEnc-M ResidualEncoderUNet from
dynamic-network-architectures, random weights, stages and widths as nnU-Net plans them for the
patch: features min(32 * 2^i, 320), InstanceNorm, LeakyReLU, two classes), or a model path.

Each round runs every side once on the same uint8 volume, volume in and mask out, in one process
(the order rotates from round to round, so a busy machine slows every side alike):

* **ours**: ``Segmenter.segment`` with the probe's choices (its set-up, probe included, is timed
  apart);
* **MONAI, same windows**: ``sliding_window_inference`` over exactly our windows (the grids are
  checked to coincide) with the same Gaussian (``mode="gaussian", sigma_scale=0.125``), under
  autocast in our precision, on the model as loaded; the whole volume normalized to float32 first,
  as its API needs;
* **MONAI, defaults**: what a MONAI user gets without tuning: ``overlap=0.25``, constant weights,
  fp32 (its own, fewer windows);
* **bare forward**: our probed forward over our windows, cut and batched beforehand: the limit
  (with an idle thread beside it when our probe chose the window thread on the CPU, since that
  changes how OpenMP's threads wait: the same forward in the same conditions, minus our work).

Batches: ``--batch B`` for every side; ``--batch auto`` (the default on CUDA) gives ours and MONAI
each its best of 1, 2 and 4 windows per forward, by forward throughput.

Medians over the rounds are reported, with the spread ((max - min) / median) as the noise. Memory
comes from one more, untimed round: peak RSS above the RSS before each side (sampled every 2 ms),
and on CUDA ``torch.cuda.max_memory_allocated`` above the allocation before it.

Agreement: our mask against MONAI's same-window mask, leaving out voxels whose MONAI logit lies
within the tolerance of the threshold logit (fp32: 1e-3), and the largest difference between the
blended logits; under autocast, where the two forwards round differently, at least 99.5% of mask
voxels must be equal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

NETWORKS = ("demo", "random", "plainconv", "resenc-m")
_AUTO_BATCHES = (1, 2, 4)
_HALF_AGREEMENT = 0.995


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="volume shape (default: 5 windows per axis, 4 on CUDA)",
    )
    parser.add_argument("--patch", type=int, default=None, help="cubic window edge")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument(
        "--batch",
        default=None,
        help="windows per forward, or auto (default: 2 on CPU, auto on CUDA)",
    )
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", default="demo", help=f"{', '.join(NETWORKS)} or a model path")
    parser.add_argument("--amp", default="auto", help="ours: auto|fp16|bf16|off (MONAI follows)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="ours only"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--ab-prefetch",
        action="store_true",
        help="also time the blending loop with its window thread forced on and off",
    )
    args = parser.parse_args()
    return _compare(args)


# --- the comparison ------------------------------------------------------------------------
@dataclass
class Case:
    """What every side is given: one model, one uint8 volume, one window grid."""

    model: Any  # SegmentationModel
    volume: np.ndarray
    patch: int
    overlap: float
    threshold: float
    device: Any  # torch.device, where the forward runs
    dtype: Any  # the autocast dtype, None for fp32

    @property
    def cut(self) -> float:
        return math.log(self.threshold / (1 - self.threshold))


@dataclass
class Side:
    key: str  # ours | monai | monai_defaults | bare | thread_on | thread_off
    label: str
    run: Callable[[], np.ndarray]  # volume in, mask out
    windows: int
    batch: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    rss_peak: int = 0
    gpu_peak: int | None = None
    mask: np.ndarray | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        return (max(self.seconds) - min(self.seconds)) / self.median


def _compare(args: argparse.Namespace) -> int:
    import torch

    from runtime.inference.engine import InferenceOptions, Segmenter
    from runtime.inference.sliding_window import plan_windows

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    monai = _monai_version()
    if monai is None:
        print("MONAI is not installed (pip install monai): ours against the bare forward only")
    model, parameters = _model(args.model, args.patch or 64)
    patch = args.patch or (model.recommended.get("patch_size") or [64])[0]
    patch = math.ceil(patch / model.size_multiple) * model.size_multiple
    shape = tuple(args.shape) if args.shape else _default_shape(patch, args.overlap, device)
    if monai is not None:
        _check_same_windows(shape, patch, args.overlap)
    windows = plan_windows(shape, (patch,) * 3, args.overlap).n_windows
    volume = _volume(shape)
    if args.model in ("plainconv", "resenc-m"):
        model.normalization = (float(volume.mean()), float(volume.std()))  # ZScore, per case
    batch_arg = args.batch or ("auto" if device.type == "cuda" else "2")

    def segmenter_for(batch: int, compile: bool | None) -> Segmenter:
        options = InferenceOptions(
            patch_size=(patch,) * 3,
            overlap=args.overlap,
            batch_size=batch,
            threshold=args.threshold,
            device=args.device,
            amp=args.amp,
            compile=compile,
        )
        return Segmenter(model, options, log=lambda line: print(line, file=sys.stderr))

    ours_batch = (
        _best_batch(lambda b: _worker_forward(segmenter_for(b, False)), patch, model, device)
        if batch_arg == "auto"
        else int(batch_arg)
    )
    start = time.perf_counter()
    segmenter = segmenter_for(ours_batch, args.compile)
    setup = time.perf_counter() - start
    chosen = {d.name: d for d in segmenter.decisions}
    forward = _worker_forward(segmenter)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(forward.precision)
    # MONAI runs the model as loaded (eager, contiguous), where our probe put it.
    case = Case(
        model.replicate(forward.device),
        volume,
        patch,
        args.overlap,
        args.threshold,
        forward.device,
        dtype,
    )
    sides = [
        Side(
            "ours",
            "ours (Segmenter.segment)",
            lambda: segmenter.segment(volume).mask,
            windows,
            ours_batch,
        ),
    ]
    monai_batch = ours_batch
    if monai is not None:
        if batch_arg == "auto":
            monai_batch = _best_batch(
                lambda b: _plain_forward(case.model, dtype), patch, model, case.device
            )
        defaults = Case(case.model, volume, patch, 0.25, args.threshold, case.device, None)
        sides += [
            Side(
                "monai",
                "MONAI, same windows (Gaussian)",
                _monai(case, "gaussian", monai_batch),
                windows,
                monai_batch,
            ),
            Side(
                "monai_defaults",
                "MONAI, defaults (fp32)",
                _monai(defaults, "constant", monai_batch),
                _monai_windows(shape, patch, 0.25),
                monai_batch,
            ),
        ]
    thread = bool(segmenter.probed_forward().prefetch)  # the probe's choice
    sides.append(
        Side(
            "bare",
            "bare forward (the limit)" + (", thread beside" if thread else ""),
            _bare(case, forward, ours_batch, thread),
            windows,
            ours_batch,
        )
    )
    if args.ab_prefetch:
        for prefetch in (True, False):
            sides.append(
                Side(
                    f"thread_{'on' if prefetch else 'off'}",
                    f"blend_volume, window thread {'on' if prefetch else 'off'}",
                    _blend(case, forward, ours_batch, prefetch),
                    windows,
                    ours_batch,
                )
            )
    for side in sides:  # warm: first-call costs (MONAI's imports, allocator growth) stay out
        side.mask = side.run()
        _synchronize(case.device)
    load = [os.getloadavg()[0]]
    for number in range(args.repeat):
        for side in sides[number % len(sides) :] + sides[: number % len(sides)]:
            _time(side, case.device)
    load.append(os.getloadavg()[0])
    for side in sides:
        _measure_memory(side, case.device)
    by_key = {side.key: side for side in sides}
    agreement = None
    if monai is not None:
        agreement = _agreement(
            by_key,
            _our_logits(case, forward, ours_batch),
            _monai_logits(case, monai_batch),
            case.cut,
            forward.precision,
        )
    report = _report(args, case, sides, chosen, setup, windows, parameters, agreement, load, monai)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if agreement is None or agreement["ok"] else 1


def _monai_version() -> str | None:
    try:
        import monai
    except ImportError:
        return None
    return str(monai.__version__)


def _worker_forward(segmenter: Any) -> Any:
    # The probed forward of the Segmenter's first device: what its windows run through.
    return segmenter.probed_forward().forward


def _default_shape(patch: int, overlap: float, device: Any) -> tuple[int, int, int]:
    per_axis = 4 if device.type == "cuda" else 5
    step = int(patch * (1 - overlap))
    return (patch + (per_axis - 1) * step,) * 3


# --- the sides -----------------------------------------------------------------------------
def _monai_blend(case: Case, mode: str, batch: int) -> Any:
    """MONAI's blended logits, (1, 1, Z, Y, X) on the device."""
    import torch
    from monai.inferers import sliding_window_inference

    mean, std = case.model.normalization
    # What a MONAI user writes: normalize the whole volume, then slide.
    inputs = (torch.from_numpy(case.volume).to(case.device).float() - mean) / std
    dtype = case.dtype
    with (
        torch.inference_mode(),
        torch.autocast(case.device.type, dtype=dtype, enabled=dtype is not None),
    ):
        return sliding_window_inference(
            inputs[None, None],
            (case.patch,) * 3,
            batch,
            case.model.foreground_logits,
            overlap=case.overlap,
            mode=mode,
            sigma_scale=0.125,
            sw_device=case.device,
            device=case.device,
        )


def _monai(case: Case, mode: str, batch: int) -> Callable[[], np.ndarray]:
    import torch

    def run() -> np.ndarray:
        logits = _monai_blend(case, mode, batch)
        return (logits[0, 0] > case.cut).to(torch.uint8).cpu().numpy()

    return run


def _monai_logits(case: Case, batch: int) -> np.ndarray:
    return _monai_blend(case, "gaussian", batch)[0, 0].float().cpu().numpy()


def _bare(case: Case, forward: Any, batch: int, beside_thread: bool) -> Callable[[], np.ndarray]:
    """Our forward over our windows, cut, normalized and batched (last one padded) beforehand.

    ``beside_thread``: as ours runs when its probe chose the window thread on the CPU, with an
    idle thread beside it that has run torch ops (it owns an OpenMP team, which changes how the
    forward's OpenMP threads wait): the same forward in the same conditions, minus our work.
    """
    import torch

    from runtime.inference.sliding_window import plan_windows

    patch = case.patch
    plan = plan_windows(case.volume.shape, (patch,) * 3, case.overlap)
    mean, std = case.model.normalization
    source = torch.from_numpy(case.volume)
    batches = []
    with torch.inference_mode():
        for first in range(0, plan.n_windows, batch):
            inputs = torch.zeros(batch, 1, patch, patch, patch)
            for slot, (z, y, x) in enumerate(plan.starts[first : first + batch]):
                inputs[slot, 0] = source[z : z + patch, y : y + patch, x : x + patch]
            batches.append(((inputs - mean) / std).to(case.device))

    def forwards() -> None:
        with torch.inference_mode():
            for inputs in batches:
                forward(inputs)

    def run() -> np.ndarray:
        if beside_thread:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(lambda: torch.zeros(batches[0].shape).add_(1.0)).result()
                forwards()
        else:
            forwards()
        return np.zeros(0, dtype=np.uint8)

    return run


def _settings(case: Case, batch: int, prefetch: bool | None = None) -> Any:
    from runtime.inference.sliding_window import BlendSettings

    return BlendSettings(
        (case.patch,) * 3,
        case.overlap,
        batch,
        threshold=case.threshold,
        normalization=case.model.normalization,
        prefetch=prefetch,
    )


def _blend(case: Case, forward: Any, batch: int, prefetch: bool) -> Callable[[], np.ndarray]:
    """The blending loop alone, with the window thread forced on or off (``--ab-prefetch``)."""
    from runtime.inference.sliding_window import blend_volume

    settings = _settings(case, batch, prefetch)
    return lambda: blend_volume(case.volume, forward, settings, case.device)


def _our_logits(case: Case, forward: Any, batch: int) -> np.ndarray:
    """Our blended logits (untimed), through the same forward as the timed runs."""
    from runtime.inference.sliding_window import blend_volume

    settings = _settings(case, batch)
    return blend_volume(case.volume, forward, settings, case.device, output="logits")


def _plain_forward(model: Any, dtype: Any) -> Callable[[Any], Any]:
    import torch

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
            return model.foreground_logits(batch)

    return run


def _best_batch(make_forward: Callable[[int], Any], patch: int, model: Any, device: Any) -> int:
    """The window batch with the best forward throughput (windows per second) among 1, 2, 4."""
    import torch

    speeds: dict[int, float] = {}
    for batch in _AUTO_BATCHES:
        try:
            forward = make_forward(batch)
            inputs = torch.randn(batch, 1, patch, patch, patch, device=device)
            with torch.inference_mode():
                forward(inputs)  # warm: cuDNN autotunes this shape
                _synchronize(device)
                calls = max(2, math.ceil(8 / batch))
                start = time.perf_counter()
                for _ in range(calls):
                    forward(inputs)
                _synchronize(device)
            speeds[batch] = batch * calls / (time.perf_counter() - start)
        except torch.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if not speeds:
        raise SystemExit(f"not even one {patch}^3 window fits on {device}")
    figures = ", ".join(f"batch {b}: {s:.1f} windows/s" for b, s in speeds.items())
    print(f"{model.name} on {device}: {figures}", file=sys.stderr)
    return max(speeds, key=speeds.__getitem__)


def _time(side: Side, device: Any) -> None:
    _synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    side.run()
    _synchronize(device)
    side.seconds.append(time.perf_counter() - start)
    side.cpu_seconds.append(time.process_time() - cpu_start)


def _measure_memory(side: Side, device: Any) -> None:
    import torch

    base = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with _RssSampler() as sampler:
        side.run()
        _synchronize(device)
    side.rss_peak = sampler.peak_delta
    if base is not None:
        side.gpu_peak = torch.cuda.max_memory_allocated(device) - base


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- models and volumes --------------------------------------------------------------------
def _model(spec: str, patch: int):
    """(model, parameter count); nnU-Net networks are planned for ``patch``."""
    import torch

    from runtime.inference.segmentation_model import SegmentationModel
    from runtime.inference.unet import UNet3D, UNetConfig
    from runtime.pipeline.models import load_model

    if spec in ("plainconv", "resenc-m"):
        network, multiple = _nnunet_network(spec, patch)
        model = SegmentationModel.from_module(
            network,
            name=spec,
            size_multiple=multiple,
            foreground_class=1,
            recommended={"patch_size": [patch] * 3},
        )
    elif spec == "random":
        torch.manual_seed(0)
        network = UNet3D(UNetConfig(channels=(8, 16, 32), norm="instance"))
        model = SegmentationModel.from_module(
            network, name="random-unet", normalization=(127.5, 64.0), size_multiple=4
        )
    else:
        model = load_model(spec)
    return model, sum(p.numel() for p in model.network.parameters())


def _nnunet_network(spec: str, patch: int):
    """nnU-Net's 3d_fullres network for a cubic ``patch``, as its planner would lay it out."""
    import torch
    from torch import nn

    try:
        from dynamic_network_architectures.architectures.unet import (
            PlainConvUNet,
            ResidualEncoderUNet,
        )
    except ImportError:
        raise SystemExit(
            "--model plainconv/resenc-m needs dynamic-network-architectures: "
            "pip install --no-deps dynamic-network-architectures"
        ) from None
    # Halve down to a 4-voxel bottleneck (the planner's rule), at most 7 stages.
    stages = min(7, 1 + int(math.log2(patch / 4)))
    common = {
        "input_channels": 1,
        "n_stages": stages,
        "features_per_stage": [min(32 * 2**i, 320) for i in range(stages)],
        "conv_op": nn.Conv3d,
        "kernel_sizes": [[3, 3, 3]] * stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
        "num_classes": 2,
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }
    torch.manual_seed(0)
    if spec == "plainconv":
        network = PlainConvUNet(
            n_conv_per_stage=[2] * stages, n_conv_per_stage_decoder=[2] * (stages - 1), **common
        )
    else:  # nnU-Net's ResEnc M preset (nnUNetResEncUNetMPlans)
        network = ResidualEncoderUNet(
            n_blocks_per_stage=[1, 3, 4, 6, 6, 6, 6][:stages],
            n_conv_per_stage_decoder=[1] * (stages - 1),
            **common,
        )
    return network, 2 ** (stages - 1)


def _volume(shape: tuple[int, ...]) -> np.ndarray:
    """A synthetic CT chunk; large ones tile a 160^3 chunk (generating 320^3 takes minutes)."""
    from runtime.samples.synthetic import synthetic_volume

    tile = tuple(min(s, 160) for s in shape)
    image = synthetic_volume(tile, 0).image
    reps = [math.ceil(s / t) for s, t in zip(shape, tile, strict=True)]
    tiled = np.tile(image, reps)[: shape[0], : shape[1], : shape[2]]
    return np.ascontiguousarray(tiled)


def _check_same_windows(shape: tuple[int, ...], patch: int, overlap: float) -> None:
    """Both grids must coincide, or the comparison would compare different work."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from runtime.inference.sliding_window import plan_windows

    patches = (patch,) * 3
    interval = _get_scan_interval(shape, patches, 3, (overlap,) * 3)
    theirs = {
        tuple(s.start for s in window) for window in dense_patch_slices(shape, patches, interval)
    }
    plan = plan_windows(shape, patches, overlap)
    ours = set(plan.starts)
    if plan.padded_shape != shape or ours != theirs:
        sizes = [patch + k * int(patch * (1 - overlap)) for k in range(1, 6)]
        raise SystemExit(
            f"shape {shape} gives different window grids (ours {len(ours)}, MONAI {len(theirs)}); "
            f"use edges from {sizes} for patch {patch} and overlap {overlap}"
        )


def _monai_windows(shape: tuple[int, ...], patch: int, overlap: float) -> int:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    patches = (patch,) * 3
    interval = _get_scan_interval(shape, patches, 3, (overlap,) * 3)
    return len(dense_patch_slices(shape, patches, interval))


# --- agreement and the report ---------------------------------------------------------------
def _agreement(
    sides: dict[str, Side],
    ours_logits: np.ndarray,
    theirs_logits: np.ndarray,
    cut: float,
    precision: str,
) -> dict[str, Any]:
    ours_mask, theirs_mask = sides["ours"].mask, sides["monai"].mask
    defaults_mask = sides["monai_defaults"].mask
    assert ours_mask is not None and theirs_mask is not None and defaults_mask is not None
    tolerance = 1e-3 if precision == "fp32" else 5e-2
    clear = np.abs(theirs_logits - cut) > tolerance
    difference = np.abs(ours_logits - theirs_logits)
    equal = float((ours_mask == theirs_mask).mean())
    disagree_clear = int((ours_mask != theirs_mask)[clear].sum())
    if precision == "fp32":
        ok = disagree_clear == 0 and float(difference.max()) < tolerance
    else:  # two differently rounded forwards (layout, compiled kernels): a share of voxels
        ok = equal >= _HALF_AGREEMENT
    return {
        "mask_equal": equal,
        "clear_voxels": int(clear.sum()),
        "disagree_clear": disagree_clear,
        "max_logit_diff": float(difference.max()),
        "p999_logit_diff": float(np.quantile(difference, 0.999)),
        "tolerance": tolerance,
        "defaults_mask_equal": float((ours_mask == defaults_mask).mean()),
        "ok": ok,
    }


def _report(
    args: argparse.Namespace,
    case: Case,
    sides: list[Side],
    chosen: dict[str, Any],
    setup: float,
    windows: int,
    parameters: int,
    agreement: dict[str, Any] | None,
    load: list[float],
    monai: str | None,
) -> dict[str, Any]:
    import torch

    by_key = {side.key: side for side in sides}
    ours, bare = by_key["ours"], by_key["bare"]
    shape = case.volume.shape
    voxels = math.prod(shape)
    threads = torch.get_num_threads()
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(case.dtype, "fp32")
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        f"\nsliding-window inference on {case.device} (torch {torch.__version__}, MONAI "
        f"{monai or 'not installed'}, {os.cpu_count()} CPUs, torch threads {threads}, "
        f"OMP_WAIT_POLICY {wait})"
    )
    defaults = by_key.get("monai_defaults")
    print(
        f"model {case.model.name} ({parameters:,} parameters), volume "
        f"{'x'.join(map(str, shape))} uint8, patch {case.patch}^3, overlap {case.overlap}: "
        f"{windows} windows"
        + (f" (MONAI defaults: {defaults.windows})" if defaults else "")
        + f", precision {precision}"
    )
    layout = chosen.get("channels_last")
    print(
        f"ours as probed: channels_last {layout.value if layout else '?'}, compile "
        f"{chosen['compile'].value}, window prefetch {chosen['window_prefetch'].value}; set-up "
        f"(probe, warm-ups) {setup:.2f} s, not in the timings"
    )
    memory = "GPU peak MB" if case.device.type == "cuda" else "RSS peak MB"
    print(
        f"\n{'':42}{'batch':>6}{'median s':>10}{'spread':>8}{'Mvox/s':>8}{'CPU s':>8}"
        f"{memory:>12}{'÷ ours':>8}{'CPU ÷ ours':>11}"
    )
    rows = {}
    ours_cpu = statistics.median(ours.cpu_seconds)
    for side in sides:
        peak = side.gpu_peak if case.device.type == "cuda" else side.rss_peak
        cpu = statistics.median(side.cpu_seconds)
        print(
            f"{side.label:42}{side.batch:>6}{side.median:>10.2f}{side.spread:>7.0%} "
            f"{voxels / side.median / 1e6:>7.2f}{cpu:>8.2f}{(peak or 0) / 2**20:>12.1f}"
            f"{side.median / ours.median:>7.2f}x{cpu / ours_cpu:>10.2f}x"
        )
        rows[side.key] = {
            "label": side.label,
            "batch": side.batch,
            "windows": side.windows,
            "seconds": side.seconds,
            "median": side.median,
            "spread": side.spread,
            "cpu_seconds": side.cpu_seconds,
            "peak_bytes": peak,
            "time_over_ours": side.median / ours.median,
        }
    limit = bare.median / ours.median
    print(
        f"÷ ours: a side's median time over ours (above 1: ours is faster). Ours reaches "
        f"{limit:.2f} of the bare forward's speed. {args.repeat} rounds; spread = (max - min) / "
        f"median; load average {load[0]:.1f} before the rounds, {load[1]:.1f} after"
    )
    if agreement is not None:
        print(
            f"agreement with MONAI (same windows): masks equal on {agreement['mask_equal']:.4%} "
            f"of voxels, {agreement['disagree_clear']} disagreements among the "
            f"{agreement['clear_voxels']:,} voxels farther than {agreement['tolerance']:g} from "
            f"the threshold logit; |logit difference| max {agreement['max_logit_diff']:.2e}, "
            f"99.9th percentile {agreement['p999_logit_diff']:.2e}; against MONAI's defaults "
            f"(other windows, constant weights): {agreement['defaults_mask_equal']:.2%} equal"
        )
        print("outputs agree" if agreement["ok"] else "OUTPUTS DISAGREE")
    return {
        "device": str(case.device),
        "device_name": torch.cuda.get_device_name(case.device)
        if case.device.type == "cuda"
        else None,
        "torch": torch.__version__,
        "monai": monai,
        "cpus": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": wait,
        "model": case.model.name,
        "parameters": parameters,
        "shape": list(shape),
        "patch": case.patch,
        "overlap": case.overlap,
        "windows": windows,
        "precision": precision,
        "decisions": {name: d.value for name, d in chosen.items()},
        "setup_seconds": setup,
        "rounds": args.repeat,
        "load_average": load,
        "sides": rows,
        "ours_of_bare": limit,
        "agreement": agreement,
    }


class _RssSampler:
    """Peak RSS above the RSS at entry, sampled every 2 ms on a thread."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.peak_delta = 0

    def __enter__(self) -> _RssSampler:
        self._base = self._process.memory_info().rss
        self._peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_delta = self._peak - self._base

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._process.memory_info().rss)


if __name__ == "__main__":
    sys.exit(main())
