"""Staging: each planned wheel copied to a private folder while its sha256 is computed.

pip later installs those copies, so a wheel swapped in the dataset after it was checked cannot
slip in, and a single mismatch stops everything before pip starts. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from runtime.contract.errors import HashMismatchError, WheelhouseError
from runtime.contract.files import copy_hashing
from runtime.installer.plan import PlannedWheel

__all__ = ["stage_wheel"]


def stage_wheel(wheel: PlannedWheel, stage: Path) -> Path:
    """Copy ``wheel`` into ``stage`` while hashing it; raise unless it matches its manifest."""
    target = stage / wheel.filename
    try:
        # Never more than one byte past the manifest's size: a swapped giant file is not copied.
        actual, size = copy_hashing(wheel.source, target, limit=wheel.size)
    except OSError as error:  # unreadable source, or a full disk under the temporary folder
        raise WheelhouseError(
            f"{wheel.source}: cannot copy the wheel to {stage} for verification "
            f"({error.strerror or error}); nothing was installed"
        ) from None
    if wheel.sha256 is not None and (actual != wheel.sha256 or size != wheel.size):
        raise HashMismatchError(
            f"{wheel.source}: sha256 {actual[:16]}... ({_described(size, wheel.size)}) does not "
            "match the "
            f"manifest's {wheel.sha256[:16]}... ({wheel.size} bytes): the wheel was altered or "
            "truncated, so nothing was installed; re-attach the dataset or rebuild the wheelhouse"
        )
    return target


def _described(size: int, expected: int | None) -> str:
    """The size copied, said as "more than" where the copy stopped one byte past the manifest's."""
    return (
        f"more than {expected} bytes"
        if expected is not None and size > expected
        else f"{size} bytes"
    )
