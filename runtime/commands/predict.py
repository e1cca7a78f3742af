"""``python -m runtime predict INPUT --model PATH|demo -o submission.zip``.

Only argparse runs at import: numpy and torch load when the command runs, so ``--help`` is
instant and typos are reported before any model is loaded. Parsing ends in a
:class:`~runtime.contract.settings.RunRequest` (:func:`request_from_args`); what applies and what
conflicts is decided by :func:`runtime.contract.settings.resolve`, not here. The allowed values
are the settings' enums.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from runtime.contract.settings import (
    Amp,
    Checkpoint,
    EnsembleMode,
    ProbabilityEncoding,
    RunRequest,
)
from runtime.contract.tta import IDENTITY, Transform, parse_tta

_DURATION = re.compile(r"(?P<value>\d+(?:\.\d*)?|\.\d+)(?P<unit>[hms]?)")
_DEVICE = re.compile(r"auto|cpu|cuda(?::\d+)?")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=_input_path,
        help="a .tif volume, a folder of them, or a competition root holding test_images/ "
        "(and test.csv, whose ids must all be found); or a zarr / OME-Zarr volume (path or "
        "fsspec URL, *.zarr), run block by block into -o OUT.zarr (see docs/whole-scrolls.md)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=_zip_path,
        default=Path("submission.zip"),
        help="the submission zip to write, or a folder to write submission.zip into "
        "(default: submission.zip)",
    )
    add_predict_options(parser)
    from runtime.scroll.options import add_scroll_options

    add_scroll_options(parser)


def add_predict_options(parser: argparse.ArgumentParser, *, model_option: bool = True) -> None:
    """Every option of predict but INPUT and -o, with the types that check them.

    ``python -m bundler kernel`` takes the same options (without ``--model``: its models come
    from Kaggle sources) through this function, so a notebook is generated only with options
    that predict accepts, checked before anything is written.
    """
    model = parser.add_argument_group("model")
    if model_option:
        model.add_argument(
            "--model",
            action="append",
            dest="models",
            metavar="PATH|demo",
            help="'demo', a model folder or its config.json, a TorchScript or .pt2 file, or an "
            "nnU-Net v2 trained-model folder (or a folder holding exactly one, such as a Kaggle "
            "model mount); repeat for an ensemble (default: demo)",
        )
    model.add_argument(
        "--ensemble-mode",
        choices=list(EnsembleMode),
        metavar="MODE",
        help="how ensemble members are averaged: probabilities (default) or logits",
    )
    model.add_argument(
        "--ensemble-weights",
        type=_floats,
        metavar="W1,W2,...",
        help="one positive weight per --model (default: equal)",
    )
    model.add_argument(
        "--foreground-class",
        type=int,
        metavar="K",
        help="for models with C>=2 output classes: the foreground class (nnU-Net: a label "
        "value of dataset.json; default: the first label that is neither background nor ignore)",
    )
    nnunet = parser.add_argument_group("nnU-Net trained-model folders")
    nnunet.add_argument(
        "--folds",
        type=_folds,
        metavar="F1,F2,...",
        help="folds to average, e.g. 0,1,2 or all (fold_all) (default: every numbered fold_* "
        "with the checkpoint)",
    )
    nnunet.add_argument(
        "--checkpoint",
        choices=list(Checkpoint),
        help="checkpoint_final.pth (default) or checkpoint_best.pth",
    )
    nnunet.add_argument(
        "--spacing",
        type=_spacing,
        metavar="Z,Y,X",
        help="voxel spacing of the input volumes (TIFFs carry none; default: 1,1,1); a model "
        "trained at another spacing is refused, never resampled silently",
    )

    engine = parser.add_argument_group("inference")
    engine.add_argument(
        "--patch-size",
        type=_patch_size,
        metavar="Z,Y,X",
        help="sliding-window patch, e.g. 128,128,128 or 128 (default: the model's recommendation)",
    )
    engine.add_argument(
        "--overlap",
        type=_overlap,
        metavar="F",
        help="window overlap in [0, 1) (default: the model's, else 0.5)",
    )
    engine.add_argument(
        "--batch-size",
        type=_positive_int,
        default=2,
        metavar="N",
        help="windows per forward pass (default: 2)",
    )
    engine.add_argument(
        "--threshold",
        type=_probability,
        metavar="P",
        help="foreground probability threshold (default: the model's, else 0.5)",
    )
    engine.add_argument(
        "--tta",
        type=_tta,
        default=(IDENTITY,),
        metavar="TTA",
        help="test-time augmentation: 'none' (default); mirror axes, e.g. 0,1,2 (every flip "
        "combination; 'all' = mirror8, nnU-Net's); 'rot7' (identity, 3 flips, 3 quarter turns "
        "in y-x: the public Vesuvius notebooks'); named transforms joined by + (flip_zy, "
        "rot90_yx_1, transpose_yx, ...); or 'auto' (each model's own: an nnU-Net checkpoint's "
        "mirror axes, as nnU-Net's predictor mirrors)",
    )
    engine.add_argument(
        "--device", default="auto", type=_device, help="auto (default), cpu, cuda or cuda:N"
    )
    engine.add_argument(
        "--amp",
        default=Amp.AUTO,
        choices=list(Amp),
        help="mixed precision (default: auto, decided by probing the device)",
    )
    engine.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force torch.compile on or off (default: decided by a probe)",
    )
    engine.add_argument(
        "--time-budget",
        type=_duration,
        metavar="T",
        help="time for the whole run from its start (model loading and zipping included), e.g. "
        "8h, 90m or 3600 (seconds); TTA transforms are dropped to fit it, else a warning",
    )

    post = parser.add_argument_group(
        "post-processing (needs scipy; skipped with a warning without)"
    )
    post.add_argument(
        "--min-component-voxels",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="drop 26-connected components under N voxels (default: 0, off; "
        "Vesuvius winners used about 20000 for 320^3 volumes)",
    )
    post.add_argument(
        "--closing-radius",
        type=_closing_radius,
        default=0,
        metavar="R",
        help="binary closing with a ball of radius R voxels (default: 0, off)",
    )
    post.add_argument(
        "--fill-holes",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fill cavities enclosed by foreground (default: off)",
    )
    post.add_argument(
        "--hysteresis",
        type=_probability_pair,
        metavar="LOW,HIGH",
        help="hysteresis thresholding: seeds above HIGH grow 26-connectedly through voxels "
        "above LOW (instead of --threshold)",
    )
    post.add_argument(
        "--foreground-fraction",
        type=_probability,
        metavar="F",
        help="per-volume threshold: each volume's threshold makes F of it foreground "
        "(clipped to 0.05-0.95; instead of --threshold)",
    )
    post.add_argument(
        "--postprocess",
        type=Path,
        metavar="FILE",
        help="apply the threshold and post-processing of a postprocess.json written by "
        "`runtime tune`, exactly as tune scored them (replaces the options above)",
    )

    saved = parser.add_argument_group("saved probabilities (for score, tune and fuse)")
    saved.add_argument(
        "--save-probabilities",
        type=Path,
        metavar="DIR",
        help="keep each volume's foreground probability as DIR/<id>.npy (memory-mappable), "
        "with DIR/probabilities.json; the masks are unchanged",
    )
    saved.add_argument(
        "--probability-encoding",
        choices=list(ProbabilityEncoding),
        help="uint8 (default, ~33 MB per 320^3 volume, steps of 1/255) or float16 (~66 MB)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--strict",
        action="store_true",
        help="fail on any volume error instead of writing an all-zero stand-in "
        "(submission.zip is then not written)",
    )
    run.add_argument(
        "--allow-missing",
        action="store_true",
        help="write submission.zip even when some ids have no mask (no file, "
        "unreadable header); by default such a zip is kept as *.partial.zip",
    )
    run.add_argument(
        "--preview",
        type=Path,
        metavar="DIR",
        help="write one PNG per volume: middle slice of input, mask and overlay",
    )
    run.add_argument(
        "--metrics",
        type=Path,
        metavar="PATH",
        help="where to write metrics.json (default: beside the zip)",
    )
    run.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where per-volume mask TIFFs go before zipping and stay (default: a "
        "temporary folder beside the zip, removed afterwards)",
    )
    run.add_argument(
        "--prefetch",
        type=_positive_int,
        default=1,
        metavar="N",
        help="volumes read ahead of the engine (default: 1; each costs its size)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a tqdm progress bar (default: when tqdm is installed and on a terminal)",
    )


def request_from_args(args: argparse.Namespace, *, models: list[str] | None = None) -> RunRequest:
    """The run as asked on the command line (``models``: instead of ``--model``, for callers
    whose models come from elsewhere, such as ``bundler kernel``'s Kaggle sources)."""
    specs = models if models is not None else (getattr(args, "models", None) or ["demo"])
    return RunRequest(
        models=tuple(specs),
        ensemble_mode=args.ensemble_mode,
        ensemble_weights=tuple(args.ensemble_weights) if args.ensemble_weights else None,
        foreground_class=args.foreground_class,
        folds=tuple(args.folds) if args.folds is not None else None,
        checkpoint=args.checkpoint,
        spacing=args.spacing,
        patch_size=args.patch_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        time_budget=args.time_budget,
        threshold=args.threshold,
        hysteresis=args.hysteresis,
        foreground_fraction=args.foreground_fraction,
        postprocess_file=args.postprocess,
        min_component_voxels=args.min_component_voxels,
        closing_radius=args.closing_radius,
        fill_holes=args.fill_holes,
        save_probabilities=args.save_probabilities,
        probability_encoding=args.probability_encoding,
        preview_dir=args.preview,
        metrics_path=args.metrics,
        workdir=args.workdir,
        strict=args.strict,
        allow_missing=args.allow_missing,
        prefetch=args.prefetch,
        progress_bar=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    from runtime.commands import log_to_stderr
    from runtime.contract.settings import resolve
    from runtime.pipeline import predict
    from runtime.samples.demo import demo_warning

    if _is_zarr(args.input):
        # Whole scrolls: block by block on Dask (runtime.scroll), the same model options.
        from runtime.scroll.options import scroll_config
        from runtime.scroll.run import run_scroll

        run_scroll(scroll_config(args, request_from_args(args)))
        return 0
    from runtime.contract.errors import InputError
    from runtime.scroll.options import scroll_options_given

    zarr_only = scroll_options_given(args)
    if zarr_only:
        raise InputError(
            f"{', '.join(zarr_only)}: for zarr input only ({args.input} is not *.zarr)"
        )
    request = request_from_args(args)
    resolve(request)  # options that do not apply or conflict are refused before any warning
    warning = demo_warning(args.models or [], args.input)  # said before the run and after it
    if warning:
        log_to_stderr(warning)
    predict(args.input, args.output, request)
    if warning:
        log_to_stderr(warning)
    return 0


# --- argument types: each error is one line naming the value ------------------------------------
def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _closing_radius(text: str) -> int:
    from runtime.volumes.postprocess import check_closing_cost

    radius = _non_negative_int(text)
    try:
        check_closing_cost(radius)  # before any work: its cost grows as r^6
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return radius


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _patch_size(text: str) -> tuple[int, int, int]:
    parts = [p for p in re.split(r"[,x ]+", text.strip()) if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"give Z,Y,X or one size for a cube, got {text!r}")
    sizes = tuple(_positive_int(p) for p in parts)
    return (sizes[0], sizes[1], sizes[2])


def _tta(text: str) -> tuple[Transform, ...] | None:
    try:
        return parse_tta(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _folds(text: str) -> list[str]:
    folds = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not folds or not all(f == "all" or f.isdigit() for f in folds):
        raise argparse.ArgumentTypeError(
            f"give fold numbers and/or 'all', e.g. 0,1,2; got {text!r}"
        )
    return [f if f == "all" else str(int(f)) for f in folds]


def _spacing(text: str) -> tuple[float, float, float]:
    try:
        values = [float(p) for p in re.split(r"[,x ]+", text.strip()) if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give Z,Y,X spacing as numbers, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(v > 0 and v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"give 3 positive numbers Z,Y,X, got {text!r}")
    return (values[0], values[1], values[2])


def _overlap(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _probability(text: str) -> float:
    value = _float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in (0, 1), got {text}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _probability_pair(text: str) -> tuple[float, float]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give LOW,HIGH, e.g. 0.3,0.6, got {text!r}")
    low, high = (_probability(p) for p in parts)
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low, high


def _floats(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give numbers separated by commas, got {text!r}"
        ) from None


def _duration(text: str) -> float:
    """Seconds from "3600", "90m", "8h" or "1h30m"."""
    compact = text.strip().lower().replace(" ", "")
    matches = list(_DURATION.finditer(compact))
    if not compact or "".join(m.group(0) for m in matches) != compact:
        raise argparse.ArgumentTypeError(
            f"give a duration like 8h, 90m, 1h30m or 3600, got {text!r}"
        )
    seconds = sum(float(m.group("value")) * _UNIT_SECONDS[m.group("unit")] for m in matches)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the time budget must be positive, got {text!r}")
    return seconds


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"use auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _is_zarr(value: str | Path) -> bool:
    text = str(value).rstrip("/\\")
    return text.endswith(".zarr") or ("://" in text and ".zarr" in text)


def _input_path(text: str) -> Path | str:
    """A path, or an fsspec URL kept as given (a Path would fold its ``//``)."""
    return text if "://" in text else Path(text)


def _zip_path(text: str) -> Path | str:
    """``-o out/`` or an existing folder means ``out/submission.zip``, as a user would expect;
    a zarr store (``OUT.zarr``, a folder when resumed) or a URL is kept as given."""
    if "://" in text:
        return text
    if _is_zarr(text):
        return Path(text.rstrip("/"))
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / "submission.zip"
    return path
