"""``python -m runtime`` / ``kaggle-runtime``: a thin dispatcher over the library API."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runtime import __version__
from runtime.commands import COMMANDS
from runtime.commands.parsing import HelpfulParser
from runtime.contract.errors import KaggleOfflineError


def _build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = HelpfulParser(
        prog="python -m runtime",
        description="kaggle-offline in the kernel: offline installs, segmentation, submissions.",
    )
    parser.add_argument("--version", action="version", version=f"kaggle-offline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        # Only the chosen command's module is imported, so `install` stays standard-library-only.
        if name == chosen:
            importlib.import_module(command.module).configure(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    args = _build_parser(chosen).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command].module)
    try:
        return int(module.run(args) or 0)
    except KaggleOfflineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        # numpy or torch missing (a bundler-only environment): say what to install, in one line.
        from runtime.installer.needs import missing_module_message

        message = missing_module_message(error.name, args.command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
