"""Write the wheelhouse folder: wheels/, manifest.json, requirements.lock, bootstrap.py, metadata.

Every file is written by an atomic rename, so an interrupted build leaves the previous complete
file or the new one. Wheels are copies of the blob store's files, never hard links: a wheel edited
in place in one wheelhouse must not change the cache, nor every other wheelhouse built from it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bundler.blobs import BlobStore
from bundler.errors import BundlerError
from bundler.kaggle.dataset import FILENAME as DATASET_FILENAME
from runtime.contract.files import sha256_file, write_json_atomically, write_text_atomically
from runtime.contract.manifest import MANIFEST_FILENAME, WHEEL_DIRNAME, Manifest

LOCK_FILENAME = "requirements.lock"
BOOTSTRAP_FILENAME = "bootstrap.py"
# The wheelhouse's own top-level entries (what counts against Kaggle's 50-file limit).
OWN_ENTRIES = frozenset(
    {WHEEL_DIRNAME, MANIFEST_FILENAME, LOCK_FILENAME, BOOTSTRAP_FILENAME, DATASET_FILENAME}
)
_TEMP_SUFFIX = ".tmp"


def check_output_dir(folder: Path) -> None:
    """``-o`` must be a folder (new, or a previous wheelhouse): refuse anything else in one line."""
    if folder.exists() and not folder.is_dir():
        raise BundlerError(f"{folder}: exists and is not a folder; give -o a folder to write to")
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BundlerError(f"{folder}: {ancestor} is a file, so -o cannot be created there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BundlerError(
            f"{folder}: cannot write in {ancestor} (permission denied); choose another -o"
        )


def foreign_entries(folder: Path) -> list[str]:
    """What ``folder`` holds besides a wheelhouse's own entries (and our temporary files)."""
    try:
        return sorted(
            path.name
            for path in folder.iterdir()
            if path.name not in OWN_ENTRIES
            and not (path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX))
        )
    except FileNotFoundError:
        return []


def shown_names(names: Sequence[str]) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def check_not_foreign(folder: Path) -> None:
    """Refuse a non-empty ``-o`` that no build wrote: everything in it would be uploaded.

    A folder holding only the wheelhouse's own entries (an interrupted first build) is taken.
    """
    foreign = foreign_entries(folder)
    if foreign:
        raise BundlerError(
            f"{folder}: holds {shown_names(foreign)} and is not a wheelhouse a build wrote; "
            "everything in -o is uploaded with the dataset, so give -o a new or empty folder"
        )


@dataclass(frozen=True)
class WheelSync:
    placed: list[str]  # copied into wheels/ in this run
    kept: list[str]  # already there with the right hash
    removed: list[str]  # stale wheels deleted
    # each wheel's path -> the sha256 of its bytes, hashed here (so verify need not read it again)
    hashes: dict[Path, str]


def sync_wheels(folder: Path, wanted: Sequence[tuple[str, str]], store: BlobStore) -> WheelSync:
    """Make ``folder/wheels`` hold exactly ``wanted`` (filename, sha256 in ``store``)."""
    wheel_dir = folder / WHEEL_DIRNAME
    wheel_dir.mkdir(parents=True, exist_ok=True)
    placed: list[str] = []
    kept: list[str] = []
    hashes: dict[Path, str] = {}
    for filename, sha256 in wanted:
        path = wheel_dir / filename
        if _intact_copy(path, sha256, store):
            kept.append(filename)
            hashes[path] = sha256
            continue
        hashes[path] = store.copy_to(sha256, path)
        placed.append(filename)
    names = {filename for filename, _ in wanted}
    removed: list[str] = []
    for path in sorted(wheel_dir.iterdir()):
        # Left-over temporary files of an interrupted run go too; nothing else is ours to delete.
        stale_wheel = path.suffix == ".whl" and path.name not in names
        if stale_wheel or (path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX)):
            path.unlink()
            if stale_wheel:
                removed.append(path.name)
    return WheelSync(placed=placed, kept=kept, removed=removed, hashes=hashes)


def _intact_copy(path: Path, sha256: str, store: BlobStore) -> bool:
    """``path`` holds the wanted bytes in a file of its own (not one shared with the store)."""
    stored = store.path(sha256)
    try:
        if path.samefile(stored):
            return False  # a hard link left by an older kaggle-offline: replace it with a copy
        return path.stat().st_size == stored.stat().st_size and sha256_file(path) == sha256
    except OSError:  # missing
        return False


def lock_text(manifest: Manifest) -> str:
    """``name==version`` with ``--hash`` per wheel: usable by plain pip, without this project."""
    lines = [
        f"# Generated by kaggle-offline {manifest.tool_version} for {manifest.target.name} "
        f"(Python {manifest.target.python_version}). Offline install without kaggle-offline:",
        f"#   pip install --no-index --require-hashes --find-links {manifest.wheel_dir} "
        f"-r {LOCK_FILENAME}",
    ]
    for entry in sorted(manifest.wheels, key=lambda entry: entry.name):
        lines.append(f"{entry.name}=={entry.version} \\\n    --hash=sha256:{entry.sha256}")
    return "\n".join(lines) + "\n"


def bootstrap_source() -> str:
    source = resources.files("runtime.installer").joinpath(BOOTSTRAP_FILENAME)
    if not source.is_file():
        raise BundlerError(
            f"runtime/installer/{BOOTSTRAP_FILENAME} is missing from this kaggle-offline; reinstall it"
        )
    return source.read_text(encoding="utf-8")


def write_wheelhouse_files(
    folder: Path, manifest: Manifest, dataset_metadata: dict[str, object]
) -> None:
    """Everything but the wheels. The manifest goes last: it marks the folder complete."""
    write_text_atomically(folder / LOCK_FILENAME, lock_text(manifest))
    write_text_atomically(folder / BOOTSTRAP_FILENAME, bootstrap_source())
    write_json_atomically(folder / DATASET_FILENAME, dataset_metadata)
    manifest.dump(folder / MANIFEST_FILENAME)
