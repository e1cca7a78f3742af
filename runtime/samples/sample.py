"""Synthetic competition-like data, so every command can be tried without Kaggle's.

The layout mirrors the Vesuvius surface-detection competition::

    DIR/test.csv                 id,scroll_id
    DIR/test_images/<id>.tif     uint8 CT chunk, LZW-compressed multipage TIFF (written by Pillow)
    DIR/train_labels/<id>.tif    its ground truth: 0 background, 1 surface, 2 unlabeled
    DIR/kaggle-offline-sample.json  says it is sample data (predict on the demo model warns elsewhere)

Unlike the competition, the labels belong to the test volumes themselves, so a prediction on the
sample can be scored (``runtime score submission.zip DIR/train_labels``) and post-processing
tuned on it (``runtime tune``). The images are LZW-compressed on
purpose: that is the format that needs imagecodecs in tifffile, so the sample exercises the
Pillow fallback in a kernel without it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_SHAPE", "write_lzw_stack", "write_sample"]

DEFAULT_SHAPE = (64, 96, 96)  # small: a CPU segments it in seconds
_SCROLL_IDS = (26002, 26010, 34117, 35360, 44430)  # scroll-like ids; volumes cycle through them


def write_sample(
    out_dir: Path | str,
    n: int = 3,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
) -> Path:
    """Write ``n`` synthetic volumes as a competition root under ``out_dir``; return ``out_dir``.

    The same ``seed`` writes the same ids and volumes. Existing files of the same names are
    replaced; nothing else in ``out_dir`` is touched.
    """
    import numpy as np

    from runtime.samples.synthetic import synthetic_volume

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if len(shape) != 3 or any(int(d) < 1 for d in shape):
        raise ValueError(f"shape must be three positive integers (Z, Y, X), got {shape!r}")
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    root = Path(out_dir)
    images, labels = root / "test_images", root / "train_labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    ids = _volume_ids(rng, n)
    for index, volume_id in enumerate(ids):
        volume = synthetic_volume(shape, np.random.default_rng([seed, index]))
        write_lzw_stack(images / f"{volume_id}.tif", volume.image)
        write_lzw_stack(labels / f"{volume_id}.tif", volume.label)
    rows = [
        (volume_id, _SCROLL_IDS[index % len(_SCROLL_IDS)]) for index, volume_id in enumerate(ids)
    ]
    _write_csv(root / "test.csv", rows)
    _write_marker(root, n=n, shape=shape, seed=seed)
    return root


def _write_marker(root: Path, **settings: object) -> None:
    """Say that ``root`` is sample data: predict on the demo model warns only elsewhere."""
    from runtime.contract.files import replacing
    from runtime.samples.demo import SAMPLE_MARKER

    text = json.dumps({"written_by": "python -m runtime sample", **settings}) + "\n"
    with replacing(root / SAMPLE_MARKER) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_lzw_stack(path: Path | str, volume: np.ndarray) -> None:
    """Write a 3D uint8 array as an LZW-compressed multipage TIFF with Pillow, atomically.

    This is how the competition's inputs look, and Pillow writes LZW without imagecodecs.
    """
    from PIL import Image

    from runtime.contract.files import replacing

    path = Path(path)
    pages = [Image.fromarray(plane) for plane in volume]
    with replacing(path) as temporary, open(temporary, "w+b") as handle:
        # w+b: Pillow reads back the file it appends pages to
        pages[0].save(
            handle, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw"
        )


def _volume_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct integer ids written as strings, like the competition's (e.g. "1407735")."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = str(int(rng.integers(1_000_000, 3_000_000_000)))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _write_csv(path: Path, rows: list[tuple[str, int]]) -> None:
    from runtime.contract.files import replacing

    with replacing(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "scroll_id"])
        writer.writerows(rows)
