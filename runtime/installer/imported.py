"""Refuse to replace a package that this process has already imported (standard library only).

pip can replace torch's files on disk, but a process that ran ``import torch`` keeps the old
torch's modules and loaded CUDA libraries: the notebook would go on with a mix of both, or crash
at the first import of a submodule. The install must run before anything imports what it
replaces (bootstrap.py in the first cell, or ``!python bootstrap.py`` in its own process).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata

from runtime.contract.errors import InstallError


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(
    names: Iterable[str], modules: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """distribution -> its top-level modules already in ``modules`` (default ``sys.modules``)."""
    wanted = {_canonical(name) for name in names}
    if not wanted:
        return {}
    loaded = {module.partition(".")[0] for module in (sys.modules if modules is None else modules)}
    found: dict[str, list[str]] = {}
    providers: Mapping[str, list[str]] = metadata.packages_distributions()
    for module, distributions in sorted(providers.items()):
        if module not in loaded:
            continue
        for distribution in distributions:
            name = _canonical(distribution)
            if name in wanted:
                found.setdefault(name, []).append(module)
    return found


def refuse_if_imported(replaced: Mapping[str, tuple[str, str]]) -> None:
    """``replaced``: name -> (installed version, new version). One line if any is imported."""
    found = imported_distributions(replaced)
    if not found:
        return
    name = sorted(found)[0]
    installed, new = replaced[name]
    others = sorted(set(found) - {name})
    also = f" (and {', '.join(others)})" if others else ""
    raise InstallError(
        f"{name} {installed} is already imported in this process (module "
        f"{found[name][0]!r}){also}, so replacing it with {new} now would mix two versions; "
        "restart the kernel and run bootstrap.py before anything imports it"
    )
