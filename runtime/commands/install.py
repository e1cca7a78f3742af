"""``python -m runtime install``: install missing packages from attached wheelhouses, offline."""

from __future__ import annotations

import argparse
import json
import sys

from runtime.commands import add_wheelhouse_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    from runtime.installer.lock import DEFAULT_TIMEOUT

    add_wheelhouse_arguments(
        parser,
        wheelhouse_help="a wheelhouse folder to use (repeatable); without it the input root is "
        "searched",
        input_root_purpose="where to search for wheelhouses; searched as well as any --wheelhouse "
        "when given",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="byte-compile every installed module now (default: on first import, which is faster)",
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also install from folders of wheels that have no manifest.json (nothing to check "
        "their hashes against); without it they are left out, with a warning",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for another install into this environment to finish "
        f"(default: {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")


def run(args: argparse.Namespace) -> int:
    from runtime.installer.core import install

    report = install(
        args.wheelhouse,
        input_root=args.input_root,
        search=not args.wheelhouse or args.input_root is not None,
        dry_run=args.dry_run,
        compile_bytecode=args.compile,
        allow_unverified=args.allow_unverified,
        lock_timeout=args.lock_timeout,
        log=(lambda message: print(message, file=sys.stderr)) if args.verbose else None,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0
