"""kaggle-offline's own wheel, so the kernel can install the runtime offline too.

From a source checkout it is built with ``build``; from an installed (non-editable) kaggle-offline
it is rebuilt from the installed files that the distribution's RECORD lists. Either way the wheel
is cached under a hash of every file that goes into it, which keeps a warm build fast.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

from bundler.blobs import link_or_copy
from bundler.errors import BundlerError
from runtime.contract.files import replacing

DISTRIBUTION = "kaggle-offline"
_SOURCES = ("pyproject.toml", "README.md", "bundler", "runtime")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# Written by the installer about this one installation, not part of the wheel (RECORD is redone).
_INSTALLER_FILES = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})
# Fixed timestamps make the rebuilt wheel byte-identical for identical files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_FALLBACK = "pass --self-wheel PATH (a kaggle-offline wheel) or --no-self"


def project_root() -> Path | None:
    """The source tree holding this bundler, or None when it runs from an installed wheel."""
    root = Path(__file__).resolve().parents[2]  # <root>/bundler/wheelhouse/self_wheel.py
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def own_wheel(cache_dir: Path, log: Callable[[str], None] = lambda line: None) -> Path:
    """The wheel of the kaggle-offline that this bundler runs from (a checkout or an install)."""
    root = project_root()
    if root is not None:
        return _wheel_from_source(root, cache_dir, log)
    return _wheel_from_installation(_installed_distribution(), cache_dir, log)


# --- from a source checkout --------------------------------------------------------------------
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


def _cached_wheel(folder: Path) -> Path | None:
    existing = sorted(folder.glob("kaggle_offline-*.whl")) if folder.is_dir() else []
    return existing[0] if existing else None


def _wheel_from_source(root: Path, cache_dir: Path, log: Callable[[str], None]) -> Path:
    folder = cache_dir / "self" / _source_key(root)
    cached = _cached_wheel(folder)
    if cached is not None:
        return cached
    log("building kaggle-offline's own wheel from its source tree")
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
                f"({lines[-1] if lines else completed.returncode}); {_FALLBACK}"
            )
        target = folder / wheels[0].name
        link_or_copy(wheels[0], target)
    return target


def _setuptools_is_recent() -> bool:
    # pyproject.toml's build-system asks for setuptools>=77; an older one needs an isolated build.
    from packaging.version import Version

    try:
        return Version(metadata.version("setuptools")) >= Version("77")
    except metadata.PackageNotFoundError:
        return False


# --- from an installed kaggle-offline -----------------------------------------------------------
def _installed_distribution() -> metadata.Distribution:
    """The installed kaggle-offline whose files include this very module.

    Another kaggle-offline may be installed elsewhere on sys.path (an older one, an editable one):
    only the one this code runs from describes the runtime that the wheel must carry.
    """
    here = Path(__file__).resolve()
    for dist in metadata.distributions(name=DISTRIBUTION):
        if any(Path(str(dist.locate_file(f))).resolve() == here for f in dist.files or ()):
            return dist
    raise BundlerError(
        f"cannot make kaggle-offline's own wheel: {here.parent} is neither a source checkout nor "
        f"part of an installed kaggle-offline; reinstall kaggle-offline or {_FALLBACK}"
    )


def _dist_info_name(dist: metadata.Distribution) -> str:
    for path in dist.files or ():
        if len(path.parts) == 2 and path.parts[0].endswith(".dist-info"):
            return path.parts[0]
    raise BundlerError(f"the installed kaggle-offline has no .dist-info in its RECORD; {_FALLBACK}")


def _packaged(path: metadata.PackagePath, dist_info: str) -> bool:
    """Whether an installed file belongs in the wheel."""
    parts = path.parts
    if not parts or parts[0] == ".." or Path(*parts).is_absolute():
        return False  # console scripts: pip makes them again from entry_points.txt
    if "__pycache__" in parts or path.name.endswith(".pyc"):
        return False  # compiled at install time, for the installing Python only
    return not (parts[0] == dist_info and len(parts) == 2 and parts[1] in _INSTALLER_FILES)


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _installed_files(dist: metadata.Distribution, dist_info: str) -> list[tuple[str, bytes]]:
    """(path in the wheel, bytes) of every packaged file, checked against the RECORD."""
    version = dist.version
    files: list[tuple[str, bytes]] = []
    for path in dist.files or ():
        if not _packaged(path, dist_info):
            continue
        files.append(("/".join(path.parts), _read_recorded(dist, path, version)))
    return files


def _read_recorded(dist: metadata.Distribution, path: metadata.PackagePath, version: str) -> bytes:
    location = Path(str(dist.locate_file(path)))
    try:
        data = location.read_bytes()
    except OSError:
        raise BundlerError(
            f"{location}: listed in the RECORD of the installed kaggle-offline {version} but "
            f"unreadable; reinstall kaggle-offline or {_FALLBACK}"
        ) from None
    # A file edited after installation would put an untested runtime into the wheelhouse.
    recorded = path.hash
    if (
        recorded is not None
        and recorded.mode == "sha256"
        and _record_digest(data) != recorded.value
    ):
        raise BundlerError(
            f"{location}: changed since kaggle-offline {version} was installed (its sha256 "
            f"differs from the RECORD); reinstall kaggle-offline or {_FALLBACK}"
        )
    return data


def _wheel_tag(files: Sequence[tuple[str, bytes]], dist_info: str) -> str:
    wheel_file = dict(files).get(f"{dist_info}/WHEEL")
    if wheel_file is None:
        raise BundlerError(f"the installed kaggle-offline has no {dist_info}/WHEEL; {_FALLBACK}")
    tags = HeaderParser().parsestr(wheel_file.decode("utf-8")).get_all("Tag") or []
    if len(tags) != 1:
        raise BundlerError(
            f"{dist_info}/WHEEL of the installed kaggle-offline has tags {tags}, expected one "
            f"(py3-none-any); {_FALLBACK}"
        )
    return tags[0].strip()


def _installation_key(files: Sequence[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256(b"installed\0")  # never the same key as a source tree's
    for name, data in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _record_text(files: Sequence[tuple[str, bytes]], record_name: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for name, data in files:
        writer.writerow((name, f"sha256={_record_digest(data)}", len(data)))
    writer.writerow((record_name, "", ""))
    return out.getvalue().encode()


def _write_wheel(files: Sequence[tuple[str, bytes]], dist_info: str, destination: Path) -> None:
    """A plain zip with the packages at its root (zipimport reads it) and a fresh RECORD.

    The .dist-info goes last, as the wheel spec recommends, and RECORD last of all.
    """
    ordered = sorted(files, key=lambda item: (item[0].startswith(f"{dist_info}/"), item[0]))
    record_name = f"{dist_info}/RECORD"
    members = [*ordered, (record_name, _record_text(ordered, record_name))]
    with (
        replacing(destination) as temporary,
        zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def _wheel_filename(version: str, tag: str) -> str:
    # The wheel spec's escaping: runs of anything but letters, digits and dots become "_".
    escaped = re.sub(r"[^\w\d.]+", "_", version)
    return f"kaggle_offline-{escaped}-{tag}.whl"


def _wheel_from_installation(
    dist: metadata.Distribution, cache_dir: Path, log: Callable[[str], None]
) -> Path:
    dist_info = _dist_info_name(dist)
    files = _installed_files(dist, dist_info)
    folder = cache_dir / "self" / _installation_key(files)
    cached = _cached_wheel(folder)
    if cached is not None:
        return cached
    log(f"rebuilding kaggle-offline's own wheel from its installation in {dist.locate_file('')}")
    target = folder / _wheel_filename(dist.version, _wheel_tag(files, dist_info))
    _write_wheel(files, dist_info, target)
    return target
