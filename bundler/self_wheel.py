"""kaggle-offline's own wheel, so the kernel can install the runtime offline too.

It is built with ``build`` from the source tree this bundler runs from, once per distinct source:
the wheel is cached under the hash of every file that goes into it, which keeps a warm build fast.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bundler.blobs import link_or_copy
from runtime.exceptions import BundlerError

DISTRIBUTION = "kaggle-offline"
_SOURCES = ("pyproject.toml", "README.md", "bundler", "runtime")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def project_root() -> Path | None:
    """The source tree holding this bundler, or None when it runs from an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in _SOURCES:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(
                item
                for item in path.rglob("*")
                if item.is_file()
                and "__pycache__" not in item.parts
                and not item.name.endswith(".pyc")
                and not any(part.endswith(".egg-info") for part in item.parts)
            )
    return files


def _source_key(root: Path) -> str:
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def own_wheel(cache_dir: Path, log: Callable[[str], None] = lambda line: None) -> Path:
    """The wheel of the kaggle-offline source tree that this bundler runs from."""
    root = project_root()
    if root is None:
        raise BundlerError(
            "cannot build kaggle-offline's own wheel: this bundler is not running from its source "
            "tree; pass --self-wheel PATH (include_self=PATH) or --no-self (include_self=False)"
        )
    folder = cache_dir / "self" / _source_key(root)
    existing = sorted(folder.glob("kaggle_offline-*.whl")) if folder.is_dir() else []
    if existing:
        return existing[0]
    log("building kaggle-offline's own wheel")
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-self-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        # A copy keeps build/ and *.egg-info out of the checkout.
        for name in _SOURCES:
            path = root / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=_IGNORED)
            elif path.is_file():
                shutil.copy2(path, source / name)
        out = Path(scratch) / "dist"
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)]
        if _setuptools_is_recent():
            command.append("--no-isolation")
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(out.glob("kaggle_offline-*.whl")) if out.is_dir() else []
        if completed.returncode != 0 or len(wheels) != 1:
            lines = (completed.stderr or completed.stdout).strip().splitlines()
            raise BundlerError(
                f"building kaggle-offline's own wheel from {root} failed "
                f"({lines[-1] if lines else completed.returncode}); pass --self-wheel PATH instead"
            )
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / wheels[0].name
        link_or_copy(wheels[0], target)
    return target


def _setuptools_is_recent() -> bool:
    # pyproject.toml's build-system asks for setuptools>=77; an older one needs an isolated build.
    from importlib import metadata

    from packaging.version import Version

    try:
        return Version(metadata.version("setuptools")) >= Version("77")
    except metadata.PackageNotFoundError:
        return False
