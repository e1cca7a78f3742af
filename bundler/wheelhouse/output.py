"""Write the wheelhouse folder: wheels/, manifest.json, requirements.lock, bootstrap.py, metadata.

Every file is written by an atomic rename, so an interrupted build leaves the previous complete
file or the new one. Wheels are copies of the blob store's files, never hard links: a wheel edited
in place in one wheelhouse must not change the cache, nor every other wheelhouse built from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bundler.blobs import BlobStore
from bundler.errors import BundlerError
from bundler.kaggle.dataset import FILENAME as DATASET_FILENAME
from bundler.wheelhouse.places import check_place, check_room
from runtime.contract.files import json_text, sha256_file, write_bytes_atomically
from runtime.contract.manifest import MANIFEST_FILENAME, WHEEL_DIRNAME, FileEntry, Manifest

LOCK_FILENAME = "requirements.lock"
BOOTSTRAP_FILENAME = "bootstrap.py"
# The wheelhouse's own top-level entries (what counts against Kaggle's 50-file limit).
OWN_ENTRIES = frozenset(
    {WHEEL_DIRNAME, MANIFEST_FILENAME, LOCK_FILENAME, BOOTSTRAP_FILENAME, DATASET_FILENAME}
)
_TEMP_SUFFIX = ".tmp"


def check_output_dir(folder: Path) -> None:
    """``-o`` must be a folder (new, or a previous wheelhouse): refuse anything else in one line."""
    check_place(folder, "-o")


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
    placed: list[str] = []
    kept: list[str] = []
    hashes: dict[Path, str] = {}
    missing = []
    for filename, sha256 in wanted:
        path = wheel_dir / filename
        if _intact_copy(path, sha256, store):
            kept.append(filename)
            hashes[path] = sha256
        else:
            missing.append((filename, sha256))
    # Known before a byte is copied: the copies must fit where they go (stale wheels are
    # removed only after, so they do not count as free).
    size = sum(store.path(sha256).stat().st_size for _, sha256 in missing)
    check_room(folder, size, f"copying {len(missing)} wheel(s)")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for filename, sha256 in missing:
        hashes[wheel_dir / filename] = store.copy_to(sha256, wheel_dir / filename)
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
    return "\n".join(lines + lock_pins(manifest)) + "\n"


def lock_pins(manifest: Manifest) -> list[str]:
    """The lock's requirement lines: one hash-pinned ``name==version`` per wheel, by name."""
    return [
        f"{entry.name}=={entry.version} \\\n    --hash=sha256:{entry.sha256}"
        for entry in sorted(manifest.wheels, key=lambda entry: entry.name)
    ]


def bootstrap_source() -> str:
    source = resources.files("runtime.installer").joinpath(BOOTSTRAP_FILENAME)
    if not source.is_file():
        raise BundlerError(
            f"runtime/installer/{BOOTSTRAP_FILENAME} is missing from this kaggle-offline; reinstall it"
        )
    return source.read_text(encoding="utf-8")


def write_wheelhouse_files(
    folder: Path, manifest: Manifest, dataset_metadata: dict[str, object]
) -> Manifest:
    """Everything but the wheels; the manifest as written, with the other files' hashes.

    The manifest goes last: it marks the folder complete, and it records the sha256 and size of
    the very bytes written for the lock, bootstrap.py and the metadata, so ``verify`` (and the
    installer) can tell any later edit of them.
    """
    texts = {
        LOCK_FILENAME: lock_text(manifest),
        BOOTSTRAP_FILENAME: bootstrap_source(),
        DATASET_FILENAME: json_text(dataset_metadata),
    }
    files = []
    for name, text in texts.items():
        data = text.encode("utf-8")
        write_bytes_atomically(folder / name, data)
        files.append(FileEntry(name, hashlib.sha256(data).hexdigest(), len(data)))
    written = dataclasses.replace(manifest, files=tuple(files))
    written.dump(folder / MANIFEST_FILENAME)
    return written
