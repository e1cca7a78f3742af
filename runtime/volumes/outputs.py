"""Where a run writes, checked before any work: never onto an input, never twice, writable.

:func:`check_outputs` takes every path a run will write (a file, or a folder with the names it
will write in it) and every file it reads, and refuses, in one line naming the option, an output
that would overwrite an input (``-o`` onto a volume, ``--workdir`` onto ``test_images/``, whose
``<id>.tif`` masks would replace the inputs), two outputs that would write the same file
(``--metrics`` equal to the zip), a file that is a folder or a folder that is a file, and a place
that cannot be written (under a file, a read-only folder), and outputs whose estimated size
does not fit the free space of their filesystem. Folders are created as a side effect,
as the run would create them anyway. Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from runtime.contract.errors import OutputError

__all__ = ["Output", "check_outputs"]


@dataclasses.dataclass(frozen=True)
class Output:
    """One place a run writes: a file, or a folder and the names of the files written in it."""

    option: str  # how the user named it in messages, e.g. "-o", "--metrics", "--workdir"
    path: Path
    writes: tuple[str, ...] | None = None  # None: ``path`` is a file; else a folder
    bytes: int = 0  # an estimate of what it will write, checked against the free space

    @property
    def is_folder(self) -> bool:
        return self.writes is not None

    def targets(self) -> list[Path]:
        """The files this output writes."""
        if self.writes is None:
            return [self.path]
        return [self.path / name for name in self.writes]


def check_outputs(outputs: Sequence[Output], inputs: Iterable[Path]) -> None:
    """Raise :class:`OutputError` unless every output can be written without harm.

    ``inputs`` are the files the run reads (volumes, test.csv, model files). Conflicts are
    checked first, with nothing touched; then each folder an output writes in is created if
    needed and probed with a temporary file.
    """
    reads = {_key(path): path for path in inputs}
    inodes = {_inode(path): path for path in reads.values()} if reads else {}
    inodes.pop(None, None)
    written: dict[str, Output] = {}
    folders = {_key(o.path): o for o in outputs if o.is_folder}
    for output in outputs:
        if output.is_folder and output.path.is_file():
            raise OutputError(f"{output.option} {output.path}: is a file, not a folder")
        if not output.is_folder and output.path.is_dir():
            raise OutputError(f"{output.option} {output.path}: is a folder, not a file")
        if not output.is_folder and _key(output.path) in folders:
            other = folders[_key(output.path)]
            raise OutputError(
                f"{output.option} {output.path} is also the folder of {other.option}; "
                "give them different paths"
            )
        for target in output.targets():
            key = _key(target)
            # A hard link (or bind mount) to an input is the input, whatever its name.
            source = reads.get(key) or inodes.get(_inode(target))
            if source is not None:
                raise OutputError(
                    f"{output.option} {output.path} would overwrite the input {source}; "
                    "write the outputs somewhere else"
                )
            if key in written:
                other = written[key]
                raise OutputError(
                    f"{other.option} {other.path} and {output.option} {output.path} would both "
                    f"write {target}; give them different paths"
                )
            written[key] = output
    for output in outputs:
        _check_writable(output, output.path if output.is_folder else output.path.parent)
    _check_space(outputs)


def _check_space(outputs: Sequence[Output]) -> None:
    """Refuse when the outputs on one filesystem would not fit in its free space."""
    needs: dict[int, list[Output]] = {}
    for output in outputs:
        if output.bytes > 0:
            folder = output.path if output.is_folder else output.path.parent
            needs.setdefault(folder.stat().st_dev, []).append(output)
    for group in needs.values():
        folder = group[0].path if group[0].is_folder else group[0].path.parent
        free = shutil.disk_usage(folder).free
        need = sum(output.bytes for output in group)
        if need > free:
            named = ", ".join(f"{o.option} {o.path}" for o in group)
            raise OutputError(
                f"{named}: not enough free space on {folder}: about {_size(need)} will be "
                f"written, {_size(free)} is free; free some or write elsewhere"
            )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _check_writable(output: Output, folder: Path) -> None:
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(
            f"{output.option} {output.path}: cannot be written, {blocker} is a file, not a folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(handle)
        Path(probe).unlink()
    except OSError as error:
        raise OutputError(
            f"{output.option} {output.path}: cannot write in {folder} "
            f"({error.strerror or error}); choose a writable place (on Kaggle, /kaggle/working)"
        ) from None


def _key(path: Path) -> str:
    """One spelling per file: absolute, symlinks and ``..`` resolved as far as they exist."""
    return str(path.resolve())


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_dev, status.st_ino)
