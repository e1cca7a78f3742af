"""Train the built-in demo model on synthetic papyrus volumes, on the CPU, in a few minutes.

Usage::

    python -m runtime.samples.demo.train --out runtime/samples/demo  # the committed demo (defaults below)
    python -m runtime.samples.demo.train --out /tmp/demo --steps 300  # a quick, worse one

Recipe (every choice is a flag default, so the committed model is reproducible):

- Data: ``--volumes`` synthetic volumes of 64^3 (seeds 0, 1, ...; see :mod:`runtime.samples.synthetic`),
  sampled as random ``--patch``^3 windows with random flips and axis permutations, so the model
  does not learn one orientation of the layers. Some windows get a border of zeros (air), as the
  engine pads volumes smaller than its patch, and the model must not see sheets in that edge.
- Net: :class:`runtime.inference.unet.UNet3D` with channels (8, 16, 32) and batch norm. Batch norm rather than
  instance norm because in eval mode it is a fixed per-voxel function: the output of a window then
  does not depend on what else the window holds, so any inference patch size behaves like training.
- Loss: binary cross-entropy plus soft Dice, both over voxels whose label is not 2 (unlabeled).
- AdamW with a one-cycle learning-rate schedule; ``torch.manual_seed(--seed)`` and numpy seeds
  make a run repeatable on one machine and thread count (floating-point sums on other CPUs differ).
- Validation: fresh volumes (seeds from 10_000) of the shape (40, 72, 56), never seen in training,
  zero-padded to the recommended patch as the engine does. The Dice at threshold 0.5 and that of
  the best global threshold are printed and quoted in config.json's "description". The tests use
  other seeds again (from 20_000).

It writes ``weights.pt`` (a plain ``state_dict``, fp32, loadable with ``weights_only=True``) and
``config.json`` in the model-directory format of :mod:`runtime.inference.unet`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig
from runtime.samples.synthetic import IGNORE_LABEL, SURFACE_LABEL, SyntheticVolume, synthetic_volume
from runtime.volumes.scoring import dice_score

ARCHITECTURE = UNetConfig(channels=(8, 16, 32), norm="batch", convs_per_level=2)
TRAIN_SHAPE = (64, 64, 64)
VALIDATION_SHAPE = (40, 72, 56)
VALIDATION_SEED = 10_000
INFERENCE_DEFAULTS = {"patch_size": [64, 64, 64], "overlap": 0.5, "threshold": 0.5}
WEIGHTS_NAME = "weights.pt"
PADDED_FRACTION = 0.3  # share of training patches given an air-padded border


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.samples.demo.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=4, help="patches per step")
    parser.add_argument(
        "--patch", type=int, default=32, help="cubic training patch edge (mult. of 4)"
    )
    parser.add_argument("--volumes", type=int, default=40, help="synthetic training volumes")
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--validate", type=int, default=4, help="validation volumes")
    args = parser.parse_args(argv)
    multiple, largest = ARCHITECTURE.size_multiple, min(TRAIN_SHAPE)
    if args.patch % multiple or not multiple <= args.patch <= largest:
        parser.error(f"--patch must be a multiple of {multiple} from {multiple} to {largest}")
    for name in ("steps", "batch", "volumes", "validate", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report = train(args)
    report["seconds"] = round(time.perf_counter() - started, 1)
    _save(args.out, report.pop("model"), report)
    print(
        f"wrote {args.out} in {report['seconds']} s: validation Dice {report['validation_dice']:.4f}"
        f" (best global threshold {report['threshold_dice']:.4f})"
    )
    return 0


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pool = [synthetic_volume(TRAIN_SHAPE, args.seed * 1000 + i) for i in range(args.volumes)]
    mean, std = _normalization(pool)
    images = torch.from_numpy(np.stack([v.image for v in pool])).float().sub_(mean).div_(std)
    labels = torch.from_numpy(np.stack([v.label for v in pool]))

    model = UNet3D(ARCHITECTURE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    model.train()
    running = 0.0
    for step in range(1, args.steps + 1):
        x, y = _batch(images, labels, args.batch, args.patch, rng, air=-mean / std)
        loss = _loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 200 == 0 or step == args.steps:
            print(f"step {step:5d}  loss {running:.4f}", flush=True)

    model.eval()
    validation = [
        synthetic_volume(VALIDATION_SHAPE, VALIDATION_SEED + i) for i in range(args.validate)
    ]
    dice = [dice_score(predict_volume(model, v.image, mean, std) > 0, v.label) for v in validation]
    threshold = [_best_threshold_dice(v) for v in validation]
    return {
        "model": model,
        "normalization": {"mean": mean, "std": std},
        "validation_dice": float(np.mean(dice)),
        "threshold_dice": float(np.mean(threshold)),
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "volumes": args.volumes,
        "seed": args.seed,
        "torch": torch.__version__.split("+")[0],
    }


def predict_volume(
    model: torch.nn.Module, image: np.ndarray, mean: float, std: float
) -> np.ndarray:
    """Foreground logits of a whole volume in one forward.

    Like the engine, axes shorter than the recommended patch are padded with zeros (air) on both
    sides; every axis is then padded up to the network's size multiple.
    """
    multiple = ARCHITECTURE.size_multiple
    pad = []
    for size, patch in zip(image.shape, INFERENCE_DEFAULTS["patch_size"], strict=True):
        padded = max(size, patch)
        padded += -padded % multiple
        before = (padded - size) // 2
        pad.append((before, padded - size - before))
    x = torch.from_numpy(np.pad(image, pad)).float().sub_(mean).div_(std)
    with torch.inference_mode():
        logits = model(x[None, None])[0, 0]
    crop = tuple(
        slice(before, before + size) for (before, _), size in zip(pad, image.shape, strict=True)
    )
    return logits[crop].numpy()


def _normalization(pool: list[SyntheticVolume]) -> tuple[float, float]:
    values = np.concatenate([v.image.ravel() for v in pool]).astype(np.float64)
    # Rounded: config.json stays readable and the numbers carry no false precision.
    return round(float(values.mean()), 1), round(float(values.std()), 1)


def _batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    patch: int,
    rng: np.random.Generator,
    *,
    air: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        index = int(rng.integers(len(images)))
        corner = [int(rng.integers(0, size - patch + 1)) for size in images.shape[1:]]
        window = tuple(slice(c, c + patch) for c in corner)
        x, y = images[index][window].clone(), labels[index][window].clone()
        if rng.random() < PADDED_FRACTION:
            _pad_with_air(x, y, rng, air)
        order = [int(a) for a in rng.permutation(3)]
        flips = [axis for axis in range(3) if rng.random() < 0.5]
        x, y = x.permute(order), y.permute(order)
        if flips:
            x, y = x.flip(flips), y.flip(flips)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs)[:, None].contiguous(), torch.stack(ys)[:, None].contiguous()


def _pad_with_air(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, air: float) -> None:
    """Blank a slab at one or both ends of an axis, as the engine's zero padding of small volumes
    does: without it the net mistakes the sudden edge of the volume for a bright sheet."""
    axis = int(rng.integers(3))
    size = x.shape[axis]
    for end in ("start", "stop") if rng.random() < 0.5 else (rng.choice(["start", "stop"]),):
        depth = int(rng.integers(1, size // 2))
        index: list[slice] = [slice(None)] * 3
        index[axis] = slice(0, depth) if end == "start" else slice(size - depth, size)
        x[tuple(index)] = air
        y[tuple(index)] = IGNORE_LABEL  # the engine crops padding away: nothing to learn there


def _loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    scored = (label != IGNORE_LABEL).float()
    target = (label == SURFACE_LABEL).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=scored, reduction="sum")
    bce = bce / scored.sum().clamp_min(1.0)
    probability = torch.sigmoid(logits) * scored
    overlap = (probability * target).sum()
    soft_dice = (2 * overlap + 1.0) / (probability.sum() + (target * scored).sum() + 1.0)
    return bce + (1 - soft_dice)


def _best_threshold_dice(volume: SyntheticVolume) -> float:
    return max(dice_score(volume.image >= t, volume.label) for t in range(20, 240, 4))


def _save(out: Path, model: torch.nn.Module, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    partial = weights.with_name(weights.name + ".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(weights)
    text = json.dumps(model_config(report), indent=2) + "\n"
    partial = out / "config.json.partial"
    partial.write_text(text, encoding="utf-8")
    partial.replace(out / "config.json")


def model_config(report: dict[str, Any]) -> dict[str, Any]:
    """The config.json of a trained demo; how it was made goes into its one-line description."""
    recipe = ", ".join(
        f"{key} {report[key]}" for key in ("steps", "batch", "patch", "volumes", "seed")
    )
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": "demo",
        "description": (
            "tiny 3D U-Net for synthetic papyrus sheets, made by `python -m runtime.samples.demo.train` "
            f"({recipe}; torch {report['torch']}); "
            f"validation Dice {report['validation_dice']:.3f} against "
            f"{report['threshold_dice']:.3f} for the best global threshold"
        ),
        "architecture": ARCHITECTURE.to_dict(),
        "weights": WEIGHTS_NAME,
        "normalization": report["normalization"],
        "foreground_class": None,
        "inference": INFERENCE_DEFAULTS,
    }


if __name__ == "__main__":
    sys.exit(main())
