"""What a pip run was installing, kept until it is known to have finished: no half install counts.

pip unpacks a wheel member by member, ``.dist-info`` folder included, and writes ``RECORD`` last.
A pip that fails or is killed half-way can leave ``alpha-1.0.dist-info`` with its METADATA but
without its files, and a scan of folder names (the installer's, and pip's own) then counts alpha
1.0 as installed for good. So before pip starts, the install writes the names and versions it
hands to pip into a journal beside the install lock, and removes the journal once every one of
them is verified in place. Whenever a journal is found, each distribution it names is checked:
complete means ``RECORD`` exists and every file it lists is there at its recorded size. One that
is not is counted as not installed, and its ``.dist-info`` folder is removed under the lock so
that pip installs it afresh. Only what the journal names is checked, never the kernel's own
distributions (Debian's have no RECORD at all). Standard library only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from runtime.contract.profile import canonical_name
from runtime.installer.interpreter import metadata_folder_identity

__all__ = ["Incomplete", "clear", "find_incomplete", "journal_path", "read", "remove", "write"]

JOURNAL_SUFFIX = ".pending"
# Bounds on what is read from a journal and from RECORD, both files on disk that anyone may edit.
_MAX_JOURNAL_BYTES = 1 << 20
_MAX_RECORD_BYTES = 64 << 20
_MAX_RECORD_ROWS = 500_000


class Incomplete:
    """A distribution pip did not finish: its ``.dist-info`` folder and what is missing."""

    def __init__(self, name: str, version: str, folder: Path, why: str) -> None:
        self.name, self.version, self.folder, self.why = name, version, folder, why

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.why})"


def journal_path(lock: Path) -> Path:
    """The journal beside the install lock ``lock`` (same folder, same stem)."""
    return lock.with_suffix(JOURNAL_SUFFIX)


def write(path: Path, wheels: Iterable[tuple[str, str]]) -> None:
    """Record (name, version) of what pip is about to install; atomically, before pip starts."""
    data = {"installing": [{"name": name, "version": version} for name, version in wheels]}
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(data, stream)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


def read(path: Path) -> dict[str, str]:
    """Canonical name -> version from the journal at ``path``; {} when there is none.

    A journal that cannot be read whole names nothing, so everything this install would have
    counted as installed is taken at face value, as before journals existed.
    """
    try:
        with open(path, "rb") as stream:
            raw = stream.read(_MAX_JOURNAL_BYTES + 1)
        data = json.loads(raw.decode("utf-8")) if len(raw) <= _MAX_JOURNAL_BYTES else None
    except (OSError, ValueError, RecursionError):
        return {}
    items = data.get("installing") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return {}
    return {
        canonical_name(item["name"]): item["version"]
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("version"), str)
    }


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


def find_incomplete(paths: Sequence[str], pending: Mapping[str, str]) -> list[Incomplete]:
    """The distributions of ``pending`` whose ``.dist-info`` on ``paths`` pip did not finish."""
    if not pending:
        return []
    found: list[Incomplete] = []
    seen: set[str] = set()
    for entry in paths:
        try:
            scanner = os.scandir(entry or ".")
        except OSError:
            continue
        with scanner:
            for item in scanner:
                if not item.name.endswith(".dist-info") or not item.is_dir(follow_symlinks=False):
                    continue
                identity = metadata_folder_identity(item.name)
                if identity is None or identity[0] not in pending or identity[0] in seen:
                    continue
                seen.add(identity[0])  # the first one on the path is the one that counts
                why = _unfinished(Path(item.path))
                if why is not None:
                    found.append(Incomplete(identity[0], identity[1], Path(item.path), why))
    return found


def remove(incomplete: Iterable[Incomplete]) -> list[str]:
    """Delete the ``.dist-info`` folders of ``incomplete``; "path (why)" of those that stay."""
    left = []
    for item in incomplete:
        try:
            shutil.rmtree(item.folder)
        except FileNotFoundError:
            continue
        except OSError as error:
            left.append(f"{item.folder} ({error.strerror or error})")
    return left


def _unfinished(folder: Path) -> str | None:
    """Why the distribution in ``folder`` is not completely installed, or None when it is."""
    record = folder / "RECORD"
    try:
        with open(record, "rb") as stream:
            raw = stream.read(_MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return "no RECORD: pip stopped before it finished"
    except OSError as error:
        return f"RECORD unreadable ({error.strerror or error})"
    if len(raw) > _MAX_RECORD_BYTES:
        return f"RECORD over {_MAX_RECORD_BYTES >> 20} MiB"
    root = folder.parent
    rows = csv.reader(raw.decode("utf-8", "replace").splitlines())
    for count, row in enumerate(rows):
        if count >= _MAX_RECORD_ROWS:
            return f"RECORD lists over {_MAX_RECORD_ROWS} files"
        if not row or not row[0]:
            continue
        try:
            size = (root / row[0]).stat().st_size  # only looked at, whatever the path says
        except OSError:
            return f"{row[0]} is missing"
        if len(row) >= 3 and row[2].isdigit() and int(row[2]) != size:
            return f"{row[0]} has {size} bytes, RECORD says {row[2]}"
    return None
