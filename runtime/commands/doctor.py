"""``python -m runtime doctor``: show wheelhouses, installed/missing packages, tags and GPU.

Exit status: 0 when it found no problem, 1 when it did (each is listed), 2 on an error.
"""

from __future__ import annotations

import argparse
import json

from runtime.commands import add_wheelhouse_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_wheelhouse_arguments(
        parser,
        wheelhouse_help="also look at this wheelhouse folder (repeatable)",
        input_root_purpose="where to search for wheelhouses",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--no-gpu", action="store_true", help="skip the GPU probe (importing torch)"
    )


def run(args: argparse.Namespace) -> int:
    from runtime.inference.devices import gpu_info
    from runtime.installer.doctor import diagnose

    gpu = {} if args.no_gpu else gpu_info()
    diagnosis = diagnose(args.wheelhouse, input_root=args.input_root, gpu=gpu)
    print(json.dumps(diagnosis.to_dict(), indent=2) if args.json else diagnosis.render())
    return 0 if diagnosis.ok else 1
