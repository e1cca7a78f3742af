"""An nnU-Net v2 folder through nnU-Net's own predictor and through ours, in one run, as ratios.

    PYTHONPATH=. /work/venvs/nnunet/bin/python bench/bench_nnunet.py [--folder PATH |
        --network resenc-m|plain --patch P --folds N --spacing Z Y X] [--shape Z Y X] [--device cpu|cuda]
        [--batch B] [--mirroring off on] [--repeat R] [--threads T] [--amp A] [--no-exact]

Needs nnunetv2 (only here, never for kaggle-offline). An environment that has it without pulling
a CUDA torch: ``python3.11 -m venv V && V/bin/pip install torch==2.13.0`` first, then
``V/bin/pip install --no-deps nnunetv2 dynamic-network-architectures acvl-utils batchgenerators
batchgeneratorsv2`` and their other requirements by name (numpy scipy scikit-image scikit-learn
SimpleITK nibabel pandas tifffile imagecodecs blosc2 einops yacs matplotlib seaborn graphviz
requests tqdm threadpoolctl connected-components-3d future). ``--folder`` takes any trained-model
folder (bench/train_tiny_nnunet.py trains one); without it a folder is written with seeded random
weights and nnU-Net's ResEnc M preset (features 32..320, blocks 1, 3, 4, 6, 6, 6) for ``--patch``.

The same folder, volume and windows (step 0.5) go through, each side in a fresh interpreter:

* nnU-Net: ``nnUNetPredictor.predict_single_npy_array`` as shipped (one window per forward; on
  CUDA fp16 autocast and on-device sums, on the CPU fp32 and fp16 sums), probabilities returned;
* ours: ``Segmenter.segment`` (batched fixed-shape windows, probed precision, layout and compile;
  on CUDA ``--amp fp16`` to compare with nnU-Net's fp16; ``--amp bf16`` tries CPU autocast, which
  nnU-Net never uses), the probability kept;
* each side's bare forward: only its network's forwards over the same windows (ours: in batches
  of ``--batch``, with the very forward the Segmenter probed; nnU-Net's: one window at a time, each
  fold on its own), no preprocessing, no stitching: the limit each way of running can reach. It is
  measured in the same process, alternating with the whole-volume run, so both see the same warm
  caches and the same load of a busy machine, and with an idle second thread alive as both engines
  have one (see ``_best_of``).

Seconds are one whole volume in, mask and probability out, after each side's warm-up (nnU-Net: one
prediction of a patch-sized volume; ours: building the Segmenter, which probes); the best of
``--repeat`` runs. CPU s is the process's CPU time, steadier than wall time on a busy machine.
Agreement: ours against nnU-Net as shipped, and (``--exact``, the default, one more untimed
nnU-Net run) against nnU-Net with its fp16 sums made fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="an nnU-Net trained-model folder")
    parser.add_argument("--network", choices=("resenc-m", "plain"), default="resenc-m")
    parser.add_argument("--patch", type=int, default=64, help="cubic patch of the written folder")
    parser.add_argument("--folds", type=int, default=1, help="folds of the written folder")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("Z", "Y", "X"),
        help="the written folder's spacing (the volume's is 1 1 1): 2 2 2 makes a 3d_lowres "
        "configuration, 4 1 1 an anisotropic one; both sides then resample",
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 96, 96), metavar=("Z", "Y", "X"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, default=2, help="our windows per forward")
    parser.add_argument("--mirroring", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per side (best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="ours only"
    )
    parser.add_argument(
        "--amp",
        help="ours only: auto|fp16|bf16|off (default: fp16 on CUDA, as nnU-Net; auto on the CPU, "
        "which is fp32 as nnU-Net's)",
    )
    parser.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_measure(args.side, json.loads(args.config))))
        return 0
    return _compare(args)


# --- the parent -------------------------------------------------------------------------------
def _compare(args: argparse.Namespace) -> int:
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-nnunet-") as scratch_name:
        scratch = Path(scratch_name)
        folder, description = _folder(args, scratch)
        volume_path = scratch / "volume.npy"
        from runtime.samples.synthetic import synthetic_volume

        np.save(volume_path, synthetic_volume(tuple(args.shape), 0).image)
        base = {
            "folder": str(folder),
            "volume": str(volume_path),
            "out": str(scratch),
            "device": args.device,
            "batch": args.batch,
            "threads": args.threads,
            "compile": args.compile,
            "amp": args.amp or ("fp16" if args.device.startswith("cuda") else "auto"),
        }
        results = {}
        for mirroring in args.mirroring:
            config = {**base, "mirroring": mirroring == "on"}
            sides = {
                side: _run_side(side, {**config, "repeat": args.repeat})
                for side in ("nnunet", "ours")
            }
            if args.exact:
                sides["exact"] = _run_side("exact", config)
            results[mirroring] = (sides, _agreement(scratch, config["mirroring"], args.exact))
    _print(args, description, results, torch.__version__)
    return 0


def _folder(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    from runtime.inference.models import load_model

    if args.folder:
        folder = args.folder
    else:
        from tests.support.nnunet_folders import (
            make_plans,
            plain_architecture,
            resenc_m_architecture,
            write_trained_model_folder,
        )

        if args.network == "resenc-m":
            architecture = resenc_m_architecture(args.patch)
        else:
            stages = int(math.log2(args.patch // 4)) + 1
            architecture = plain_architecture([min(32 * 2**i, 320) for i in range(stages)])
        spacing = tuple(args.spacing)
        configuration = "3d_fullres" if spacing == (1.0, 1.0, 1.0) else "3d_lowres"
        plans = make_plans(
            architecture, patch=(args.patch,) * 3, spacing=spacing, configuration=configuration
        )
        folder, _ = write_trained_model_folder(
            scratch / "results",
            plans,
            folds=tuple(range(args.folds)),
            seed=0,
            configuration=configuration,
        )
    model = load_model(folder)
    network = model.network.folds[0]
    parameters = sum(p.numel() for p in network.parameters())
    description = (
        f"{folder.name}: {type(network).__name__}, {parameters / 1e6:.1f}M parameters per fold, "
        f"patch {'x'.join(map(str, model.recommended['patch_size']))}, folds "
        f"{len(model.network.folds)}, {model.summary.split(', ', 3)[-1]}"
    )
    return folder, description


def _run_side(side: str, config: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--side", side, "--config", json.dumps(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _agreement(scratch: Path, mirroring: bool, exact: bool) -> dict[str, dict[str, float]]:
    tag = "on" if mirroring else "off"
    ours_p = np.load(scratch / f"ours-{tag}-probability.npy")
    ours_m = np.load(scratch / f"ours-{tag}-mask.npy")
    found = {}
    for other in ("nnunet", "exact") if exact else ("nnunet",):
        theirs_p = np.load(scratch / f"{other}-{tag}-probability.npy")
        theirs_m = np.load(scratch / f"{other}-{tag}-mask.npy")
        difference = np.abs(ours_p - theirs_p)
        found[other] = {
            "max": float(difference.max()),
            "mean": float(difference.mean()),
            "mask_equal": float(np.mean(ours_m == theirs_m)),
        }
    return found


def _print(args, description: str, results: dict, torch_version: str) -> None:
    any_side = next(iter(results.values()))[0]["ours"]
    print(f"\nnnU-Net folder {description}")
    print(
        f"volume {'x'.join(map(str, args.shape))} uint8 (synthetic papyrus), {any_side['windows']} "
        f"windows of step 0.5, device {any_side['device']}, torch {torch_version}, torch threads "
        f"{any_side['threads']}, {os.cpu_count()} CPUs; ours: batch {args.batch}, precision "
        f"{any_side['precision']}, channels_last_3d {'on' if any_side['channels_last'] else 'off'}"
        f", compiled {'yes' if any_side['compiled'] else 'no'}"
    )
    print(f"\n{'mirroring':10}{'side':40}{'seconds':>9}{'CPU s':>9}{'forwards':>10}")
    for mirroring, (sides, agreement) in results.items():
        nnunet, ours = sides["nnunet"], sides["ours"]
        rows = [
            ("nnU-Net nnUNetPredictor (as shipped)", nnunet),
            ("  its bare forward, batch 1", nnunet["bare"]),
            ("ours (Segmenter.segment)", ours),
            (f"  its bare forward, batch {args.batch}", ours["bare"]),
        ]
        for label, side in rows:
            print(
                f"{mirroring:10}{label:40}{side['seconds']:>9.2f}"
                f"{side['cpu_seconds']:>9.2f}{side['forwards']:>10}"
            )
        print(
            f"{'':10}ratios: nnU-Net / ours = {nnunet['seconds'] / ours['seconds']:.2f}x faster "
            f"(CPU s {nnunet['cpu_seconds'] / ours['cpu_seconds']:.2f}x); ours' bare forward / ours "
            f"= {ours['bare']['seconds'] / ours['seconds']:.2f}; nnU-Net's bare forward / nnU-Net "
            f"= {nnunet['bare']['seconds'] / nnunet['seconds']:.2f}; ours / nnU-Net's bare forward "
            f"= {nnunet['bare']['seconds'] / ours['seconds']:.2f}x faster"
        )
        for other, figures in agreement.items():
            what = "nnU-Net as shipped (fp16 sums)" if other == "nnunet" else "nnU-Net, fp32 sums"
            print(
                f"{'':10}agreement with {what}: max |dp| {figures['max']:.2e}, mean |dp| "
                f"{figures['mean']:.2e}, masks equal on {figures['mask_equal']:.4%} of voxels"
            )
    print(f"ours: set-up (load, probe, warm-up) {any_side['setup']:.2f} s, not timed above")


# --- a child: one side, in a fresh interpreter -----------------------------------------------
def _measure(side: str, config: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(config["threads"])
    volume = np.load(config["volume"])
    tag = "on" if config["mirroring"] else "off"
    out = Path(config["out"])
    if side in ("nnunet", "exact"):
        result = _nnunet(volume, config, exact=side == "exact")
    else:
        result = _ours(volume, config)
    mask, probability = result.pop("mask"), result.pop("probability")
    np.save(out / f"{side}-{tag}-mask.npy", mask)
    np.save(out / f"{side}-{tag}-probability.npy", probability)
    result["threads"] = torch.get_num_threads()
    return result


def _timed(function, device: str) -> tuple[Any, float, float]:
    import torch

    start, cpu = time.perf_counter(), time.process_time()
    value = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start, time.process_time() - cpu


def _best_of(repeat: int, whole, bare, device: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Alternate the whole-volume run and the bare forwards; keep each one's fastest.

    The bare forwards run with a second, idle thread alive, as both engines run theirs (our
    window prefetch, nnU-Net's producer thread), so that they differ from the whole-volume runs
    only by what the engines do around the forwards.
    """
    from concurrent.futures import ThreadPoolExecutor

    found: dict[str, dict[str, Any]] = {}
    value = None
    for _ in range(max(1, repeat)):
        for key, function in (("whole", whole), ("bare", bare)):
            with ThreadPoolExecutor(1) as helper:
                if key == "bare":
                    helper.submit(lambda: None).result()  # the thread exists, then idles
                result, seconds, cpu = _timed(function, device)
            if key not in found or seconds < found[key]["seconds"]:
                found[key] = {"seconds": seconds, "cpu_seconds": cpu}
                value = result if key == "whole" else value
    return value, found["whole"], found["bare"]


def _nnunet(volume: np.ndarray, config: dict[str, Any], *, exact: bool) -> dict[str, Any]:
    import contextlib

    import torch

    from runtime.inference.models import load_model
    from tests.support.nnunet_reference import fp32_sums, nnunet_predictor, nnunet_probabilities

    folder = Path(config["folder"])
    model = load_model(folder)  # for the label to compare and the window count only
    folds = [int(f) if f.isdigit() else f for f in _folds(folder)]
    predictor = nnunet_predictor(
        folder, folds, mirroring=config["mirroring"], device=config["device"]
    )
    patch = tuple(model.recommended["patch_size"])
    flips = 2 ** len(model.mirror_axes or ()) if config["mirroring"] else 1
    forwards = _windows(model, volume) * flips * len(folds)
    device = torch.device(config["device"])
    network = predictor.network.to(device).eval()
    window = torch.randn(1, 1, *patch, device=device)

    def bare() -> None:  # what its loop runs: one window per forward, autocast on CUDA only
        autocast = torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for _ in range(forwards):
                network(window)

    context = fp32_sums() if exact else contextlib.nullcontext()
    with context:
        nnunet_probabilities(predictor, np.full(patch, 100, np.uint8))  # warm-up
        if exact:
            (segmentation, probabilities), seconds, cpu = _timed(
                lambda: nnunet_probabilities(predictor, volume), config["device"]
            )
            whole, bare_run = {"seconds": seconds, "cpu_seconds": cpu}, None
        else:
            (segmentation, probabilities), whole, bare_run = _best_of(
                config.get("repeat", 1),
                lambda: nnunet_probabilities(predictor, volume),
                bare,
                config["device"],
            )
    return {
        **whole,
        "forwards": forwards,
        "bare": {**(bare_run or {}), "forwards": forwards},
        "mask": (segmentation == model.labels.foreground_label).astype(np.uint8),
        "probability": probabilities[model.labels.foreground_head].astype(np.float32),
    }


def _ours(volume: np.ndarray, config: dict[str, Any]) -> dict[str, Any]:
    import torch

    from runtime.contract.tta import IDENTITY
    from runtime.inference.engine import InferenceOptions, Segmenter
    from runtime.inference.models import load_model

    start = time.perf_counter()
    model = load_model(config["folder"])
    options = InferenceOptions(
        batch_size=config["batch"],
        tta=None if config["mirroring"] else (IDENTITY,),
        device=config["device"],
        amp=config["amp"],
        compile=config["compile"],
        keep_probability=True,
    )
    segmenter = Segmenter(model, options, log=lambda line: print(line, file=sys.stderr))
    setup = time.perf_counter() - start
    worker = segmenter.probed_forward()  # replica, precision, layout, compile, as probed
    device = worker.device
    flips = len(segmenter.tta)
    batches = math.ceil(_windows(model, volume) * flips / worker.batch_size)
    patch = segmenter.patch_size
    batch = torch.randn(worker.batch_size, 1, *patch, device=device)

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(batches):
                worker.forward(batch)

    result, whole, bare_run = _best_of(
        config.get("repeat", 1), lambda: segmenter.segment(volume), bare, config["device"]
    )
    chosen = {d.name: d.value for d in segmenter.decisions}
    return {
        **whole,
        "forwards": batches,
        "bare": {**bare_run, "forwards": batches},
        "windows": _windows(model, volume),
        "device": str(device),
        "precision": chosen["precision"],
        "channels_last": chosen["channels_last"] == "on",
        "compiled": chosen["compile"] == "on",
        "setup": setup,
        "mask": result.mask,
        "probability": result.probability,
    }


def _windows(model, volume: np.ndarray) -> int:
    from runtime.inference.sliding_window import plan_windows

    shape = model.prepare_volume(volume).data.shape
    return plan_windows(shape, model.recommended["patch_size"], 0.5).n_windows


def _folds(folder: Path) -> list[str]:
    from runtime.inference.nnunet import open_trained_model_folder

    return open_trained_model_folder(folder).folds


if __name__ == "__main__":
    raise SystemExit(main())
