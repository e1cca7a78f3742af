"""Finding the volumes to predict: a file, a folder of TIFFs, or a competition root.

Kaggle's mount points moved during 2025-26, so a competition root is searched a few levels down
for ``test_images/``; when ``test.csv`` is there it decides which ids are expected and in which
order. numpy-free: only paths and the CSV are read here.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from runtime.contract.errors import InputError

__all__ = ["VolumeInputs", "VolumeSource", "find_volumes"]

_VOLUME_SUFFIXES = (".tif", ".tiff")
_SEARCH_DEPTH = 4  # /kaggle/input/competitions/<slug>/test_images is three levels down


@dataclasses.dataclass(frozen=True)
class VolumeSource:
    """One volume to predict: its id (the file name up to the first dot) and its file."""

    id: str
    path: Path | None  # None: listed in test.csv, but no file was found for it


@dataclasses.dataclass(frozen=True)
class VolumeInputs:
    """The volumes found under an input path, in the order to process them."""

    sources: list[VolumeSource]
    images_dir: Path | None  # the folder the files came from (None for a single file)
    csv_path: Path | None  # the test.csv that listed the ids, if one was used
    notes: list[str]  # things worth a log line (files ignored, where the CSV was found...)

    @property
    def missing(self) -> list[str]:
        """Ids listed in test.csv that have no file."""
        return [source.id for source in self.sources if source.path is None]


def find_volumes(input_path: Path | str) -> VolumeInputs:
    """Find the volumes under a file, a folder of TIFFs, or a competition root.

    A competition root holds ``test_images/`` and usually ``test.csv`` (columns ``id``,
    ``scroll_id``); when the CSV is there it decides which ids are expected, in its order, and ids
    without a file come back with ``path=None``. A folder without either is searched a few levels
    down for exactly one ``test_images/`` (Kaggle's mount points moved during 2025-26).
    Raises :class:`InputError` when nothing usable is found.
    """
    path = Path(input_path)
    if path.is_file():
        return VolumeInputs([VolumeSource(_volume_id(path), path)], None, None, [])
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    if (path / "test_images").is_dir():
        return _from_images_dir(path / "test_images", path / "test.csv")
    files = _volume_files(path)
    if files:
        csv_path = path.parent / "test.csv" if path.name == "test_images" else path / "test.csv"
        return _from_images_dir(path, csv_path)
    found = _find_test_images(path)
    if len(found) == 1:
        inputs = _from_images_dir(found[0], found[0].parent / "test.csv")
        return dataclasses.replace(inputs, notes=[f"found {found[0]}", *inputs.notes])
    if found:
        listed = ", ".join(str(p) for p in found[:5])
        raise InputError(
            f"{path}: several test_images/ folders ({listed}); pass the one to predict on"
        )
    raise InputError(f"{path}: no .tif volumes and no test_images/ folder in it")


def _from_images_dir(images: Path, csv_path: Path) -> VolumeInputs:
    by_id: dict[str, Path] = {}
    for file in _volume_files(images):
        volume_id = _volume_id(file)
        if volume_id in by_id:
            raise InputError(
                f"{images}: two files for id {volume_id}: {by_id[volume_id].name}, {file.name}"
            )
        by_id[volume_id] = file
    if not csv_path.is_file():
        if not by_id:
            raise InputError(f"{images}: no .tif volumes in it")
        sources = [VolumeSource(i, by_id[i]) for i in sorted(by_id, key=_id_order)]
        return VolumeInputs(sources, images, None, [])

    ids = _csv_ids(csv_path)
    notes = [f"ids from {csv_path}"]
    extra = sorted(set(by_id) - set(ids), key=_id_order)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        notes.append(f"ignored {len(extra)} file(s) not listed in {csv_path.name}: {shown}")
    sources = [VolumeSource(i, by_id.get(i)) for i in ids]
    return VolumeInputs(sources, images, csv_path, notes)


def _csv_ids(csv_path: Path) -> list[str]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "id" not in [f.strip() for f in reader.fieldnames]:
                raise InputError(f"{csv_path}: no 'id' column (header: {reader.fieldnames})")
            column = next(f for f in reader.fieldnames if f.strip() == "id")
            ids: dict[str, None] = {}  # ordered; a list's `in` made a million ids take hours
            for line, row in enumerate(reader, start=2):
                value = (row.get(column) or "").strip()
                if not value:
                    raise InputError(f"{csv_path}: line {line} has an empty id")
                ids.setdefault(value, None)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{csv_path}: unreadable CSV ({error})") from None
    if not ids:
        raise InputError(f"{csv_path}: lists no ids")
    return list(ids)


def _volume_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in _VOLUME_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _find_test_images(root: Path) -> list[Path]:
    found: list[Path] = []
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        next_level: list[Path] = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                (found if child.name == "test_images" else next_level).append(child)
        if found:
            return found
        level = next_level
    return found


def _volume_id(path: Path) -> str:
    return path.name.split(".", 1)[0]  # the scorer's rule: the id is the name up to the first dot


def _id_order(volume_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order (competition ids are integers), then the rest by name."""
    return (0, int(volume_id)) if volume_id.isdigit() else (1, volume_id)
