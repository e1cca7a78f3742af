"""``python -m runtime sample -o DIR``: synthetic competition-like data to try every command on."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder to write test_images/, their labels in train_labels/, and test.csv into",
    )
    parser.add_argument(
        "--n", type=int, default=3, metavar="N", help="number of volumes (default: 3)"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="volume shape (default: 64 96 96, seconds on a CPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from runtime.contract.errors import InputError
    from runtime.samples.sample import DEFAULT_SHAPE, write_sample

    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPE
    if args.n < 1 or any(n < 1 for n in shape):
        raise InputError(f"--n and --shape must be positive, got --n {args.n} --shape {shape}")
    root = write_sample(args.out, n=args.n, shape=shape, seed=args.seed)
    print(f"wrote {args.n} volume(s) of shape {'x'.join(map(str, shape))} to {root}")
    # The zip goes to the working folder: on Kaggle the input tree is read-only.
    print(f"try: python -m runtime predict {root} --model demo -o submission.zip")
    print(f"then: python -m runtime score submission.zip {root / 'train_labels'}")
    return 0
