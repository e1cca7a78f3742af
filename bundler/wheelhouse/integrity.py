"""Every file a wheelhouse holds is the one the build wrote, and nothing else is there.

The wheels are pinned by the manifest's wheel entries (checked by :mod:`verification`); the other
files the build writes (``requirements.lock``, ``bootstrap.py``, ``dataset-metadata.json``) by its
``files`` entries, with the installer's own rule (:mod:`runtime.contract.recorded_files`).
``bootstrap.py`` is the first code a kernel runs and a verbatim copy of the runtime's, so it is
also compared byte for byte with the copy inside the wheelhouse's own kaggle-offline wheel (or,
without one, with this kaggle-offline's when the same version built it). The lock holds the
manifest's pins and nothing more. Anything else in the folder or in ``wheels/`` (a file, a link,
a folder) is reported: Kaggle would upload it too.

A manifest from a build that recorded no ``files`` cannot back the word "verified": it is refused
in one line with the command that rebuilds it (the installer keeps installing from it, as its
wheels are still hash-checked there).
"""

from __future__ import annotations

import shlex
import zipfile
from pathlib import Path

from bundler import __version__
from bundler.kaggle.dataset import FILENAME as DATASET_FILENAME
from bundler.wheelhouse.output import BOOTSTRAP_FILENAME, LOCK_FILENAME, OWN_ENTRIES, lock_pins
from runtime.contract.manifest import MANIFEST_FILENAME, Manifest, locate_wheel
from runtime.contract.recorded_files import recorded_file_problem

__all__ = ["integrity_problems", "rebuild_command"]

WRITTEN_FILES = (LOCK_FILENAME, BOOTSTRAP_FILENAME, DATASET_FILENAME)
_BOOTSTRAP_MEMBER = "runtime/installer/bootstrap.py"
_MAX_BOOTSTRAP_BYTES = 1 << 20
_MAX_LOCK_BYTES = 16 << 20  # a lock is three short lines per wheel


def integrity_problems(wheelhouse: Path, manifest: Manifest) -> list[str]:
    """One line per file that is not the build's, or that the build did not write."""
    problems = _recorded_problems(wheelhouse, manifest)
    problems += _lock_problems(wheelhouse, manifest)
    problems += _bootstrap_problems(wheelhouse, manifest)
    problems += _unexpected_entries(wheelhouse, manifest)
    return problems


def rebuild_command(wheelhouse: Path, manifest: Manifest) -> str:
    """The build command that writes this wheelhouse again (an unchanged one downloads nothing)."""
    parts = ["python", "-m", "bundler", "build", *manifest.requested]
    for name in manifest.optional:
        parts += ["--optional", name]
    if manifest.self_wheel is None:
        parts.append("--no-self")
    parts += ["--target", manifest.target.name, "-o", str(wheelhouse)]
    return shlex.join(parts)


def _recorded_problems(wheelhouse: Path, manifest: Manifest) -> list[str]:
    origin = wheelhouse / MANIFEST_FILENAME
    if manifest.files is None:
        built_by = f" (kaggle-offline {manifest.tool_version})" if manifest.tool_version else ""
        return [
            f"{origin}: its build{built_by} recorded no hashes of {', '.join(WRITTEN_FILES)}, "
            f"so they cannot be verified; rebuild with `{rebuild_command(wheelhouse, manifest)}`"
        ]
    recorded = {entry.name: entry for entry in manifest.files}
    problems = [
        f"{origin}: records no sha256 of {name}; rebuild with "
        f"`{rebuild_command(wheelhouse, manifest)}`"
        for name in WRITTEN_FILES
        if name not in recorded
    ]
    for entry in manifest.files:
        problem = recorded_file_problem(wheelhouse, entry, missing_ok=False)
        if problem is not None:
            problems.append(problem)
    return problems


def _lock_problems(wheelhouse: Path, manifest: Manifest) -> list[str]:
    """The lock pins exactly the manifest's wheels: every pin there, no other requirement line."""
    path = wheelhouse / LOCK_FILENAME
    try:
        with path.open("rb") as stream:
            raw = stream.read(_MAX_LOCK_BYTES)
    except OSError:
        return []  # reported by the recorded-file check
    lines = raw.decode("utf-8", "replace").splitlines()
    content = "\n".join(line for line in lines if line.strip() and not line.startswith("#"))
    expected = "\n".join(lock_pins(manifest))
    if content == expected:
        return []
    missing = [pin.split(" ")[0] for pin in lock_pins(manifest) if pin not in content]
    if missing:
        return [f"{path}: no pin with the manifest's hash for {', '.join(missing)}"]
    return [f"{path}: holds requirement lines besides the manifest's pins (edited after the build)"]


def _bootstrap_problems(wheelhouse: Path, manifest: Manifest) -> list[str]:
    path = wheelhouse / BOOTSTRAP_FILENAME
    reference, origin = _reference_bootstrap(wheelhouse, manifest)
    if reference is None:
        return []
    try:
        with path.open("rb") as stream:
            ours = stream.read(_MAX_BOOTSTRAP_BYTES + 1)
    except OSError:
        return []  # reported by the recorded-file check
    if ours == reference:
        return []
    return [
        f"{path}: differs from the bootstrap.py of {origin} (it must be a verbatim copy: it is "
        f"the first code a kernel runs); rebuild with `{rebuild_command(wheelhouse, manifest)}`"
    ]


def _reference_bootstrap(wheelhouse: Path, manifest: Manifest) -> tuple[bytes | None, str]:
    """The bootstrap.py the wheelhouse's runtime ships, and where it was read from."""
    own = next((e for e in manifest.wheels if e.filename == manifest.self_wheel), None)
    wheel = locate_wheel(wheelhouse, manifest, own) if own is not None else None
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                info = archive.getinfo(_BOOTSTRAP_MEMBER)
                if info.file_size > _MAX_BOOTSTRAP_BYTES:
                    return None, ""
                with archive.open(info) as stream:
                    return stream.read(_MAX_BOOTSTRAP_BYTES), f"its own wheel {wheel.name}"
        except (KeyError, OSError, zipfile.BadZipFile):
            return None, ""  # a damaged own wheel is reported by its hash check
    if own is None and manifest.tool_version == __version__:
        from bundler.wheelhouse.output import bootstrap_source

        return bootstrap_source().encode("utf-8"), f"this kaggle-offline {__version__}"
    return None, ""


def _unexpected_entries(wheelhouse: Path, manifest: Manifest) -> list[str]:
    """What the build did not write: at the top level, and in the wheel folder."""
    wheels = {entry.filename for entry in manifest.wheels}
    problems = []
    for folder, allowed in (
        # a flat upload keeps its wheels at the top
        (wheelhouse, OWN_ENTRIES | wheels | {manifest.wheel_dir}),
        (wheelhouse / manifest.wheel_dir, wheels),
    ):
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            if path.name not in allowed and not path.name.endswith(".whl"):
                problems.append(
                    f"{path}: not written by the build (delete it; Kaggle uploads it too)"
                )
            elif path.name in wheels and path.is_symlink():
                problems.append(f"{path}: a link, not the copy the build wrote (rebuild)")
    return problems
