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
        actual, size = copy_hashing(wheel.source, target)
    except OSError as error:  # unreadable source, or a full disk under the temporary folder
        raise WheelhouseError(
            f"{wheel.source}: cannot copy the wheel to {stage} for verification "
            f"({error.strerror or error}); nothing was installed"
        ) from None
    if wheel.sha256 is not None and (actual != wheel.sha256 or size != wheel.size):
        raise HashMismatchError(
            f"{wheel.source}: sha256 {actual[:16]}... ({size} bytes) does not match the "
            f"manifest's {wheel.sha256[:16]}... ({wheel.size} bytes): the wheel was altered or "
            "truncated, so nothing was installed; re-attach the dataset or rebuild the wheelhouse"
        )
    return target
