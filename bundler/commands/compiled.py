"""``python -m bundler compiled SOURCE -o DIR``: a wheel from a folder of compiled code, for a kernel.

Cross-compiles with zig (the ``ziglang`` package) for the target's Python and glibc, packs the
modules into a ``manylinux`` wheel and checks it: tags, the glibc symbols and libraries it needs,
an import in the target's Python where it is installed. Recipe: docs/official-metric.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bundler.commands import EXIT_PROBLEMS
from bundler.errors import BundlerError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=Path,
        metavar="SOURCE",
        help="a Python project (pyproject.toml/setup.py) or a CMake project with compiled modules",
    )
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="DIR")
    parser.add_argument(
        "--python",
        default="3.12",
        metavar="X.Y",
        help="the target's CPython (default 3.12, Kaggle's); it must be installed here",
    )
    parser.add_argument(
        "--interpreter", type=Path, metavar="PATH", help="that Python (default: pythonX.Y on PATH)"
    )
    parser.add_argument(
        "--glibc",
        default="2.17",
        metavar="2.N",
        help="the oldest glibc the wheel must load on (default 2.17: a manylinux2014 wheel; "
        "Kaggle's image has 2.35)",
    )
    parser.add_argument("--name", help="distribution name of a CMake project's wheel")
    parser.add_argument("--version", help="its version (default 0+g<git commit> or 0)")
    parser.add_argument(
        "--cmake-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for cmake's configure step (repeatable)",
    )
    parser.add_argument(
        "--cmake-target",
        action="append",
        default=[],
        metavar="NAME",
        help="build only this CMake target, e.g. the module's (repeatable; default: all)",
    )
    parser.add_argument("--import-name", help="module to import in the check (default: guessed)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")


def run(args: argparse.Namespace) -> int:
    from bundler.compiled.build import build_compiled_wheel, find_interpreter

    match = re.fullmatch(r"(\d+)\.(\d+)", args.glibc)
    if not match:
        raise BundlerError(f"--glibc {args.glibc!r}: expected 2.N, e.g. 2.17")
    wheel, check = build_compiled_wheel(
        args.source,
        args.out,
        interpreter=find_interpreter(args.python, args.interpreter),
        glibc=(int(match[1]), int(match[2])),
        name=args.name,
        version=args.version,
        cmake_args=args.cmake_arg,
        cmake_targets=args.cmake_target,
        import_name=args.import_name,
        jobs=args.jobs,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(check.summary())
    if check.problems:
        print(f"{len(check.problems)} problem(s) in {wheel}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"wrote {wheel}")
    return 0
