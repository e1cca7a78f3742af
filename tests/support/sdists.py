"""Real sdists for tests, buildable offline: each carries its own PEP 517 backend in the tree.

``pyproject.toml`` says ``requires = []`` and ``backend-path = ["."]``, so pip (preparing
metadata) and ``build`` (making the wheel) need nothing from an index: no setuptools download.
A ``compiled=True`` sdist stands in for a package with extension modules: its backend tags the
wheel for the building interpreter and platform (``cp311-cp311-linux_x86_64`` here), exactly as
setuptools tags a wheel that has ``ext_modules``, so it can never fit a foreign target.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

_BACKEND = r'''
"""In-tree PEP 517 backend of a kaggle-offline test sdist (standard library only)."""

import base64
import hashlib
import json
import os
import sys
import sysconfig
import zipfile

_PROJECT = json.loads(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "project.json")).read())
_DIST = _PROJECT["name"].replace("-", "_").replace(".", "_")
_DIST_INFO = f"{_DIST}-{_PROJECT['version']}.dist-info"


def _metadata():
    lines = ["Metadata-Version: 2.1", f"Name: {_PROJECT['name']}", f"Version: {_PROJECT['version']}"]
    if _PROJECT["requires_python"]:
        lines.append(f"Requires-Python: {_PROJECT['requires_python']}")
    lines += [f"Requires-Dist: {req}" for req in _PROJECT["requires"]]
    return "\n".join(lines) + "\n"


def _tag():
    if not _PROJECT["compiled"]:
        return "py3-none-any"
    interpreter = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{interpreter}-{interpreter}-{platform}"


def get_requires_for_build_wheel(config_settings=None):
    # As setuptools before 70.1 asked for "wheel" here: a requirement known only at build time.
    return list(_PROJECT["dynamic_build_requires"])


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    if _PROJECT["fail_metadata"]:
        raise RuntimeError(_PROJECT["fail_metadata"])
    path = os.path.join(metadata_directory, _DIST_INFO)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "w") as stream:
        stream.write(_metadata())
    return _DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import importlib

    for requirement in _PROJECT["dynamic_build_requires"]:
        importlib.import_module(requirement.split(">")[0].split("=")[0].replace("-", "_"))
    tag = _tag()
    module = _DIST.lower()
    files = {
        f"{module}/__init__.py": f"__version__ = {_PROJECT['version']!r}\n".encode(),
        f"{_DIST_INFO}/METADATA": _metadata().encode(),
        f"{_DIST_INFO}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: kaggle-offline-test-backend\n"
            f"Root-Is-Purelib: {'false' if _PROJECT['compiled'] else 'true'}\nTag: {tag}\n"
        ).encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{_DIST_INFO}/RECORD,,")
    files[f"{_DIST_INFO}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{_DIST}-{_PROJECT['version']}-{tag}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return filename
'''

_PYPROJECT = """[build-system]
requires = {requires}
build-backend = "tinybackend"
backend-path = ["."]
"""


def make_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    compiled: bool = False,
    build_requires: Sequence[str] = (),
    dynamic_build_requires: Sequence[str] = (),
    fail_metadata: str = "",
) -> Path:
    """Write ``<name>-<version>.tar.gz`` (a real sdist with PKG-INFO and an in-tree backend).

    ``build_requires`` go into pyproject.toml, ``dynamic_build_requires`` are what the backend's
    ``get_requires_for_build_wheel`` adds (and ``build_wheel`` imports); ``fail_metadata`` makes
    ``prepare_metadata_for_build_wheel`` raise RuntimeError with that message.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dist = re.sub(r"[-_.]+", "_", name).lower()
    root = f"{dist}-{version}"
    project = {
        "name": name,
        "version": version,
        "requires": list(requires),
        "requires_python": requires_python or "",
        "compiled": compiled,
        "dynamic_build_requires": list(dynamic_build_requires),
        "fail_metadata": fail_metadata,
    }
    pkg_info = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
    if requires_python:
        pkg_info.append(f"Requires-Python: {requires_python}")
    pkg_info += [f"Requires-Dist: {req}" for req in requires]
    members = {
        f"{root}/PKG-INFO": "\n".join(pkg_info) + "\n",
        f"{root}/pyproject.toml": _PYPROJECT.format(requires=json.dumps(list(build_requires))),
        f"{root}/tinybackend.py": _BACKEND,
        f"{root}/project.json": json.dumps(project, indent=1) + "\n",
    }
    path = dest_dir / f"{root}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 1577836800
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    # mtime=0 in the gzip header too, so a fixture sdist is the same bytes every run.
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return path
