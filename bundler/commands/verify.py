"""``python -m bundler verify DIR``: check a wheelhouse (hashes, tags, closure) before uploading."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bundler.commands import EXIT_PROBLEMS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wheelhouse", type=Path, metavar="DIR")
    parser.add_argument(
        "--target", metavar="PROFILE", help="check against this profile instead of the manifest's"
    )


def run(args: argparse.Namespace) -> int:
    from bundler.errors import BundlerError
    from bundler.wheelhouse.verification import verify

    if not args.wheelhouse.is_dir():
        state = "is not a folder" if args.wheelhouse.exists() else "does not exist"
        raise BundlerError(
            f"{args.wheelhouse} {state}: give the wheelhouse folder that "
            "python -m bundler build -o DIR wrote"
        )
    problems = verify(args.wheelhouse, args.target)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.wheelhouse}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"{args.wheelhouse}: ok")
    return 0
