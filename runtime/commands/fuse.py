"""``python -m runtime fuse DIR1 DIR2 ... --weights W1,W2,... -o DIR``: ensemble saved probabilities."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.commands import log_to_stderr
from runtime.contract.settings import EnsembleMode, ProbabilityEncoding


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="folders written by predict --save-probabilities",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for the fused probabilities",
    )
    parser.add_argument(
        "--weights",
        metavar="W1,W2,...",
        help="one positive weight per input (default: equal); normalised",
    )
    parser.add_argument(
        "--mode",
        choices=list(EnsembleMode),  # fusing saved probabilities is ensembling after the fact
        default=EnsembleMode.PROBABILITIES,
        help="average probabilities (default) or log-odds",
    )
    parser.add_argument(
        "--encoding",
        choices=list(ProbabilityEncoding),
        default=ProbabilityEncoding.UINT8,
        help="how the fused probabilities are stored (default: uint8)",
    )


def run(args: argparse.Namespace) -> int:
    from runtime.contract.errors import InputError
    from runtime.contract.settings import resolve_ensemble
    from runtime.volumes.probability import fuse

    weights = None
    if args.weights:
        try:
            weights = [float(part) for part in args.weights.split(",") if part.strip()]
        except ValueError:
            raise InputError(
                f"--weights: give numbers separated by commas, got {args.weights!r}"
            ) from None
    fusion = resolve_ensemble(
        len(args.inputs), weights, args.mode, what="probability folders", weights_option="--weights"
    )
    fused = fuse(args.inputs, args.output, fusion, encoding=args.encoding, log=log_to_stderr)
    print(f"wrote {len(fused.files)} fused volume(s) to {fused.folder}")
    return 0
