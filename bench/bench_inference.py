"""Sliding-window inference: this engine against MONAI's sliding_window_inference, in one run.

    .venv/bin/python bench/bench_inference.py [--device cpu|cuda] [--shape Z Y X] [--patch P]
        [--overlap O] [--batch B] [--model demo|random|PATH] [--repeat R] [--amp ...]

Both sides run the same model on the same volume with the same windows (the volume shape is
checked to give MONAI's and our window grids exactly the same starts), the same Gaussian
(sigma = patch / 8, ``mode="gaussian", sigma_scale=0.125``), the same window batch and, on a GPU,
the same autocast precision (the one our probe picked). MONAI's user normalizes the whole volume
to float32 first, as its API requires; ours takes the raw uint8 volume.

Each side runs in its own fresh interpreter, so memory figures do not bleed into each other:

* seconds: one whole volume (volume in, mask out), after a warm-up forward of one window batch
  (for ours: building the Segmenter, which probes); with ``--repeat R`` the sides run R times,
  alternating, each in a fresh process, and the best time is kept;
* voxels/s: input voxels / seconds (wall clock);
* CPU s: process CPU time (all threads) of the timed run, steadier than wall time on a busy
  machine;
* CPU memory: peak resident set size (RSS) above the RSS just before the timed run, sampled every
  2 ms by a thread (it includes MONAI's float32 copy of the volume: that is what its API needs);
* GPU memory (``--device cuda``): ``torch.cuda.max_memory_allocated`` above the allocation just
  before the timed run.

Agreement: the thresholded masks are compared voxel by voxel, leaving out voxels whose MONAI
logit lies within 1e-3 of the threshold logit; the blended logits are compared too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(96, 128, 160), metavar=("Z", "Y", "X")
    )
    parser.add_argument("--patch", type=int, default=None, help="cubic window edge")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=4, help="windows per forward (both sides)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument(
        "--model", default="demo", help="demo (default), random (a seeded U-Net) or a model path"
    )
    parser.add_argument("--amp", default="auto", help="ours: auto|fp16|bf16|off (MONAI follows)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="ours only"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="fresh runs per side, alternating (best kept)"
    )
    parser.add_argument("--side", choices=("ours", "monai"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_measure_side(args.side, json.loads(args.config))))
        return 0
    return _compare(args)


# --- the parent: set up, run both sides, compare, print --------------------------------------
def _compare(args: argparse.Namespace) -> int:
    import torch

    model = _model(args.model)
    patch = args.patch or (model.recommended.get("patch_size") or [64])[0]
    patch = math.ceil(patch / model.size_multiple) * model.size_multiple
    windows = _check_same_windows(tuple(args.shape), patch, args.overlap)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        volume_path = Path(scratch) / "volume.npy"
        np.save(volume_path, _volume(tuple(args.shape)))
        config: dict[str, Any] = {
            "model": args.model,
            "volume": str(volume_path),
            "out": scratch,
            "patch": patch,
            "overlap": args.overlap,
            "batch": args.batch,
            "threshold": args.threshold,
            "device": args.device,
            "amp": args.amp,
            "compile": args.compile,
        }
        # Alternate the sides so a busy machine slows both alike; keep each side's best run.
        ours = _run_side("ours", config)
        # MONAI runs where and in the precision our probe chose.
        config["precision"], config["device"] = ours["precision"], ours["device"]
        monai = _run_side("monai", config)
        for _ in range(args.repeat - 1):
            ours = _best(ours, _run_side("ours", config))
            monai = _best(monai, _run_side("monai", config))
        agreement = _agreement(Path(scratch), args.threshold)

    voxels = math.prod(args.shape)
    import monai as monai_package

    print(
        f"\nsliding-window inference on {ours['device']} "
        f"(torch {torch.__version__}, MONAI {monai_package.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {ours['threads']})"
    )
    print(
        f"volume {'x'.join(map(str, args.shape))} uint8, model {model.name}, patch {patch}^3, "
        f"overlap {args.overlap}, {windows} windows, batch {args.batch}, precision "
        f"{ours['precision']} (both)"
    )
    print(
        f"ours, as probed: channels_last_3d {'on' if ours['channels_last'] else 'off'}, "
        f"compiled {'yes' if ours['compiled'] else 'no'}; MONAI: the model as loaded, eager"
    )
    memory_label = "GPU peak MB" if ours.get("gpu_peak") is not None else "RSS peak MB"
    memory_key = "gpu_peak" if ours.get("gpu_peak") is not None else "rss_peak"
    rows = [
        ("ours (Segmenter.segment)", ours),
        ("MONAI sliding_window_inference", monai),
    ]
    print(f"\n{'':34}{'seconds':>10}{'Mvoxels/s':>12}{'CPU s':>10}{memory_label:>14}")
    for label, side in rows:
        print(
            f"{label:34}{side['seconds']:>10.2f}{voxels / side['seconds'] / 1e6:>12.2f}"
            f"{side['cpu_seconds']:>10.2f}{side[memory_key] / 2**20:>14.1f}"
        )
    speed = monai["seconds"] / ours["seconds"]
    cpu = ours["cpu_seconds"] / monai["cpu_seconds"]
    memory = ours[memory_key] / max(monai[memory_key], 1)
    print(f"{'ratio ours/MONAI':34}{'':>10}{speed:>11.2f}x{cpu:>9.2f}x{memory:>13.2f}x")
    if ours.get("gpu_peak") is not None:
        print(
            f"(host RSS peak MB: ours {ours['rss_peak'] / 2**20:.1f}, "
            f"MONAI {monai['rss_peak'] / 2**20:.1f})"
        )
    print(f"ours: set-up (probe and warm-up) {ours['setup']:.2f} s, not in the timing above")
    print(
        f"agreement: masks equal on {agreement['mask_equal']:.4%} of voxels; "
        f"{agreement['disagree_clear']} disagreements among the "
        f"{agreement['clear']:,} voxels not within 1e-3 of the threshold; "
        f"max |logit difference| {agreement['max_logit_diff']:.2e}"
    )
    ok = agreement["disagree_clear"] == 0 and agreement["max_logit_diff"] < _tolerance(ours)
    print("outputs agree" if ok else "OUTPUTS DISAGREE")
    return 0 if ok else 1


def _best(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The faster run's figures; memory is the smaller peak (it varies little between runs)."""
    best = dict(min(first, second, key=lambda side: side["seconds"]))
    for key in ("rss_peak", "gpu_peak"):
        if best.get(key) is not None:
            best[key] = min(first[key], second[key])
    return best


def _tolerance(ours: dict[str, Any]) -> float:
    return 1e-3 if ours["precision"] == "fp32" else 5e-2


def _model(spec: str):
    import torch

    from runtime.inference.models import SegmentationModel, load_model
    from runtime.inference.unet import UNet3D, UNetConfig

    if spec == "random":
        torch.manual_seed(0)
        network = UNet3D(UNetConfig(channels=(8, 16, 32), norm="instance"))
        return SegmentationModel.from_module(
            network, name="random-unet", normalization=(127.5, 64.0), size_multiple=4
        )
    return load_model(spec)


def _volume(shape: tuple[int, int, int]) -> np.ndarray:
    from runtime.samples.synthetic import synthetic_volume

    return synthetic_volume(shape, 0).image


def _check_same_windows(shape: tuple[int, ...], patch: int, overlap: float) -> int:
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
    return len(ours)


def _run_side(side: str, config: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--side", side, "--config", json.dumps(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _agreement(scratch: Path, threshold: float) -> dict[str, Any]:
    cut = math.log(threshold / (1 - threshold))
    ours_mask = np.load(scratch / "ours-mask.npy")
    theirs_logits = np.load(scratch / "monai-logits.npy")
    ours_logits = np.load(scratch / "ours-logits.npy")
    theirs_mask = (theirs_logits > cut).astype(np.uint8)
    clear = np.abs(theirs_logits - cut) > 1e-3
    return {
        "mask_equal": float((ours_mask == theirs_mask).mean()),
        "clear": int(clear.sum()),
        "disagree_clear": int((ours_mask != theirs_mask)[clear].sum()),
        "max_logit_diff": float(np.abs(ours_logits - theirs_logits).max()),
    }


# --- a child: one side, measured in a fresh interpreter ------------------------------------
def _measure_side(side: str, config: dict[str, Any]) -> dict[str, Any]:
    import torch

    volume = np.load(config["volume"])
    model = _model(config["model"])
    out = Path(config["out"])
    if side == "ours":
        run, info = _ours(model, volume, config)
    else:
        run, info = _monai(model, volume, config)
    device = torch.device(info["device"])
    sampler = _RssSampler()
    gpu_base = _gpu_reset(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    with sampler:
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    gpu_peak = None
    if gpu_base is not None:
        gpu_peak = torch.cuda.max_memory_allocated(device) - gpu_base
    np.save(out / f"{side}-mask.npy", result)
    info["logits"](out / f"{side}-logits.npy")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_peak": sampler.peak_delta,
        "gpu_peak": gpu_peak,
        "threads": torch.get_num_threads(),
        **{k: v for k, v in info.items() if k != "logits"},
    }


def _ours(model, volume: np.ndarray, config: dict[str, Any]):
    from runtime.inference.engine import InferenceOptions, Segmenter
    from runtime.inference.probe import BatchForward
    from runtime.inference.sliding_window import BlendSettings, blend_volume

    options = InferenceOptions(
        patch_size=(config["patch"],) * 3,
        overlap=config["overlap"],
        batch_size=config["batch"],
        threshold=config["threshold"],
        device=config["device"],
        amp=config["amp"],
        compile=config["compile"],
    )
    start = time.perf_counter()
    segmenter = Segmenter(model, options, log=lambda line: print(line, file=sys.stderr))
    setup = time.perf_counter() - start
    device = segmenter.devices[0]

    def run() -> np.ndarray:
        return segmenter.segment(volume).mask

    chosen = {d.name: d.value for d in segmenter.decisions}
    precision = chosen["precision"]
    compiled = chosen["compile"] == "on"

    def logits(path: Path) -> None:
        # The blended logits (untimed), from the same replica and precision, for the agreement.
        import torch

        replica = model.replicate(device)
        forward = BatchForward(replica, torch.device(device), precision, False)
        settings = BlendSettings(
            (config["patch"],) * 3,
            config["overlap"],
            config["batch"],
            threshold=config["threshold"],
            normalization=model.normalization,
        )
        np.save(path, blend_volume(volume, forward, settings, device, output="logits"))

    info = {
        "device": device,
        "precision": precision,
        "compiled": compiled,
        "channels_last": chosen["channels_last"] == "on",
        "setup": setup,
        "logits": logits,
    }
    return run, info


def _monai(model, volume: np.ndarray, config: dict[str, Any]):
    import torch
    from monai.inferers import sliding_window_inference

    device = torch.device(config["device"])
    replica = model.replicate(device)
    precision = config["precision"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    mean, std = model.normalization
    cut = math.log(config["threshold"] / (1 - config["threshold"]))
    roi = (config["patch"],) * 3
    state: dict[str, torch.Tensor] = {}

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return replica.foreground_logits(batch)

    def blended() -> torch.Tensor:
        # What a MONAI user writes: normalize the whole volume, then slide.
        inputs = (torch.from_numpy(volume).to(device).float() - mean) / std
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
        ):
            return sliding_window_inference(
                inputs[None, None],
                roi,
                config["batch"],
                predictor,
                overlap=config["overlap"],
                mode="gaussian",
                sigma_scale=0.125,
                sw_device=device,
                device=device,
            )

    def run() -> np.ndarray:
        logits = blended()
        state["logits"] = logits
        return (logits[0, 0] > cut).to(torch.uint8).cpu().numpy()

    with torch.inference_mode():  # warm-up: one batch of windows, as our probe does
        replica.foreground_logits(torch.zeros(config["batch"], 1, *roi, device=device))

    def logits(path: Path) -> None:
        np.save(path, state["logits"][0, 0].float().cpu().numpy())

    return run, {
        "device": str(device),
        "precision": precision,
        "compiled": False,
        "setup": 0.0,
        "logits": logits,
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


def _gpu_reset(device) -> int | None:
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


if __name__ == "__main__":
    sys.exit(main())
