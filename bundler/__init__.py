"""The online half of kaggle-offline: resolve for a Kaggle kernel and vendor a verified wheelhouse.

``build()`` resolves requirements with pip's resolver *for a target profile* (its wheel tags, its
marker environment and its preinstalled packages) and writes a wheelhouse folder ready for
``kaggle datasets create -p DIR --dir-mode zip``; ``verify()`` checks one. ``prepare_model()``
checks a model and writes its upload folder; ``write_kernel()`` writes the notebook and
``kernel-metadata.json`` for ``kaggle kernels push``. The names below are imported on first use,
so that pip's subprocesses (``bundler.resolution.pip_shim``, ``bundler.wheelhouse.transport``)
start fast.

Rooms, each importing only the ones before it (tests/test_layers.py checks it):

- ``bundler.errors``, ``bundler.blobs``: the bundler's errors and its sha256-keyed file store;
- ``bundler.resolution``: profiles, requirement files, pip's resolver run for the target;
- ``bundler.kaggle``: Kaggle's references, dataset and model metadata, the kernel's notebook;
- ``bundler.wheelhouse``: download, build, write and verify a wheelhouse (resolution, kaggle);
- ``bundler.commands``: one thin module per ``python -m bundler`` command (any room).

May import: the standard library, pip (in its subprocesses), ``packaging``, ``build`` and
:mod:`runtime.contract` (the manifest and profile it writes), plus ``runtime.commands.predict``
(predict's option definitions, argparse only) in ``bundler.kaggle.kernel``; never the kernel's
layers below it, except ``runtime.inference`` inside ``bundler.kaggle.model_upload``'s functions:
the model check runs the kernel's own loader and engine (torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime import __version__

if TYPE_CHECKING:
    from bundler.kaggle.kernel import KernelRequest, write_kernel
    from bundler.kaggle.model_upload import prepare_model
    from bundler.resolution.profiles import get_profile
    from bundler.wheelhouse.builder import BuildResult, build
    from bundler.wheelhouse.verification import verify

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
    "BuildResult": "bundler.wheelhouse.builder",
    "build": "bundler.wheelhouse.builder",
    "get_profile": "bundler.resolution.profiles",
    "verify": "bundler.wheelhouse.verification",
    "KernelRequest": "bundler.kaggle.kernel",
    "write_kernel": "bundler.kaggle.kernel",
    "prepare_model": "bundler.kaggle.model_upload",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bundler' has no attribute {name!r}")
