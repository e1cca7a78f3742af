"""The options predict adds for zarr input, and the one place predict's options become a run.

Only argparse at import (predict's --help stays instant). :func:`scroll_config` is the single
coupling between predict's parsed options and a whole-scroll run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_scroll_options", "scroll_config", "scroll_options_given"]

_DEFAULTS = {"level": 0, "zarr_output": "both", "threads": 1, "overwrite": False}

_OUTPUTS = {"both": ("mask", "probability"), "mask": ("mask",), "probability": ("probability",)}
# predict's options that need the whole volume (or a per-volume statistic): refused for zarr.
_WHOLE_VOLUME = {
    "min_component_voxels": "--min-component-voxels (connected components span blocks)",
    "fill_holes": "--fill-holes (a cavity can span blocks)",
    "closing_radius": "--closing-radius (needs neighbours across block borders)",
    "hysteresis": "--hysteresis (seeds grow across block borders)",
    "foreground_fraction": "--foreground-fraction (a per-volume threshold)",
    "postprocess": "--postprocess (its clean-up needs the whole volume)",
    "save_probabilities": "--save-probabilities (the probability is an array of OUT.zarr)",
    "preview": "--preview",
    "time_budget": "--time-budget (a killed run resumes instead)",
}


def add_scroll_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "zarr input (INPUT.zarr, an OME-Zarr group or an fsspec URL; -o OUT.zarr)"
    )
    group.add_argument(
        "--level", type=int, default=0, metavar="N", help="OME-Zarr scale level (default: 0)"
    )
    group.add_argument("--region", metavar="Z0:Z1,Y0:Y1,X0:X1", help="only this box")
    group.add_argument(
        "--block",
        type=int,
        metavar="N",
        help="block side in voxels, rounded to whole chunks (default: from free memory and "
        "the patch, at most 512)",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="embedded Dask workers (default: one per GPU, or 1)",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else an embedded one)",
    )
    group.add_argument(
        "--zarr-output",
        choices=tuple(_OUTPUTS),
        default="both",
        help="uint8 arrays to write: mask, probability (round(255 p)) or both (default)",
    )
    group.add_argument(
        "--intensity-stats",
        type=Path,
        metavar="FILE",
        help="JSON with mean and std (default: a sampled pre-pass)",
    )
    group.add_argument(
        "--skip-below",
        type=float,
        metavar="V",
        help="blocks whose input stays below V are written as zeros without a forward",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch CPU threads per worker, pinned for the run (default: 1)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="start OUT.zarr over instead of resuming it"
    )


def scroll_options_given(args: argparse.Namespace) -> list[str]:
    """The zarr-only options set on the command line (refused for TIFF input)."""
    names = ["level", "region", "block", "workers", "scheduler", "zarr_output"]
    names += ["intensity_stats", "skip_below", "threads", "overwrite"]
    return [
        "--" + name.replace("_", "-")
        for name in names
        if getattr(args, name, None) != _DEFAULTS.get(name)
    ]


def scroll_config(args: argparse.Namespace, request: Any) -> Any:
    """predict's parsed options as a :class:`runtime.scroll.run.ScrollConfig`; ``request``: the
    models and engine options as predict reads them (a ``RunRequest``, resolved by the run)."""
    from runtime.contract.errors import InputError
    from runtime.scroll.run import ScrollConfig

    refused = [text for key, text in _WHOLE_VOLUME.items() if getattr(args, key, None)]
    if refused:
        raise InputError(f"zarr input runs block by block; not available: {', '.join(refused)}")
    for key in ("workers", "block", "threads"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise InputError(f"--{key} must be at least 1, got {value}")
    return ScrollConfig(
        input=str(args.input),
        output=str(args.output),
        predict=request,
        level=args.level,
        region=args.region,
        block=args.block,
        workers=args.workers,
        scheduler=args.scheduler,
        kinds=_OUTPUTS[args.zarr_output],
        overwrite=args.overwrite,
        intensity_stats=args.intensity_stats,
        skip_below=args.skip_below,
        threads=args.threads,
    )
