"""submission.zip: one ``<id>.tif`` mask per test volume, zipped, checked before it counts.

The scorer globs ``**/*.tif`` and takes the id as the name up to the first dot, so a ``.tiff``
name, a nested folder, a missing id, a wrong shape or a stray label value each cost a whole
submission (hours of kernel time) without a clear message. :func:`validate_submission` reads the
zip back the way a scorer would and lists every such defect; :func:`write_submission` builds the
zip under a temporary name, validates it, and only then renames it into place.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from runtime.contract.errors import SubmissionError, VolumeError
from runtime.contract.files import CHUNK

__all__ = [
    "MASK_SUFFIX",
    "check_submission",
    "id_problem",
    "validate_submission",
    "write_submission",
]

MASK_SUFFIX = ".tif"  # lower-case, as the scorer's glob wants
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
_MAX_LISTED = 20  # problems listed in a SubmissionError's one line before "... and N more"


def write_submission(
    zip_path: Path | str,
    masks: Iterable[tuple[str, Path | str]],
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    compresslevel: int = 3,
) -> str:
    """Zip mask TIFFs as ``<id>.tif`` (deflate) atomically, validate, and return the sha256.

    ``masks`` yields ``(id, tif_path)``. With ``expected_shapes`` the zip is validated before it
    is renamed into place; if that fails it is kept as ``<name>.partial.zip`` (nothing computed
    is lost) and :class:`SubmissionError` lists every defect.
    """
    from runtime.contract.files import replacing, sha256_file

    zip_path = Path(zip_path)
    with replacing(zip_path) as temporary:
        with zipfile.ZipFile(
            temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        ) as archive:
            for volume_id, tif_path in masks:
                _add_member(archive, f"{volume_id}{MASK_SUFFIX}", Path(tif_path), compresslevel)
        problems = []
        if expected_shapes is not None:
            problems = validate_submission(temporary, expected_shapes)
        if problems:
            partial = partial_path(zip_path)
            temporary.chmod(0o644)
            temporary.replace(partial)
            raise SubmissionError(_summary(zip_path, problems, kept=partial))
        digest = sha256_file(temporary)
    return digest


def partial_path(zip_path: Path | str) -> Path:
    """Where an incomplete or invalid submission is kept: ``submission.partial.zip``."""
    zip_path = Path(zip_path)
    return zip_path.with_name(f"{zip_path.stem}.partial{zip_path.suffix or '.zip'}")


def check_submission(zip_path: Path | str, expected_shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise :class:`SubmissionError` listing every defect :func:`validate_submission` finds."""
    problems = validate_submission(zip_path, expected_shapes)
    if problems:
        raise SubmissionError(_summary(Path(zip_path), problems))


def validate_submission(
    zip_path: Path | str, expected_shapes: Mapping[str, Sequence[int]]
) -> list[str]:
    """Every defect of a submission zip, one line each; an empty list means it is valid.

    Checks: a readable zip; only ``<id>.tif`` names at the root (no folders, no ``.tiff``); no
    duplicate or unexpected ids; every expected id present; each mask a 3D uint8 stack of the
    expected (Z, Y, X) with one page per z slice (counted by Pillow too, when installed) and
    values in {0, 1}; deflate or stored members only.
    """
    zip_path = Path(zip_path)
    expected = {str(key): tuple(int(n) for n in shape) for key, shape in expected_shapes.items()}
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        return [f"{zip_path}: no such file"]
    except (zipfile.BadZipFile, OSError) as error:
        return [f"{zip_path}: not a readable zip file ({error})"]

    problems: list[str] = []
    seen: set[str] = set()
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                problems.append(f"{info.filename}: a folder; masks must sit at the zip's root")
                continue
            volume_id = _member_id(info.filename, problems)
            if volume_id is None:
                continue
            if volume_id in seen:
                problems.append(f"{info.filename}: id {volume_id} appears more than once")
                continue
            seen.add(volume_id)
            if volume_id not in expected:
                problems.append(f"{info.filename}: id {volume_id} is not one of the inputs")
                continue
            if info.compress_type not in _ALLOWED_METHODS:
                problems.append(
                    f"{info.filename}: compressed with zip method {info.compress_type}; "
                    "use deflate or stored"
                )
                continue
            problems.extend(_mask_problems(archive, info, expected[volume_id]))
    missing = sorted(set(expected) - seen)
    if missing:
        problems.append(f"missing ids (no <id>.tif in the zip): {', '.join(missing)}")
    return problems


def id_problem(volume_id: str) -> str | None:
    """Why ``<volume_id>.tif`` cannot be a member the scorer reads as that id, or None.

    The id is the file name up to its first dot, and it must be a plain name by the one rule
    every id read from a file obeys (:func:`runtime.contract.values.name_problem`). A volume
    whose id breaks it cannot get a mask, like one whose shape is unknown.
    """
    from runtime.contract.values import name_problem

    return name_problem(volume_id)


def _add_member(archive: zipfile.ZipFile, name: str, source: Path, level: int) -> None:
    # A fixed timestamp (not the file's mtime) makes equal masks give an equal zip and sha256.
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    # ZipFile.open(info, "w") takes the level from the member (renamed in Python 3.13).
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", level)
    with source.open("rb") as stream, archive.open(info, "w") as member:
        shutil.copyfileobj(stream, member, CHUNK)  # streamed: a mask may be gigabytes


def _member_id(name: str, problems: list[str]) -> str | None:
    """The id the scorer will see for this member, or None after recording why it is wrong."""
    if "/" in name or "\\" in name:  # what id_problem keeps out of the zip in the first place
        problems.append(f"{name}: inside a folder; masks must sit at the zip's root")
        return None
    if not name.endswith(MASK_SUFFIX):
        if name.lower().endswith((".tiff", ".tif")):
            problems.append(f"{name}: must be named <id>{MASK_SUFFIX} (lower-case, not .tiff)")
        else:
            problems.append(f"{name}: not a mask; only <id>{MASK_SUFFIX} files belong in the zip")
        return None
    return name.split(".", 1)[0]  # the scorer's rule: the id is the name up to the first dot


def _mask_problems(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...]
) -> list[str]:
    import numpy as np

    from runtime.volumes.tiff import read_volume_with_header

    name = info.filename
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:  # CRC errors, truncated member
        return [f"{name}: unreadable zip member ({error})"]
    try:
        header, mask = read_volume_with_header(io.BytesIO(data), name=name)
    except VolumeError as error:
        return [str(error)]
    problems = []
    if mask.shape != shape:
        problems.append(f"{name}: shape {mask.shape}, its input is {shape}")
    if mask.dtype != np.uint8:
        problems.append(f"{name}: dtype {mask.dtype}, must be uint8")
    elif mask.size and int(mask.max()) > 1:
        values = ", ".join(str(v) for v in np.unique(mask)[:8])
        problems.append(f"{name}: values {{{values}}}; a mask holds only 0 and 1")
    if header.pages != mask.shape[0]:
        problems.append(f"{name}: {header.pages} page(s) for {mask.shape[0]} z slices")
    problem = _pillow_problem(data, mask.shape[0])
    if problem:
        problems.append(f"{name}: {problem}")
    return problems


def _pillow_problem(data: bytes, depth: int) -> str | None:
    """What Pillow (a reader the scorer may use) dislikes about a mask; None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = int(getattr(image, "n_frames", 1))
    except Exception as error:  # any failure here is a Pillow-specific defect worth naming
        return f"Pillow cannot open it ({type(error).__name__}: {error})"
    return None if frames == depth else f"Pillow sees {frames} page(s) for {depth} z slices"


def _summary(zip_path: Path, problems: list[str], *, kept: Path | None = None) -> str:
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    where = f" (kept as {kept} for inspection)" if kept else ""
    return f"{zip_path} is not a valid submission{where}: {listed}{more}"
