"""A real, small file system for full-disk tests: a tmpfs mounted in a private namespace.

``unshare --map-root-user --mount --net`` gives the command its own mount namespace (and no
network, as every install test has): a tmpfs of a few megabytes mounted there is seen only by that
command and vanishes with it, so nothing needs unmounting and the machine's own mounts are never
touched. Writes past its size fail with a real ENOSPC, as on a full ``/kaggle/working``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest

_UNSHARE = ("unshare", "--map-root-user", "--mount", "--net")
# sh: mount each "options:folder" given before "--", then run the command after it.
_MOUNT_THEN_RUN = (
    'while [ "$1" != "--" ]; do mount -t tmpfs -o "${1%%:*}" tmpfs "${1#*:}" || exit 97; '
    'shift; done; shift; exec "$@"'
)


@cache
def tmpfs_unavailable_reason() -> str | None:
    """None when a tmpfs can be mounted in a private namespace here, else why not."""
    try:
        probe = subprocess.run(
            [*_UNSHARE, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare cannot run here: {error}"
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private namespace ({probe.stderr.strip() or 'failed'})"
    return None


def require_tmpfs() -> None:
    reason = tmpfs_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs a small real file system: {reason}")


def on_small_tmpfs(mounts: dict[Path, str], argv: Sequence[str]) -> list[str]:
    """``argv`` run offline with a tmpfs mounted on each folder, with its options ("size=4m")."""
    specs = [f"{options}:{folder}" for folder, options in mounts.items()]
    return [*_UNSHARE, "sh", "-c", _MOUNT_THEN_RUN, "sh", *specs, "--", *argv]
