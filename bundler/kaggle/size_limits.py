"""Kaggle's dataset size limits, checked on the resolved sizes before anything is downloaded.

A dataset holds at most 200 GB (``../shared/kaggle-facts.md``, Kaggle's dataset documentation).
No per-file limit was found in those notes or in the kaggle CLI's dataset documentation; it is an
option here (``--max-file-size``), unset by default, for an upload path that has one. ``--dir-mode zip`` uploads the ``wheels/`` folder
as one archive, so the folder's total counts as a single file too: a per-file limit below the
wheels' total refuses the wheelhouse with that number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bundler.errors import WheelhouseSizeError

KAGGLE_DATASET_BYTES = 200 * 10**9


@dataclass(frozen=True)
class SizeLimits:
    dataset_bytes: int | None = KAGGLE_DATASET_BYTES
    file_bytes: int | None = None


def _gb(count: int) -> str:
    if count >= 10**8:
        return f"{count / 1e9:.2f} GB"
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def check_sizes(sizes: Mapping[str, int | None], limits: SizeLimits, where: str) -> None:
    """Refuse a wheelhouse of ``sizes`` (filename -> bytes) over a limit, with the numbers."""
    known = {name: size for name, size in sizes.items() if size is not None}
    total = sum(known.values())
    unknown = len(sizes) - len(known)
    also = f" (and {unknown} file(s) of unknown size)" if unknown else ""
    if limits.file_bytes is not None:
        over = sorted(
            ((size, name) for name, size in known.items() if size > limits.file_bytes),
            reverse=True,
        )
        if over:
            shown = ", ".join(f"{name} ({_gb(size)})" for size, name in over[:3])
            raise WheelhouseSizeError(
                f"{where}: {len(over)} wheel(s) exceed the per-file limit of "
                f"{_gb(limits.file_bytes)}: {shown}; nothing was downloaded"
            )
        if total > limits.file_bytes:
            raise WheelhouseSizeError(
                f"{where}: the wheels total {_gb(total)}{also}, and `kaggle datasets create "
                f"--dir-mode zip` uploads the wheels/ folder as one archive, over the per-file "
                f"limit of {_gb(limits.file_bytes)}; split the requirements into two "
                "wheelhouses; nothing was downloaded"
            )
    if limits.dataset_bytes is not None and total > limits.dataset_bytes:
        raise WheelhouseSizeError(
            f"{where}: the wheels total {_gb(total)}{also}, over a Kaggle dataset's limit of "
            f"{_gb(limits.dataset_bytes)}; split the requirements into several wheelhouses; "
            "nothing was downloaded"
        )
