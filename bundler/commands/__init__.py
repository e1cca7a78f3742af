"""Sub-commands of ``python -m bundler``.

Each module here defines ``configure(parser)`` and ``run(args) -> int`` and is imported only when
its command is chosen, as in :mod:`runtime.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


# What `pip install ".[bundler]"` provides (pyproject.toml's bundler extra), by import name.
BUNDLER_EXTRA_MODULES = {"packaging": "packaging>=24", "pip": "pip>=24.2,<26.4",
                         "build": "build>=1.2", "nbformat": "nbformat>=5.9"}  # fmt: skip


def missing_extra_message(module: str | None) -> str | None:
    """One line for ``No module named <module>`` when it is one of the bundler extra's."""
    top = (module or "").split(".")[0]
    if top not in BUNDLER_EXTRA_MODULES:
        return None
    return (
        f"the bundler needs its extras (no module named {top!r} here): {install_extras_command()}"
    )


def install_extras_command() -> str:
    """The exact command that gives this bundler its extras."""
    root = Path(__file__).parent.parent.parent  # not resolved: a linked copy is no clone
    try:
        in_clone = 'name = "kaggle-offline"' in (root / "pyproject.toml").read_text("utf-8")
    except OSError:
        in_clone = False
    if in_clone:
        where = "." if root == Path.cwd() else str(root)
        return f"python -m pip install '{where}[bundler]'"
    return "python -m pip install " + " ".join(f"'{r}'" for r in BUNDLER_EXTRA_MODULES.values())
