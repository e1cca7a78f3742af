"""Run a command with no network at all: inside a fresh network namespace (``unshare -rn``).

The namespace has only a loopback interface that is down, so any attempt by pip to reach an index
fails at once instead of quietly succeeding on a connected test machine.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from functools import cache

import pytest

UNSHARE = ("unshare", "--map-root-user", "--net")


@cache
def netns_unavailable_reason() -> str | None:
    """None when ``unshare -rn`` works here, else why not (for a skip message)."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed (util-linux)"
    try:
        probe = subprocess.run(
            [*UNSHARE, "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare -rn cannot run here: {error}"
    if probe.returncode != 0:
        why = probe.stderr.strip().splitlines()
        return (
            "unprivileged network namespaces are not allowed here "
            f"({why[-1] if why else 'unshare failed'})"
        )
    return None


def require_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs a network namespace with no network: {reason}")


def offline(argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs with no network; call :func:`require_netns` first."""
    return [*UNSHARE, *argv]
