"""The files a build recorded in its manifest (lock, bootstrap.py, metadata), checked on disk.

One rule for both halves: ``bundler verify`` and the installer's reading of a wheelhouse. A
recorded file must be a regular file of its own (not a link, a FIFO or a folder) with the
recorded size and sha256. The size is compared before a byte is read, and no more than the
recorded size (plus one byte, to see a file that grew) is ever read, so a file swapped for a
giant one costs nothing. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from runtime.contract.files import CHUNK
from runtime.contract.manifest import FileEntry

__all__ = ["recorded_file_problem"]


def recorded_file_problem(folder: Path, entry: FileEntry, *, missing_ok: bool) -> str | None:
    """Why ``folder/entry.name`` is not the file the build wrote, or None when it is.

    ``missing_ok``: a missing file is no problem (the installer never needs the lock or the
    metadata, and an upload may leave them out); ``bundler verify`` says a missing file is one.
    """
    path = folder / entry.name
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None if missing_ok else f"{path}: missing (the build wrote it)"
    except OSError as error:
        return f"{path}: unreadable ({error.strerror or error})"
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: not a regular file (the build wrote one)"
    if info.st_size != entry.size:
        return _changed(path, f"{info.st_size} bytes, the manifest records {entry.size}")
    try:
        digest = _bounded_sha256(path, entry.size)
    except OSError as error:
        return f"{path}: unreadable ({error.strerror or error})"
    if digest is None:
        return _changed(path, "it changed while it was read")
    if digest != entry.sha256:
        return _changed(
            path, f"sha256 {digest[:16]}..., the manifest records {entry.sha256[:16]}..."
        )
    return None


def _bounded_sha256(path: Path, size: int) -> str | None:
    """The sha256 of ``path`` if it still holds exactly ``size`` bytes, else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        left = size + 1  # one byte more than recorded tells a file that grew since the stat
        while left > 0 and (chunk := stream.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
        return digest.hexdigest() if left == 1 else None


def _changed(path: Path, detail: str) -> str:
    runs_code = " (it is the first code a kernel runs)" if path.name == "bootstrap.py" else ""
    return (
        f"{path}: not the file the build wrote{runs_code}: {detail}; re-attach the dataset or "
        "rebuild the wheelhouse"
    )
