"""Sub-commands of ``python -m bundler``.

Each module here defines ``configure(parser)`` and ``run(args) -> int`` and is imported only when
its command is chosen, as in :mod:`runtime.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_PROBLEMS = 1  # the command ran and found problems (build, verify)
EXIT_ERROR = 2  # a one-line error stopped it


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    # Options and requirements in any order, as pip reads them
    # (`build imagecodecs --optional imagecodecs tifffile`).
    intermixed: bool = False
    # Full option names only: `kernel` passes its predict options to the notebook exactly as typed.
    allow_abbrev: bool = True


COMMANDS: dict[str, Command] = {
    "build": Command(
        "bundler.commands.build",
        "resolve for a target kernel and write a wheelhouse",
        intermixed=True,
    ),
    "verify": Command("bundler.commands.verify", "check a wheelhouse: hashes, tags, closure"),
    "profiles": Command("bundler.commands.profiles", "list the built-in target profiles"),
    "model": Command(
        "bundler.commands.model", "check a model on the CPU and write its Kaggle upload folder"
    ),
    "kernel": Command(
        "bundler.commands.kernel",
        "write the offline submission notebook and kernel-metadata.json",
        allow_abbrev=False,
    ),
}
