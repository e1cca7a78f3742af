"""The kernel half of kaggle-offline: offline installs, 3D segmentation and submissions.

Importing this package must stay cheap and standard-library-only: it is imported by
``bootstrap.py`` in a kernel where nothing of ours (and maybe not numpy) is installed yet.
Heavy modules (torch, numpy, tifffile) are imported by the functions that need them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "install"]


def install(*args: Any, **kwargs: Any) -> Any:
    """Discover wheelhouses, plan and install what is missing; see :func:`runtime.installer.install`."""
    from runtime.installer import install as _install

    return _install(*args, **kwargs)
