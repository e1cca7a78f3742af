"""Nothing of an earlier run passes for this run's: its outputs go when this run starts.

A run killed with ``kill -9`` runs no clean-up, so what it leaves must be harmless to the next:
``metrics.json`` saying "ok" with the hash of a zip that has since moved, ``postprocess.json``
of a tune that never finished, temporary mask folders (33 MB per 320^3 volume against Kaggle's
20 GB of ``/kaggle/working``). Each run removes its own outputs before its work, and the
temporary folders of runs that are no longer alive (their names carry the process id, so a run
beside this one keeps its folder). Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["invalidate", "remove_abandoned_workdirs", "workdir_prefix"]

Log = Callable[[str], None]


def invalidate(paths: Iterable[Path], log: Log) -> None:
    """Remove the files an earlier run wrote where this run will write, saying so."""
    for path in paths:
        if path.is_file() or path.is_symlink():
            path.unlink()
            log(f"removed {path}, left by an earlier run (this run writes a new one or none)")


def workdir_prefix(stem: str) -> str:
    """The name of a run's temporary mask folder up to mkdtemp's random part: with our pid."""
    return f".{stem}-masks-{os.getpid()}-"


_WORKDIR = re.compile(r"-masks-(?:(\d+)-)?[^/]*$")


def remove_abandoned_workdirs(folder: Path, stem: str, log: Log) -> None:
    """Remove ``.<stem>-masks-*`` folders whose run is dead (a folder of a live run stays)."""
    try:
        candidates = [p for p in folder.glob(f".{stem}-masks-*") if p.is_dir()]
    except OSError:
        return
    for candidate in candidates:
        match = _WORKDIR.search(candidate.name)
        pid = int(match.group(1)) if match and match.group(1) else None
        if pid is not None and _alive(pid):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        log(f"removed {candidate}, the temporary masks of an interrupted run")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
