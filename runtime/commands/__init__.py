"""Sub-commands of ``python -m runtime``.

Each module here defines ``configure(parser)`` and ``run(args) -> int`` and is imported only when
its command is chosen, so ``install`` never pays for importing numpy or torch.

May import: every layer (the top of the diamond: contract <- installer, volumes, inference <-
pipeline, samples <- commands); the commands marked ``standard_library_only`` only the contract
and the installer.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    # Runs in a kernel before anything is installed: the module and everything it imports, inside
    # functions too, must be standard library only (tests/test_layers.py checks it).
    standard_library_only: bool = False


COMMANDS: dict[str, Command] = {
    "install": Command(
        "runtime.commands.install",
        "install missing packages from attached wheelhouses, offline",
        standard_library_only=True,
    ),
    "doctor": Command(
        "runtime.commands.doctor",
        "show wheelhouses, installed/missing packages, predict's needs, tags and GPU; exit 1 on "
        "problems",
    ),
    "profile": Command(
        "runtime.commands.profile",
        "capture this interpreter's target profile for the bundler",
        standard_library_only=True,
    ),
    "predict": Command(
        "runtime.commands.predict", "segment volumes and write a validated submission.zip"
    ),
    "score": Command(
        "runtime.commands.score", "score masks against labels with the competition's metric"
    ),
    "tune": Command(
        "runtime.commands.tune", "choose threshold and post-processing on saved probabilities"
    ),
    "fuse": Command("runtime.commands.fuse", "fuse saved probabilities of several models"),
    "sample": Command("runtime.commands.sample", "write synthetic competition-like data"),
}


_DEFAULT_ROOT = "default $KAGGLE_OFFLINE_INPUT_ROOT or /kaggle/input"


def add_wheelhouse_arguments(
    parser: argparse.ArgumentParser, *, wheelhouse_help: str | None, input_root_purpose: str
) -> None:
    """``--input-root`` (and ``--wheelhouse DIR``, repeatable, unless its help is None)."""
    if wheelhouse_help is not None:
        parser.add_argument(
            "--wheelhouse", action="append", default=[], metavar="DIR", help=wheelhouse_help
        )
    parser.add_argument(
        "--input-root", metavar="DIR", help=f"{input_root_purpose} ({_DEFAULT_ROOT})"
    )


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--jobs N`` and ``--progress/--no-progress``, for commands that work volume by volume."""
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes (default: one per CPU, within memory)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a tqdm progress bar (default: when tqdm is installed and on a terminal)",
    )


def log_to_stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
