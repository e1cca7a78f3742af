"""Sub-commands of ``python -m runtime``.

Each module here defines ``configure(parser)`` and ``run(args) -> int`` and is imported only when
its command is chosen, so ``install`` never pays for importing numpy or torch.
"""

from __future__ import annotations

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "install": (
        "runtime.commands.install",
        "install missing packages from attached wheelhouses, offline",
    ),
    "doctor": (
        "runtime.commands.doctor",
        "show wheelhouses, installed/missing packages, tags and GPU",
    ),
    "profile": (
        "runtime.commands.profile",
        "capture this interpreter's target profile for the bundler",
    ),
    "predict": ("runtime.commands.predict", "segment volumes and write a validated submission.zip"),
    "sample": ("runtime.commands.sample", "write synthetic competition-like data"),
}
