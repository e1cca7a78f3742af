"""The places a build writes (``-o`` and the cache): checked before the work, named when full.

A place must be a folder, or creatable: not under a file, writable. Where the size of what will
be written is known (the wheels copied into ``-o``, once the store holds them), the free space is
compared first. A disk that fills up anyway (the downloads of a resolution, whose sizes no index
announces beforehand) is one line that names the place, never an ``OSError`` traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from bundler.errors import BundlerError
from runtime.contract.files import is_out_of_space

__all__ = ["check_place", "check_room", "naming_a_full_place"]

_MB = 1 << 20


def check_place(folder: Path, option: str) -> None:
    """``folder`` (given by ``option``) is a folder, or can be created as one, and is writable."""
    if folder.exists() and not folder.is_dir():
        raise BundlerError(f"{folder}: exists and is not a folder; give {option} a folder")
    ancestor = _existing(folder)
    if not ancestor.is_dir():
        raise BundlerError(f"{folder}: {ancestor} is a file, so {option} cannot be created there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BundlerError(
            f"{folder}: cannot write in {ancestor} (permission denied); choose another {option}"
        )


def check_room(folder: Path, size: int, what: str) -> None:
    """Refuse, before writing, ``size`` bytes that do not fit the free space of ``folder``."""
    free = _free(folder)
    if free is not None and size > free:
        raise BundlerError(
            f"no space left on {folder}: {what} needs about {size / _MB:.1f} MB, "
            f"{free / _MB:.1f} MB are free; free some space or choose another place"
        )


@contextlib.contextmanager
def naming_a_full_place(places: Mapping[Path, str]) -> Iterator[None]:
    """Turn a full disk inside the block into one line naming the place (folder -> its option).

    The error's own file name says where when it has one; a failed write often has none, and
    then the place with the least free space left is the full one.
    """
    try:
        yield
    except OSError as error:
        if not is_out_of_space(error):
            raise
        raise BundlerError(_full_message(places, error)) from None


def _full_message(places: Mapping[Path, str], error: OSError) -> str:
    named = Path(error.filename).resolve() if error.filename else None
    place = next(
        (p for p in places if named is not None and named.is_relative_to(p.resolve())), None
    )
    if place is None:
        place = min(places, key=lambda p: _free(p) or 0)
    return (
        f"no space left on {place} ({places[place]}): the build stopped there; free some space "
        "and build again (every whole file is kept, nothing is fetched twice)"
    )


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(folder: Path) -> int | None:
    try:
        stats = os.statvfs(_existing(folder))
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize
