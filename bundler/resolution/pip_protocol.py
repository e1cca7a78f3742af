"""What the bundler and its pip subprocesses agree on: entry modules, exit status, the spec file.

The bundler never imports pip's internals; it writes a ``SPEC.json`` and runs
``python -m MODULE SPEC.json -- PIP_ARGS`` (:func:`bundler.resolution.resolve.run_shim`), where
``MODULE`` is :data:`ENTRY_MODULES` of ``SPEC["mode"]``: :mod:`bundler.resolution.pip_shim`
resolves for a target, :mod:`bundler.wheelhouse.transport` downloads through pip's session. Both
sides import this module and nothing of each other. Standard library only (pip inside functions,
in the subprocess).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# SPEC["mode"] -> the module run as ``python -m`` for it.
ENTRY_MODULES = {
    "resolve": "bundler.resolution.pip_shim",
    "fetch": "bundler.wheelhouse.transport",
}
# Exit status for "this pip cannot be patched"; the bundler turns it into PipVersionError.
EXIT_UNPATCHABLE = 86
UNPATCHABLE_PREFIX = "kaggle-offline: cannot patch pip: "
# pip settings that say how to reach an index, not which one: kept when the sources are isolated.
TRANSPORT_OPTIONS = frozenset(
    {
        "cert", "client-cert", "proxy", "trusted-host", "timeout", "default-timeout", "retries",
        "resume-retries", "keyring-provider", "cache-dir", "no-cache-dir", "use-feature",
        "use-deprecated",
    }
)  # fmt: skip


class Unpatchable(Exception):
    """pip lacks an internal the subprocess relies on: exit ``EXIT_UNPATCHABLE``, never guess."""


def require(module: Any, attribute: str) -> Any:
    """``module.attribute`` of pip's internals, or :class:`Unpatchable` naming what is missing."""
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise Unpatchable(f"{module.__name__}.{attribute} is missing") from None


def isolate_sources() -> None:
    """Keep pip's configured transport (certificates, proxy, credentials' keyring...) but none of
    its configured sources: the bundler was told exactly which index to use.

    The transport settings found in pip's configuration files become environment variables (which
    pip reads after the files), and then the files are switched off.
    """
    from pip._internal.configuration import Configuration

    configuration = Configuration(isolated=False)
    configuration.load()
    found: dict[str, str] = {}
    for key, value in configuration.items():
        # Some pip releases yield ("section.option", value), others (origin, {"section.option":
        # value}); in both, files come in pip's order of precedence, the strongest last.
        for name, setting in value.items() if isinstance(value, dict) else [(key, value)]:
            section, _, option = name.partition(".")
            if section in ("global", "install", "download") and option in TRANSPORT_OPTIONS:
                found["PIP_" + option.upper().replace("-", "_")] = str(setting)
    for variable, setting in found.items():
        os.environ.setdefault(variable, setting)  # the environment beats the files, as in pip
    os.environ["PIP_CONFIG_FILE"] = os.devnull


def main(argv: list[str], mode: str, run: Callable[[dict[str, Any], list[str]], int]) -> int:
    """An entry module's ``__main__``: read SPEC, isolate the sources if asked, ``run``."""
    if len(argv) < 2 or argv[1] != "--":
        print(f"usage: python -m {ENTRY_MODULES[mode]} SPEC.json -- PIP-ARGS", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if spec.get("mode", mode) != mode:
        print(f"{argv[0]} is a {spec['mode']!r} spec, not {mode!r}", file=sys.stderr)
        return 2
    if spec.get("isolate_sources"):
        isolate_sources()
    try:
        return run(spec, argv[2:])
    except Unpatchable as error:
        print(f"{UNPATCHABLE_PREFIX}{error}", file=sys.stderr)
        return EXIT_UNPATCHABLE
