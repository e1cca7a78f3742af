"""The online half of kaggle-offline: resolve for a Kaggle kernel and vendor a verified wheelhouse.

``build()`` resolves requirements with pip's resolver *for a target profile* (its wheel tags, its
marker environment and its preinstalled packages) and writes a wheelhouse folder ready for
``kaggle datasets create -p DIR --dir-mode zip``; ``verify()`` checks one. ``prepare_model()``
checks a model and writes its upload folder; ``write_kernel()`` writes the notebook and
``kernel-metadata.json`` for ``kaggle kernels push``. The names below are imported on first use,
so that pip's subprocess (``bundler.pip_shim``) starts fast.

May import: the standard library, pip, ``packaging``, ``build``, ``nbformat`` (the notebook) and
:mod:`runtime.contract` (the manifest and profile it writes), plus ``runtime.commands.predict``
(predict's option definitions, argparse only); never the kernel's layers below it, except
``runtime.inference`` inside ``bundler.model_upload``'s functions: the model check runs the
kernel's own loader and engine (torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime import __version__

if TYPE_CHECKING:
    from bundler.builder import BuildResult, build
    from bundler.kernel import KernelRequest, write_kernel
    from bundler.model_upload import prepare_model
    from bundler.profiles import get_profile
    from bundler.verification import verify

__all__ = [
    "BuildResult",
    "KernelRequest",
    "__version__",
    "build",
    "get_profile",
    "prepare_model",
    "verify",
    "write_kernel",
]

_LAZY = {
    "BuildResult": "bundler.builder",
    "build": "bundler.builder",
    "get_profile": "bundler.profiles",
    "verify": "bundler.verification",
    "KernelRequest": "bundler.kernel",
    "write_kernel": "bundler.kernel",
    "prepare_model": "bundler.model_upload",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bundler' has no attribute {name!r}")
