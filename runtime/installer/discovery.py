"""Finding wheelhouses under an input root, in every layout Kaggle mounts inputs with.

Datasets, models, notebook outputs and competitions appear under ``/kaggle/input`` in an old flat
form (``<slug>/``) and a new nested one (``datasets/<owner>/<slug>/``,
``models/<owner>/<model>/<framework>/<variation>/<version>/``, ...), and a wheelhouse may sit flat
or keep its ``wheels/`` folder. So the input root is searched, never assumed: a bounded
breadth-first walk that stops at a depth limit, never opens folders named like data trees
(``train_images/``) and gives up on any folder as soon as it has seen more non-wheel files than a
wheelhouse ever holds. A competition with thousands of volumes costs a few directory reads.

A folder is a wheelhouse when it holds a kaggle-offline ``manifest.json``; a folder of ``.whl``
files without one is found too, as unverified (there are no hashes to check: the plan installs
from it only when asked to). A manifest is checked whole when its folder is read; one that is
unreadable or inconsistent makes its folder a :class:`BrokenWheelhouse` of the search, so one
broken dataset does not hide the others (what an install then does is :mod:`core`'s policy).
Standard library only.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from runtime.contract.errors import KaggleOfflineError, ManifestError, WheelhouseError
from runtime.contract.files import load_json
from runtime.contract.manifest import (
    MANIFEST_FILENAME,
    MANIFEST_FORMAT,
    WHEEL_DIRNAME,
    Manifest,
    WheelEntry,
    WheelName,
    locate_wheel,
)
from runtime.contract.recorded_files import recorded_file_problem
from runtime.installer.versions import is_valid_specifier, is_valid_version, same_version

DEFAULT_INPUT_ROOT = Path("/kaggle/input")
INPUT_ROOT_VARIABLE = "KAGGLE_OFFLINE_INPUT_ROOT"

# Deep enough for a wheelhouse folder inside a new-layout model version:
# models/<owner>/<model>/<framework>/<variation>/<version>/<wheelhouse>/<wheels>
MAX_DEPTH = 8
# A wheelhouse holds a handful of non-wheel files (manifest, lock, bootstrap, metadata); a folder
# with more than this is data, so it is neither a wheelhouse nor worth descending into.
MAX_OTHER_FILES = 32
# A hard bound on folders read, so that an unexpected giant tree costs milliseconds, not minutes.
MAX_FOLDERS = 4000
# Names of data trees in competitions and datasets: skipped without even listing them.
DATA_FOLDER_NAMES = frozenset(
    {
        "train_images", "train_labels", "test_images", "test_labels", "val_images",
        "val_labels", "valid_images", "images", "labels", "masks", "volumes", "imagesTr",
        "labelsTr", "imagesTs", "__MACOSX", "__pycache__", "node_modules", "site-packages",
    }
)  # fmt: skip
_WHEELHOUSE_FILES = frozenset(
    {MANIFEST_FILENAME, "requirements.lock", "bootstrap.py", "dataset-metadata.json"}
)
# Files that only a wheelhouse has: they make a stray manifest.json beside them ours.
_WHEELHOUSE_MARKERS = frozenset({"requirements.lock", "bootstrap.py"})


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels: verified (with a manifest) or a plain folder of ``.whl`` files."""

    path: Path
    manifest: Manifest | None
    plain_wheels: tuple[Path, ...] = ()  # only for a folder without manifest.json
    named: bool = False  # given by the user (or bootstrap.py's own folder), not found by a search

    @property
    def verified(self) -> bool:
        return self.manifest is not None

    def wheel_path(self, entry: WheelEntry) -> Path | None:
        assert self.manifest is not None, "only a manifest's wheels have entries"
        return locate_wheel(self.path, self.manifest, entry)


@dataclass(frozen=True)
class BrokenWheelhouse:
    """A folder that is a wheelhouse but cannot be used: its manifest is unreadable or inconsistent."""

    path: Path
    error: KaggleOfflineError

    def __str__(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Discovery:
    """What a search of the input root found, and the folders it could not read as wheelhouses."""

    root: Path
    wheelhouses: tuple[Wheelhouse, ...]
    problems: tuple[BrokenWheelhouse, ...]
    folders_read: int

    def raise_problems(self) -> None:
        if self.problems:
            first = self.problems[0].error
            more = len(self.problems) - 1
            if more:
                raise type(first)(f"{first} (and {more} more broken wheelhouse(s))")
            raise first


def default_input_root() -> Path:
    """``$KAGGLE_OFFLINE_INPUT_ROOT`` if set, else ``/kaggle/input``."""
    return Path(os.environ.get(INPUT_ROOT_VARIABLE) or DEFAULT_INPUT_ROOT)


def find_wheelhouses(
    root: str | os.PathLike[str] | None = None,
    *,
    max_depth: int = MAX_DEPTH,
    max_folders: int = MAX_FOLDERS,
) -> Discovery:
    """Every wheelhouse under ``root`` (default :func:`default_input_root`), nearest first.

    A missing root gives an empty result rather than an error: a kernel without attached
    wheelhouses simply has nothing to install.
    """
    root = Path(root) if root is not None else default_input_root()
    found: list[Wheelhouse] = []
    problems: list[BrokenWheelhouse] = []
    seen: set[tuple[int, int]] = set()
    queue: deque[tuple[Path, int]] = deque([(root, 0)])
    folders_read = 0
    while queue and folders_read < max_folders:
        folder, depth = queue.popleft()
        listing = _list_folder(folder, seen)
        if listing is None:
            continue
        folders_read += 1
        wheelhouse = None
        if listing.has_manifest:
            try:
                wheelhouse = _read_manifest_folder(folder, listing)
            except KaggleOfflineError as problem:
                problems.append(BrokenWheelhouse(folder, problem))
                continue
        if wheelhouse is None and listing.wheels:
            wheelhouse = Wheelhouse(folder, None, listing.wheels)
        if wheelhouse is not None:
            found.append(wheelhouse)
        # A manifest's own wheel folder is part of it, not a second (unverified) wheelhouse.
        skip_subfolder = (
            wheelhouse.manifest.wheel_dir if wheelhouse and wheelhouse.manifest else None
        )
        if listing.is_data or depth >= max_depth:
            continue
        for subfolder in listing.subfolders:
            if subfolder.name != skip_subfolder:
                queue.append((subfolder, depth + 1))
    return Discovery(root, tuple(found), tuple(problems), folders_read)


def open_wheelhouse(path: str | os.PathLike[str]) -> Wheelhouse:
    """The wheelhouse at ``path`` (its folder or its manifest.json), named explicitly by the user."""
    path = Path(path)
    if path.name == MANIFEST_FILENAME and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise WheelhouseError(f"{path}: no such wheelhouse folder")
    listing = _list_folder(path, set(), stop_early=False)
    if listing is None:
        raise WheelhouseError(f"{path}: cannot read the wheelhouse folder")
    if listing.has_manifest:
        return Wheelhouse(path, read_manifest(path / MANIFEST_FILENAME), named=True)
    wheels = listing.wheels
    if not wheels:
        nested = path / WHEEL_DIRNAME
        nested_listing = _list_folder(nested, set(), stop_early=False) if nested.is_dir() else None
        wheels = nested_listing.wheels if nested_listing else ()
    if not wheels:
        raise WheelhouseError(
            f"{path}: neither a {MANIFEST_FILENAME} nor any .whl file here; point --wheelhouse at "
            "the folder the bundler wrote"
        )
    return Wheelhouse(path, None, wheels, named=True)


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``, checked whole (see :func:`checked_manifest`)."""
    return checked_manifest(load_json(path, kind="manifest", error=ManifestError), path)


def checked_manifest(data: object, path: Path) -> Manifest:
    """The manifest ``data`` read from ``path``, checked whole.

    The contract checks types, paths and names; what needs PEP 440 arithmetic is checked here:
    every version and specifier parses, and each entry's version is its wheel file's. So an
    inconsistent manifest is refused before anything is planned from it, never half-way through
    an install, and an invalid specifier is reported as one, naming its manifest.
    """
    manifest = Manifest.from_dict(data, origin=str(path))
    for entry in manifest.wheels:
        file_version = (WheelName.parse(entry.filename) or WheelName("", entry.version, ())).version
        if not is_valid_version(entry.version):
            raise ManifestError(
                f"{path}: {entry.name} has version {entry.version!r}, which is not a PEP 440 "
                "version; rebuild the wheelhouse"
            )
        if not same_version(file_version, entry.version):
            raise ManifestError(
                f"{path}: the entry for {entry.name} {entry.version} names {entry.filename}, a "
                f"wheel of version {file_version}: an inconsistent manifest, rebuild the wheelhouse"
            )
        if entry.upgrade_of is not None and not is_valid_version(entry.upgrade_of):
            raise ManifestError(
                f"{path}: {entry.name} has upgrade_of {entry.upgrade_of!r}, which is not a PEP 440 "
                "version; rebuild the wheelhouse"
            )
        for text in (entry.specifier, entry.requires_python):
            _check_specifier(path, entry.name, text)
    for assumed in manifest.skipped:
        _check_specifier(path, assumed.name, assumed.specifier)
    # The lock, bootstrap.py and the metadata the build recorded are its bytes, or the wheelhouse
    # is not the one that was built; missing ones are no problem (nothing here reads them).
    for recorded in manifest.files or ():
        problem = recorded_file_problem(path.parent, recorded, missing_ok=True)
        if problem is not None:
            raise WheelhouseError(problem)
    return manifest


def _check_specifier(path: Path, name: str, text: str) -> None:
    if not is_valid_specifier(text):
        raise ManifestError(
            f"{path}: invalid version specifier {text!r} for {name}; rebuild the wheelhouse"
        )


@dataclass(frozen=True)
class _Listing:
    subfolders: tuple[Path, ...]
    wheels: tuple[Path, ...]
    has_manifest: bool
    has_wheelhouse_markers: bool  # requirements.lock, bootstrap.py, a wheels/ folder, wheels
    is_data: bool  # too many other files: a data tree, not searched below


def _list_folder(
    folder: Path, seen: set[tuple[int, int]], *, stop_early: bool = True
) -> _Listing | None:
    try:
        info = folder.stat()  # follows symlinks: Kaggle may link one layout into the other
    except OSError:
        return None
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        return None  # a folder reached twice (a symlinked layout) is one wheelhouse, not two
    seen.add(identity)
    subfolders: list[Path] = []
    wheels: list[Path] = []
    has_manifest = has_markers = is_data = False
    other_files = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    has_markers |= name == WHEEL_DIRNAME
                    if not name.startswith(".") and name not in DATA_FOLDER_NAMES:
                        subfolders.append(Path(entry.path))
                elif name.endswith(".whl"):
                    wheels.append(Path(entry.path))
                elif name in _WHEELHOUSE_FILES:
                    has_manifest |= name == MANIFEST_FILENAME
                    has_markers |= name in _WHEELHOUSE_MARKERS
                else:
                    other_files += 1
                    if stop_early and other_files > MAX_OTHER_FILES:
                        # Reading on would list every volume of a dataset for nothing.
                        is_data = True
                        break
    except OSError:
        return None
    return _Listing(
        tuple(sorted(subfolders)),
        tuple(sorted(wheels)),
        has_manifest,
        has_markers or bool(wheels),
        is_data,
    )


def _read_manifest_folder(folder: Path, listing: _Listing) -> Wheelhouse | None:
    """The wheelhouse in ``folder``, or None when its manifest.json belongs to something else.

    Other projects ship files called manifest.json too; one is taken for ours when it says so, or
    when the folder looks like a wheelhouse (then a corrupt manifest is an error, not a shrug).
    """
    path = folder / MANIFEST_FILENAME
    try:
        data = load_json(path, kind="manifest", error=ManifestError)
    except ManifestError:
        if listing.has_wheelhouse_markers:
            raise
        return None
    claims_ours = isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT
    if not claims_ours and not listing.has_wheelhouse_markers:
        return None
    return Wheelhouse(folder, checked_manifest(data, path))
