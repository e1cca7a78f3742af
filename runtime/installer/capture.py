"""Capturing the running interpreter's target profile (``python -m runtime profile``).

Run inside the kernel you target: its Python, ABI, wheel tags, PEP 508 markers and every installed
distribution become a :class:`TargetProfile` the bundler resolves for. Standard library only.
"""

from __future__ import annotations

import platform
import sys
import sysconfig
from importlib import metadata

from runtime.contract.profile import TargetProfile, canonical_name
from runtime.installer.interpreter import installed_versions
from runtime.installer.versions import marker_environment, packaging_module

__all__ = ["capture_current_profile", "current_tags"]


def current_tags() -> tuple[str, ...]:
    """Wheel tags this interpreter installs, most preferred first."""
    return tuple(str(tag) for tag in packaging_module("tags").sys_tags())


def capture_current_profile(name: str, *, description: str = "") -> TargetProfile:
    """The exact profile of the running interpreter (run it inside the kernel you target)."""
    implementation = {"cpython": "cp", "pypy": "pp"}.get(
        sys.implementation.name, sys.implementation.name
    )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    abi = sysconfig.get_config_var("SOABI") or ""
    abi_tag = f"{implementation}{sys.version_info.major}{sys.version_info.minor}"
    if abi.startswith("cpython-") and sysconfig.get_config_var("Py_GIL_DISABLED"):
        abi_tag += "t"
    return TargetProfile(
        name=name,
        python_version=version,
        implementation=implementation,
        abi=abi_tag,
        tags=current_tags(),
        markers=marker_environment(),
        preinstalled=(preinstalled := installed_versions()),
        preinstalled_requires=declared_requirements(preinstalled),
        description=description,
        source=f"captured by kaggle-offline on {platform.node() or 'unknown host'} from {sys.executable}",
        site_packages=sysconfig.get_paths()["purelib"],
    )


def declared_requirements(versions: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Each installed distribution's Requires-Dist, read from the copy that ``versions`` names.

    The bundler checks a replacement against these: a kernel package that needs ``numpy>=2``
    must not get numpy 1.26 beside it unnoticed.
    """
    found: dict[str, tuple[str, ...]] = {}
    for distribution in metadata.distributions():
        name = canonical_name(distribution.metadata["Name"] or "")
        if name in found or versions.get(name) != distribution.version:
            continue
        found[name] = tuple(distribution.requires or ())
    return found
