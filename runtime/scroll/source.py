"""The input of a whole-scroll run: a zarr array or one level of an OME-Zarr group, and a box.

zarr v2 and v3 stores, local or at an fsspec URL (``http(s)://``, ``s3://`` with s3fs). An
OME-Zarr group (``multiscales`` in its attributes, OME-Zarr 0.4, or under ``ome``, 0.5) is opened
at ``level`` and its metadata kept so the output can carry it. No torch here.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.contract.errors import InputError

__all__ = ["Box", "InputVolume", "any_chunk_stored", "open_input", "parse_region"]

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # ((z0, z1), (y0, y1), (x0, x1))

_REGION_PART = re.compile(r"\s*(\d*)\s*:\s*(\d*)\s*")


@dataclass
class InputVolume:
    """An opened input array and what a run needs to know about it."""

    url: str  # as given
    array: Any  # zarr.Array (3D)
    level: int
    ome: dict[str, Any] | None  # the group's OME metadata (version, multiscale, axes), if any

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def chunks(self) -> tuple[int, int, int]:
        return tuple(int(c) for c in self.array.chunks)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def fill_value(self) -> Any:
        fill = self.array.fill_value
        return 0 if fill is None else fill

    @property
    def zarr_format(self) -> int:
        return int(self.array.metadata.zarr_format)

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box``; a chunk that cannot be decoded is named in the error."""
        region = tuple(slice(a, b) for a, b in box)
        try:
            return np.asarray(self.array[region])
        except Exception as error:
            raise InputError(self._bad_chunk(box, error)) from None

    def any_chunk_stored(self, box: Box) -> bool:
        """Whether any chunk under ``box`` was ever written (a missing one reads as fill)."""
        return any_chunk_stored(self.url, self.array, box)

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return str(self.array.metadata.encode_chunk_key(coords))

    def _bad_chunk(self, box: Box, error: Exception) -> str:
        """Read the box chunk by chunk to name the first one that fails."""
        ranges = [
            range(a // c, math.ceil(b / c)) for (a, b), c in zip(box, self.chunks, strict=True)
        ]
        for coords in itertools.product(*ranges):
            region = tuple(
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(coords, self.chunks, self.shape, strict=True)
            )
            try:
                self.array[region]
            except Exception as chunk_error:
                where = f"{self.url.rstrip('/')}/{self._array_path()}{self.chunk_key(coords)}"
                return f"input chunk {where} cannot be read: {_one_line(chunk_error)}"
        return f"input {self.url}: reading {box} failed: {_one_line(error)}"

    def _array_path(self) -> str:
        path = str(self.array.path or "")
        return f"{path}/" if path else ""


def any_chunk_stored(url: str, array: Any, box: Box) -> bool:
    """Whether any chunk of ``array`` (in the store at ``url``) under ``box`` exists.

    One existence check per chunk, no read: a scroll is mostly air that was never written.
    """
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    chunks = tuple(int(c) for c in array.chunks)
    ranges = [range(a // c, math.ceil(b / c)) for (a, b), c in zip(box, chunks, strict=True)]
    path = str(array.path or "")
    prefix = f"{root.rstrip('/')}/{path + '/' if path else ''}"
    encode = array.metadata.encode_chunk_key
    return any(fs.exists(prefix + encode(coords)) for coords in itertools.product(*ranges))


def open_input(url: str, level: int = 0) -> InputVolume:
    """Open a zarr array, or level ``level`` of an OME-Zarr multiscale group, read-only."""
    zarr = _zarr()
    try:
        node = zarr.open(store=url, mode="r")
    except Exception as error:
        raise InputError(f"{url}: not a readable zarr store ({_one_line(error)})") from None
    ome = None
    if isinstance(node, zarr.Group):
        ome = _ome_metadata(dict(node.attrs), url)
        datasets = ome["multiscale"].get("datasets") or []
        if not 0 <= level < len(datasets):
            raise InputError(f"{url}: --level {level} asked, the multiscale has {len(datasets)}")
        path = str(datasets[level].get("path", ""))
        try:
            node = node[path]
        except KeyError:
            raise InputError(f"{url}: level {level}'s array {path!r} is missing") from None
    elif level:
        raise InputError(f"{url}: --level {level} asked of a plain array (no OME multiscales)")
    if not isinstance(node, zarr.Array) or len(node.shape) != 3:
        shape = getattr(node, "shape", None)
        raise InputError(f"{url}: expected a 3D (Z, Y, X) array, got shape {shape}")
    if not (np.issubdtype(node.dtype, np.integer) or np.issubdtype(node.dtype, np.floating)):
        raise InputError(f"{url}: unsupported voxel type {node.dtype}")
    return InputVolume(url, node, level, ome)


def parse_region(text: str | None, shape: tuple[int, int, int]) -> Box:
    """``z0:z1,y0:y1,x0:x1`` (an empty bound is the volume's edge) as a box inside ``shape``."""
    if not text:
        return ((0, shape[0]), (0, shape[1]), (0, shape[2]))
    parts = text.split(",")
    if len(parts) != 3:
        raise InputError(f"--region {text!r}: give z0:z1,y0:y1,x0:x1")
    box = []
    for part, size, axis in zip(parts, shape, "zyx", strict=True):
        match = _REGION_PART.fullmatch(part)
        if not match:
            raise InputError(f"--region {text!r}: {part!r} is not start:stop")
        start = int(match.group(1)) if match.group(1) else 0
        stop = int(match.group(2)) if match.group(2) else size
        if not 0 <= start < stop <= size:
            raise InputError(
                f"--region {text!r}: {axis} {start}:{stop} is empty or outside 0:{size}"
            )
        box.append((start, stop))
    return (box[0], box[1], box[2])


def _ome_metadata(attrs: dict[str, Any], url: str) -> dict[str, Any]:
    nested = attrs.get("ome")
    block: dict[str, Any] = nested if isinstance(nested, dict) else attrs
    multiscales = block.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise InputError(f"{url}: a zarr group without OME-Zarr multiscales; give an array")
    multiscale = multiscales[0]
    version = block.get("version") or multiscale.get("version") or "0.4"
    return {"version": str(version), "multiscale": multiscale, "nested": "ome" in attrs}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise InputError(
            "zarr input needs the zarr package: pip install 'kaggle-offline[scroll]'"
        ) from None
    return zarr
