"""``python -m runtime doctor``: show wheelhouses, installed/missing packages, tags and GPU."""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wheelhouse",
        action="append",
        default=[],
        metavar="DIR",
        help="also look at this wheelhouse folder (repeatable)",
    )
    parser.add_argument(
        "--input-root",
        metavar="DIR",
        help="where to search for wheelhouses (default $KAGGLE_OFFLINE_INPUT_ROOT or /kaggle/input)",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--no-gpu", action="store_true", help="skip the GPU probe (importing torch)"
    )


def run(args: argparse.Namespace) -> int:
    from runtime.doctor import diagnose

    diagnosis = diagnose(args.wheelhouse, input_root=args.input_root, probe_gpu=not args.no_gpu)
    print(json.dumps(diagnosis.to_dict(), indent=2) if args.json else diagnosis.render())
    return 0
