"""What pip would refuse or fail on half-way, found before it runs.

* A wheel whose METADATA contradicts its file name: pip installs what METADATA says (a file named
  ``alpha-1.0`` holding 9.9 installs 9.9), and the installer would then find 1.0 missing after
  the fact. So the name and version inside each verified copy must be the file name's.
* Space: the private copies need the wheels' bytes in the temporary folder, and pip needs their
  unpacked size (each member rounded up to a block, plus the bytecode when compiling) and one
  inode per member where it installs. A full disk half-way through pip leaves a half-installed
  environment; a shortfall known in advance is one line and nothing touched.

Standard library only.
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.contract.errors import WheelhouseError
from runtime.contract.profile import canonical_name
from runtime.contract.wheel_archive import BLOCK, WheelArchive, read_wheel_archive
from runtime.installer.plan import PlannedWheel
from runtime.installer.versions import same_version

__all__ = [
    "Need",
    "check_space",
    "checked_archive",
    "install_folder",
    "space_needed",
    "staging_need",
]

_MB = 1 << 20


@dataclass(frozen=True)
class Need:
    """``size`` bytes and ``files`` inodes that ``what`` will write under ``folder``."""

    folder: Path
    size: int
    files: int
    what: str  # its subject and verb: "unpacking 3 wheel(s) needs"
    remedy: str = "free some space there"


def install_folder() -> Path:
    """Where pip puts this interpreter's packages: site-packages, else the user site it falls back to."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    if os.access(purelib, os.W_OK):
        return purelib
    return Path(site.getusersitepackages())


def checked_archive(wheel: PlannedWheel, staged: Path) -> WheelArchive:
    """The archive facts of the verified copy ``staged``; raise if it is not what its name says."""
    archive = read_wheel_archive(staged)
    inside = f"{canonical_name(archive.name)} {archive.version}"
    folder_name, _, folder_version = archive.dist_info[: -len(".dist-info")].rpartition("-")
    if (
        canonical_name(archive.name) != wheel.name
        or not same_version(archive.version, wheel.version)
        or canonical_name(folder_name) != wheel.name
        or not same_version(folder_version, wheel.version)
    ):
        raise WheelhouseError(
            f"{wheel.source}: the file name says {wheel.name} {wheel.version} but its METADATA "
            f"says {inside} (in {archive.dist_info}/), and pip would install what METADATA says; "
            "nothing was installed: rebuild the wheelhouse"
        )
    return archive


def space_needed(archives: Sequence[WheelArchive], folder: Path, *, compile_bytecode: bool) -> Need:
    """What pip writes into ``folder`` for ``archives`` (bytecode adds about the sources' size)."""
    size = sum(a.unpacked_bytes + (a.source_bytes if compile_bytecode else 0) for a in archives)
    files = sum(a.members * (2 if compile_bytecode else 1) for a in archives)
    return Need(folder, size, files, f"unpacking {len(archives)} wheel(s) needs")


def staging_need(wheels: Iterable[PlannedWheel], folder: Path) -> Need:
    """What the private copies of ``wheels`` take in ``folder``."""
    sizes = [wheel.size if wheel.size is not None else _size(wheel.source) for wheel in wheels]
    size = sum(-(-s // BLOCK) * BLOCK for s in sizes)
    remedy = "free some space, or set TMPDIR to a folder with room,"
    return Need(folder, size, len(sizes), "the wheels' copies need", remedy)


def check_space(need: Need) -> None:
    """Raise, naming the folder and both figures, when ``need`` does not fit where it goes."""
    try:
        stats = os.statvfs(_existing(need.folder))
    except OSError:
        return  # nothing to measure with; pip's own error stays the backstop
    free = stats.f_bavail * stats.f_frsize
    if need.size > free:
        raise WheelhouseError(
            f"no space left on {need.folder}: {need.what} about {_mb(need.size)} MB, "
            f"{_mb(free)} MB are free; nothing was installed: {need.remedy} and run the install "
            "again"
        )
    # f_files == 0: a file system without an inode limit (btrfs reports none)
    if stats.f_files and need.files > stats.f_favail:
        raise WheelhouseError(
            f"no space left on {need.folder}: {need.what} {need.files} files, only "
            f"{stats.f_favail} more fit there (out of inodes); nothing was installed: "
            f"{need.remedy} and run the install again"
        )


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the copy itself then says what is wrong with the file


def _mb(size: int) -> str:
    return f"{size / _MB:.1f}"
