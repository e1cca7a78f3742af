"""The kernel half of kaggle-offline: offline installs, 3D segmentation and submissions.

Layers, each allowed to import only those above it in this list:

* :mod:`runtime.contract` - the profile, the manifest, the errors; standard library only.
* :mod:`runtime.installer` - the offline install path; standard library only.
* :mod:`runtime.fusion` - the ensemble fusion of probabilities (numpy), below the next two.
* :mod:`runtime.volumes` - TIFF I/O, post-processing, the submission zip, scoring; no torch.
* :mod:`runtime.inference` - models, the probe, sliding windows, the engine; torch.
* :mod:`runtime.pipeline` - ``predict``: volumes through the engine into a validated zip, and
  the ``--model`` specs (``demo`` included) loaded for a run.
* :mod:`runtime.samples` and :mod:`runtime.commands` - sample data, the demo model, the CLI.

Importing this package must stay cheap and standard-library-only: it is imported by
``bootstrap.py`` in a kernel where nothing of ours (and maybe not numpy) is installed yet.
"""

from __future__ import annotations

from typing import Any

# The one version source: pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.1.0"

__all__ = ["__version__", "install"]


def install(*args: Any, **kwargs: Any) -> Any:
    """Discover wheelhouses, plan and install what is missing; see :func:`runtime.installer.core.install`."""
    from runtime.installer.core import install as _install

    return _install(*args, **kwargs)
