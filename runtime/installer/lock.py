"""One install at a time per environment: an advisory lock file beside what pip installs.

Two installs into one site-packages at once (two bootstrap.py cells, a notebook and a terminal)
make pip fail half-way, or both uninstall and install the same upgrade. So an install that has
something to do takes ``<site-packages>/.kaggle-offline-install.lock`` with ``fcntl.flock``
first, waits for it up to a timeout, and then plans again: what the other install put in place
is no longer missing, so the second reports the truth ("nothing to install"), not a pip error.

``flock`` locks belong to the open file: a killed holder releases its lock at once, so a stale
lock file is harmless and never needs deleting. Where ``fcntl`` does not exist (Windows) the
install runs unlocked. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from runtime.contract.errors import InstallError

__all__ = ["DEFAULT_TIMEOUT", "LOCK_FILENAME", "install_lock", "lock_path"]

LOCK_FILENAME = ".kaggle-offline-install.lock"
DEFAULT_TIMEOUT = 600.0  # seconds; an upgrade of torch-sized wheels takes minutes
_POLL = 0.1


def lock_path(site_packages: str | os.PathLike[str] | None = None) -> Path:
    """The lock file of the environment whose site-packages is ``site_packages`` (default: this one).

    It lives in site-packages, where pip writes. Where that is not writable (pip then installs
    somewhere else), a lock keyed by the folder's path in the temporary folder serializes too.
    """
    folder = Path(site_packages or sysconfig.get_paths()["purelib"])
    if os.access(folder, os.W_OK):
        return folder / LOCK_FILENAME
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"kaggle-offline-install-{digest}.lock"


@contextlib.contextmanager
def install_lock(
    path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_wait: Callable[[str], None] = lambda _message: None,
) -> Iterator[float]:
    """Hold the install lock at ``path``; yields the seconds spent waiting for it (0.0: none).

    ``on_wait`` hears once that another install holds it. After ``timeout`` seconds of waiting an
    :class:`InstallError` says who holds it and that nothing was installed.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: nothing to lock with, run unlocked
        yield 0.0
        return
    try:
        # Never through a symbolic link: the fallback lives in a folder everyone can write to.
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        raise InstallError(
            f"{path}: cannot open the install lock ({error.strerror or error}); nothing was "
            "installed"
        ) from None
    try:
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                holder = _holder(descriptor)
                if waited >= timeout:
                    raise InstallError(
                        f"another kaggle-offline install{holder} into this environment still "
                        f"holds {path} after {timeout:.0f} s; nothing was installed: let it "
                        "finish, then run this again"
                    ) from None
                if not told:
                    on_wait(
                        f"waiting for another kaggle-offline install{holder} into this "
                        f"environment to finish (it holds {path})"
                    )
                    told = True
                time.sleep(_POLL)
        _write_holder(descriptor)
        try:
            yield time.monotonic() - started if told else 0.0
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _write_holder(descriptor: int) -> None:
    """Our pid into the lock file, for the message of whoever waits; only into a file of its own."""
    info = os.fstat(descriptor)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)


def _holder(descriptor: int) -> str:
    """ " (pid N)" from the lock file, when the holder has written it yet."""
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
