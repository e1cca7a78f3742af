"""Global intensity statistics: one deterministic sample of chunks, or a file.

Every block normalizes with the same numbers; statistics computed per block would differ from
block to block (and from the whole-volume result). The sample depends only on the chunk grid,
so a rerun samples the same chunks and its fingerprint matches.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract.errors import InputError
from runtime.scroll.source import Box, InputVolume

__all__ = ["intensity_stats", "read_stats_file"]

_KEYS = ("mean", "std", "p00_5", "p99_5")
_PER_CHUNK = 1 << 16


def intensity_stats(volume: InputVolume, region: Box, samples: int = 16) -> dict[str, Any]:
    """Mean, std and 0.5/99.5 percentiles of non-fill voxels of up to ``samples`` chunks
    (at most 65,536 voxels of each, every k-th).

    The chunks are spread evenly over the region's chunk grid (every k-th in z-major order).
    """
    chunks = volume.chunks
    ranges = [range(lo // c, math.ceil(hi / c)) for (lo, hi), c in zip(region, chunks, strict=True)]
    grid = list(itertools.product(*ranges))
    stride = max(1, len(grid) // samples)
    picked = grid[::stride][:samples]
    values = []
    unreadable = []
    for coords in picked:
        box = tuple(
            (i * c, min((i + 1) * c, s))
            for i, c, s in zip(coords, chunks, volume.shape, strict=True)
        )
        try:
            data = volume.read(box)  # type: ignore[arg-type]
        except InputError:
            # The blocks that need this chunk fail and are named; the sample goes on without it.
            unreadable.append(volume.chunk_key(coords))
            continue
        kept = data[data != volume.fill_value]
        if kept.size:
            # Every k-th voxel, at most _PER_CHUNK of them: the pre-pass stays small (a float64
            # copy of 16 chunks of 256^3 would be 2 GiB) and deterministic.
            step = max(1, kept.size // _PER_CHUNK)
            values.append(kept[::step].astype(np.float64))
    sample = np.concatenate(values) if values else np.zeros(1)
    low, high = np.percentile(sample, [0.5, 99.5])
    return {
        "mean": float(sample.mean()),
        "std": float(sample.std()),
        "p00_5": float(low),
        "p99_5": float(high),
        "source": f"{len(picked)} chunk(s) sampled evenly, fill value excluded, at most "
        f"{_PER_CHUNK} voxels each",
        "voxels": int(sample.size if values else 0),
        "unreadable_chunks": unreadable,
    }


def read_stats_file(path: Path) -> dict[str, Any]:
    """``--intensity-stats FILE``: a JSON object with at least mean and std."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read intensity statistics ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: intensity statistics must be a JSON object")
    for key in ("mean", "std"):
        value = data.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"{path}: {key!r} must be a finite number, got {value!r}")
    if data["std"] <= 0:
        raise InputError(f"{path}: 'std' must be positive, got {data['std']}")
    stats: dict[str, Any] = {key: float(data[key]) for key in _KEYS if key in data}
    stats["source"] = f"file {Path(path).name}"
    return stats
