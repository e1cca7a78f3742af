"""``python -m runtime`` / ``kaggle-runtime``: a thin dispatcher over the library API."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runtime import __version__
from runtime.commands import COMMANDS
from runtime.contract.errors import KaggleOfflineError


def _build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        package = (error.name or "").split(".")[0]
        if not package or package in ("runtime", "bundler"):
            raise  # our own code is broken: the traceback is the report
        print(f"error: {_missing_package(args.command, package)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# How a user gets a package that a command imports when it runs (module name -> distribution).
_TORCH_HINT = (
    "every Kaggle notebook image has it (choose one in the notebook's settings); elsewhere "
    "install it (pip install torch; CPU wheels: --index-url https://download.pytorch.org/whl/cpu) "
    "or add torch to the wheelhouse's requirements (bundler build -r requirements.txt)"
)
_PREDICT_EXTRA = {"numpy": "numpy", "tifffile": "tifffile", "PIL": "Pillow", "scipy": "scipy"}


def _missing_package(command: str, module: str) -> str:
    if module == "torch":
        name, hint = "torch", _TORCH_HINT
    elif module in _PREDICT_EXTRA:
        name = _PREDICT_EXTRA[module]
        hint = (
            "the Kaggle image has it; elsewhere install the predict extra "
            "(pip install 'kaggle-offline[predict]') or bundle it in the wheelhouse"
        )
    else:
        name, hint = module, f"install it (pip install {module}) or bundle it in the wheelhouse"
    return (
        f"python -m runtime {command} needs the Python package {name!r}, which is not "
        f"installed for {sys.executable}: {hint}"
    )


if __name__ == "__main__":
    sys.exit(main())
