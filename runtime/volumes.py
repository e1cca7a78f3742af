"""3D TIFF volumes in, 3D TIFF masks out.

Competition inputs are LZW-compressed stacks and the Kaggle kernel has no imagecodecs, which
tifffile needs for LZW. So each file is inspected first (headers need no codec) and decoded by
tifffile where it can, else page by page by Pillow, whose libtiff decodes LZW natively; the two
give identical arrays. Only a codec neither can decode is an error.

Masks are written as plain uncompressed multipage uint8 TIFFs (one page per z slice), the form
every reader (tifffile, Pillow, ImageJ) and the scorer agrees on, through a temporary file and a
rename so that a crash never leaves a truncated mask behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from runtime.exceptions import VolumeError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "VolumeHeader",
    "VolumeInputs",
    "VolumeSource",
    "find_volumes",
    "imagecodecs_available",
    "read_volume",
    "read_volume_header",
    "read_volume_with_header",
    "replacing",
    "write_mask",
]

Source = Path | str | BinaryIO  # a file, or a seekable binary stream (e.g. a zip member's bytes)

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PACKBITS = 32773
_PILLOW_DTYPES = {"uint8", "uint16", "int32", "float32"}  # what Pillow's TIFF modes map to
_SUPPORTED_KINDS = "uif"  # unsigned, signed and float voxels; bool and complex are not volumes


class _CodecMissing(Exception):
    """tifffile found out while decoding that the codec needs a module that is missing."""


@dataclasses.dataclass(frozen=True)
class VolumeHeader:
    """What a volume's TIFF header says, learnt without decoding a single voxel."""

    shape: tuple[int, int, int]  # (Z, Y, X)
    dtype: str  # numpy dtype name in native byte order, e.g. "uint8"
    compression: str  # e.g. "NONE", "LZW"
    pages: int  # IFDs in the file: Z for a stack, 1 for a single volumetric page
    decoder: str  # "tifffile" or "pillow": who decodes it in this interpreter


@functools.cache
def imagecodecs_available() -> bool:
    """Whether imagecodecs imports here (tifffile needs it for LZW, JPEG, zstd...)."""
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def read_volume_header(source: Source, *, name: str | None = None) -> VolumeHeader:
    """Inspect a 3D TIFF without decoding it; raise :class:`VolumeError` if it cannot be a volume.

    A header that parses can be trusted: a broken page chain (what a truncated multipage file
    looks like, and what tifffile would otherwise read as a shorter stack) is an error here.
    ``name`` labels a stream in messages.
    """
    with _open_tiff(source, name) as (tif, label, complaints):
        return _header(tif, label, complaints)


def read_volume(source: Source, *, name: str | None = None) -> np.ndarray:
    """Read a 3D TIFF stack as a ``(Z, Y, X)`` array of its own dtype, in native byte order.

    Accepts a multipage stack (one page per z) or a single volumetric page; uint8, uint16, other
    integers or floats. Raises :class:`VolumeError` naming the file and the problem.
    """
    return read_volume_with_header(source, name=name)[1]


def read_volume_with_header(
    source: Source, *, name: str | None = None
) -> tuple[VolumeHeader, np.ndarray]:
    """:func:`read_volume`, also returning the header (page count, codec, decoder used)."""
    with _open_tiff(source, name) as (tif, label, complaints):
        header = _header(tif, label, complaints)
        _check_data_within_file(tif, label)
        if header.decoder == "tifffile":
            try:
                return header, _read_with_tifffile(tif, label, header)
            except _CodecMissing as missing:
                # Some codecs only say at decode time that they need a missing module.
                stack = tif.series[0]
                codes = {int(stack.keyframe.compression)}
                problem = _pillow_problem(stack, _stack_pages(stack), codes)
                if problem is not None:
                    raise VolumeError(
                        f"{label}: cannot decode {header.compression} compression: tifffile "
                        f"needs imagecodecs for it ({missing}) and {problem}"
                    ) from None
                header = dataclasses.replace(header, decoder="pillow")
        if not isinstance(source, str | Path):
            source.seek(0)  # tifffile moved it
        return header, _read_with_pillow(source, label, header)


def write_mask(path: Path | str, mask: np.ndarray) -> None:
    """Write a 3D 0/1 mask as an uncompressed multipage uint8 TIFF, atomically.

    ``mask`` may be bool or any integer dtype holding only 0 and 1; anything else (a 2 left from
    a label map, a float probability map, a 2D slice) is refused rather than silently changed.
    """
    import numpy as np
    import tifffile

    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 3 or 0 in mask.shape:
        raise VolumeError(
            f"{path}: a mask must be a non-empty 3D (Z, Y, X) array, got {mask.shape}"
        )
    if mask.dtype == np.bool_:
        data = mask.view(np.uint8)
    elif mask.dtype.kind in "ui":
        high = int(mask.max())
        low = int(mask.min()) if mask.dtype.kind == "i" else 0  # one pass for unsigned masks
        if low < 0 or high > 1:
            raise VolumeError(
                f"{path}: a mask must hold only 0 and 1, found values {low}..{high}; threshold it"
            )
        data = mask.astype(np.uint8, copy=False)
    else:
        raise VolumeError(f"{path}: a mask must be bool or integer 0/1, got dtype {mask.dtype}")

    with replacing(path) as temporary:
        # tifffile's default (shaped) description lets it read a Z=1 mask back as 3D; readers
        # that ignore it (Pillow, the scorer) still see plain pages.
        tifffile.imwrite(temporary, np.ascontiguousarray(data), photometric="minisblack")


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Readers therefore see the old file or the complete new one, never a truncated one, and a
    failure leaves no temporary behind. The file gets the usual permissions (0666 minus umask),
    not mkstemp's owner-only 0600, so that another user (or a Kaggle dataset) can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask


# --- opening and inspecting --------------------------------------------------------------------
@contextlib.contextmanager
def _open_tiff(source: Source, name: str | None) -> Iterator[tuple[Any, str, list[str]]]:
    """Open with tifffile, turning every way that can fail into a one-line VolumeError."""
    import tifffile

    label = name or (str(source) if isinstance(source, str | Path) else "<stream>")
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except FileNotFoundError:
            raise VolumeError(f"{label}: no such file") from None
        except IsADirectoryError:
            raise VolumeError(f"{label}: is a directory, not a TIFF file") from None
        except OSError as error:
            raise VolumeError(f"{label}: cannot read: {error.strerror or error}") from None
    else:
        magic = source.read(4)
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
    if size == 0:
        raise VolumeError(f"{label}: empty file (0 bytes), not a TIFF")
    if magic not in _TIFF_MAGICS:
        raise VolumeError(f"{label}: not a TIFF file (starts with {magic!r})")

    with _tifffile_complaints() as complaints:
        try:
            tif = tifffile.TiffFile(source if not isinstance(source, str) else Path(source))
        except Exception as error:  # tifffile raises many types for malformed files
            raise VolumeError(f"{label}: corrupt TIFF header: {_brief(error)}") from None
    try:
        yield tif, label, complaints
    finally:
        tif.close()


@contextlib.contextmanager
def _tifffile_complaints() -> Iterator[list[str]]:
    """Collect what tifffile logs in this thread: it reports a broken page chain by logging."""
    complaints: list[str] = []
    thread = threading.get_ident()

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:  # the reader and writer threads parse files at once
                complaints.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler = _Collector(level=logging.ERROR)  # warnings are about harmless oddities
    logger.addHandler(handler)
    try:
        yield complaints
    finally:
        logger.removeHandler(handler)


def _header(tif: Any, label: str, complaints: list[str]) -> VolumeHeader:
    import numpy as np

    with _tifffile_complaints() as more:
        try:
            pages = len(tif.pages)  # walks the whole page chain, so a broken one shows here
            series = tif.series
        except Exception as error:
            raise VolumeError(f"{label}: corrupt TIFF: {_brief(error)}") from None
    complaints = complaints + more
    if complaints:
        raise VolumeError(f"{label}: truncated or corrupt TIFF: {_brief(complaints[0])}")
    if not series or pages == 0:
        raise VolumeError(f"{label}: the TIFF holds no image")
    if len(series) > 1:
        shapes = ", ".join(str(tuple(s.shape)) for s in series[:4])
        raise VolumeError(
            f"{label}: pages differ in shape or type ({shapes}); expected one stack of equal pages"
        )
    stack = series[0]
    shape = tuple(int(n) for n in stack.shape)
    if len(shape) != 3:
        kind = "a 2D image" if len(shape) == 2 else f"a {len(shape)}D image"
        raise VolumeError(f"{label}: {kind} of shape {shape}; expected a 3D (Z, Y, X) stack")
    if 0 in shape:
        raise VolumeError(f"{label}: empty volume of shape {shape}")
    dtype = np.dtype(stack.dtype).newbyteorder("=")
    if dtype.kind not in _SUPPORTED_KINDS:
        raise VolumeError(f"{label}: unsupported voxel type {dtype}; expected integers or floats")
    compression = _codec_name(stack.keyframe.compression)
    return VolumeHeader(
        shape=(shape[0], shape[1], shape[2]),
        dtype=dtype.name,
        compression=compression,
        pages=pages,
        decoder=_choose_decoder(tif, stack, label, compression),
    )


def _choose_decoder(tif: Any, stack: Any, label: str, compression: str) -> str:
    """Pick tifffile or Pillow for this file, by what each can decode in this interpreter."""
    pages = _stack_pages(stack)
    # A TiffFrame (a page tifffile parsed lazily) shares its keyframe's coding tags.
    coded = [page if hasattr(page, "predictor") else page.keyframe for page in pages]
    codes = {int(page.compression) for page in coded}
    predictors = {int(page.predictor) for page in coded}
    tifffile_can = _tifffile_decodes(codes, predictors)
    if tifffile_can and (imagecodecs_available() or _PACKBITS not in codes):
        return "tifffile"
    problem = _pillow_problem(stack, pages, codes)
    if problem is None:
        return "pillow"  # also for PackBits: tifffile's pure-Python one is ~100x slower
    if tifffile_can:
        return "tifffile"
    raise VolumeError(
        f"{label}: cannot decode {compression} compression: tifffile needs imagecodecs for it "
        f"(pip install imagecodecs) and {problem}"
    )


def _tifffile_decodes(codes: set[int], predictors: set[int]) -> bool:
    """Whether tifffile has decoders for these codecs here (with imagecodecs or its fallbacks)."""
    import tifffile

    try:
        for code in codes:
            tifffile.TIFF.DECOMPRESSORS[code]
        for predictor in predictors:
            tifffile.TIFF.PREDICTORS[predictor]
    except (KeyError, ValueError, ImportError, AttributeError):
        return False  # tifffile's way of saying "this needs imagecodecs"
    return True


def _pillow_problem(stack: Any, pages: list[Any], codes: set[int]) -> str | None:
    """Why Pillow cannot read this stack page by page, or None if it can."""
    import numpy as np

    try:
        from PIL import TiffImagePlugin
    except ImportError:
        return "Pillow is not installed"
    keyframe = stack.keyframe
    if int(keyframe.imagedepth) > 1:
        return "Pillow cannot read a single volumetric (3D) page"
    if int(keyframe.samplesperpixel) != 1:
        return "Pillow reads single-channel pages only"
    if len(pages) != stack.shape[0]:
        return "its pages are not one 2D slice each, as Pillow needs"
    if any(code not in TiffImagePlugin.COMPRESSION_INFO for code in codes):
        return "Pillow does not know that codec either"
    if np.dtype(stack.dtype).newbyteorder("=").name not in _PILLOW_DTYPES:
        return f"Pillow cannot decode {np.dtype(stack.dtype).name} pages"
    return None


def _stack_pages(stack: Any) -> list[Any]:
    return [page for page in stack.pages if page is not None] or [stack.keyframe]


def _codec_name(code: Any) -> str:
    name = getattr(code, "name", None)
    return str(name) if name else f"compression {int(code)}"


# --- decoding ----------------------------------------------------------------------------------
def _check_data_within_file(tif: Any, label: str) -> None:
    """Refuse a file whose pixel data runs past its end (cut off after its last header)."""
    size = tif.filehandle.size
    for index, page in enumerate(tif.pages):
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise VolumeError(
                f"{label}: truncated TIFF: page {index} needs bytes up to {max(ends)}, "
                f"the file has {size}"
            )


def _read_with_tifffile(tif: Any, label: str, header: VolumeHeader) -> np.ndarray:
    import numpy as np

    with _tifffile_complaints() as complaints:
        try:
            data = np.asarray(tif.series[0].asarray())
        except ImportError as error:
            raise _CodecMissing(_brief(error)) from None
        except Exception as error:
            if "imagecodecs" in str(error):
                raise _CodecMissing(_brief(error)) from None
            raise VolumeError(
                f"{label}: cannot decode {header.compression} data: {_brief(error)}"
            ) from None
    if complaints:
        raise VolumeError(f"{label}: corrupt {header.compression} data ({_brief(complaints[0])})")
    if data.shape != header.shape:
        raise VolumeError(f"{label}: decodes to shape {data.shape}, its header says {header.shape}")
    return data.astype(header.dtype, copy=False)


def _read_with_pillow(source: Source, label: str, header: VolumeHeader) -> np.ndarray:
    """Decode a stack page by page with Pillow (whose libtiff handles LZW and PackBits)."""
    import numpy as np
    from PIL import Image

    out = np.empty(header.shape, dtype=header.dtype)
    try:
        with Image.open(source) as image:
            for z in range(header.shape[0]):
                image.seek(z)
                page = np.asarray(image)
                if page.shape != header.shape[1:] or page.dtype.newbyteorder("=") != out.dtype:
                    raise VolumeError(
                        f"{label}: page {z} decodes to {page.dtype} {page.shape} with Pillow, "
                        f"expected {out.dtype} {header.shape[1:]}"
                    )
                out[z] = page
    except VolumeError:
        raise
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, TypeError...
        raise VolumeError(
            f"{label}: cannot decode {header.compression} data with Pillow: {_brief(error)}"
        ) from None
    return out


def _brief(error: BaseException | str) -> str:
    """The first line of an error, short enough for a one-line message."""
    text = str(error).strip() or type(error).__name__
    line = re.sub(r"^<tifffile\.[^>]*>\s*", "", text.splitlines()[0])  # tifffile's object reprs
    return line if len(line) <= 160 else line[:157] + "..."


# --- finding the inputs ------------------------------------------------------------------------
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
    from runtime.exceptions import InputError

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
    from runtime.exceptions import InputError

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
    import csv

    from runtime.exceptions import InputError

    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "id" not in [f.strip() for f in reader.fieldnames]:
                raise InputError(f"{csv_path}: no 'id' column (header: {reader.fieldnames})")
            column = next(f for f in reader.fieldnames if f.strip() == "id")
            ids: list[str] = []
            for line, row in enumerate(reader, start=2):
                value = (row.get(column) or "").strip()
                if not value:
                    raise InputError(f"{csv_path}: line {line} has an empty id")
                if value not in ids:
                    ids.append(value)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{csv_path}: unreadable CSV ({error})") from None
    if not ids:
        raise InputError(f"{csv_path}: lists no ids")
    return ids


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
