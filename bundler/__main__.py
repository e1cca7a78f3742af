"""``python -m bundler`` / ``kaggle-bundle``: a thin dispatcher over :mod:`bundler.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bundler.commands import COMMANDS, EXIT_ERROR, missing_extra_message
from runtime import __version__
from runtime.commands.parsing import HelpfulParser
from runtime.contract.errors import KaggleOfflineError


def _build_parser(chosen: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser, and the chosen command's own (``build`` parses its arguments intermixed)."""
    parser = HelpfulParser(
        prog="python -m bundler",
        description="Vendor a hash-locked wheelhouse dataset for an offline Kaggle kernel.",
    )
    parser.add_argument("--version", action="version", version=f"kaggle-offline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen_parser = parser
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(
            name, help=command.help, description=command.help, allow_abbrev=command.allow_abbrev
        )
        # Only the chosen command's module is imported (the others may need torch or pip).
        if name == chosen:
            importlib.import_module(command.module).configure(command_parser)
            chosen_parser = command_parser
    return parser, chosen_parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except ModuleNotFoundError as error:
        # A bundler without its extras (even for --help): one line with the command, no traceback.
        message = missing_extra_message(error.name)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _main(argv: list[str]) -> int:
    # The command is the first word that is not an option (the only options before it are -h and
    # --version): a requirement or a title named like a command does not count.
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    chosen = first if first in COMMANDS else None
    parser, command_parser = _build_parser(chosen)
    if chosen is not None and argv[0] == chosen and COMMANDS[chosen].intermixed:
        args = command_parser.parse_intermixed_args(argv[1:])
        args.command = chosen
    else:
        args = parser.parse_args(argv)
    args.argv = argv  # `kernel` passes its predict options on exactly as typed
    module = importlib.import_module(COMMANDS[args.command].module)
    try:
        return int(module.run(args) or 0)
    except KaggleOfflineError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
