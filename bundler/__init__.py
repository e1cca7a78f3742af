"""The online half of kaggle-offline: resolve for a Kaggle kernel and vendor a verified wheelhouse.

``build()`` resolves requirements with pip's resolver *for a target profile* (its wheel tags, its
marker environment and its preinstalled packages) and writes a wheelhouse folder ready for
``kaggle datasets create -p DIR --dir-mode zip``; ``verify()`` checks one. The names below are
imported on first use, so that pip's subprocess (``bundler.pip_shim``) starts fast.

May import: the standard library, pip, ``packaging``, ``build`` and :mod:`runtime.contract`
(the manifest and profile it writes); never the kernel's layers below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime import __version__

if TYPE_CHECKING:
    from bundler.builder import BuildResult, build
    from bundler.profiles import get_profile
    from bundler.verification import verify

__all__ = ["BuildResult", "__version__", "build", "get_profile", "verify"]

_LAZY = {
    "BuildResult": "bundler.builder",
    "build": "bundler.builder",
    "get_profile": "bundler.profiles",
    "verify": "bundler.verification",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bundler' has no attribute {name!r}")
