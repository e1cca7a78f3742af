"""kaggle-offline bootstrap: the first cell of an offline kernel.

    !python /kaggle/input/<your-wheelhouse-dataset>/bootstrap.py

The bundler copies this file verbatim into every wheelhouse. It runs where nothing of ours is
installed, so it uses the standard library only: it reads the manifest beside itself, checks
kaggle-offline's own wheel against the manifest's sha256, imports the installer straight from a
private copy of that wheel (zipimport), then finds every wheelhouse under the input root, plans
what is missing and installs it, our own wheel included, and prints a one-line summary.
Exit status: 0 on success, 2 on an error (printed as one line; nothing is installed).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST_FILENAME = "manifest.json"
_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 64 << 20  # runtime.contract.files.MAX_DOCUMENT_BYTES


class BootstrapError(Exception):
    """A problem found before the installer could even be imported; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    parser.add_argument(
        "--input-root",
        metavar="DIR",
        help="where to search for wheelhouses (default $KAGGLE_OFFLINE_INPUT_ROOT or /kaggle/input)",
    )
    parser.add_argument(
        "--only-here", action="store_true", help="use this wheelhouse only, search nothing else"
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also install from folders of wheels without a manifest.json (no hash check)",
    )
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    try:
        folder = tempfile.TemporaryDirectory(prefix="kaggle-offline-bootstrap-")
    except OSError as error:  # a full or read-only temporary folder: one line, as promised
        print(f"error: {_no_room(Path(tempfile.gettempdir()), error)}", file=sys.stderr)
        return 2
    with folder as private:
        try:
            return _bootstrap(here, Path(private), args)
        except BootstrapError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:  # a disk that fills up under the installer: still one line
            print(f"error: {_os_error(error, private)}", file=sys.stderr)
            return 2
        finally:
            _forget_private_copy(private)


def _bootstrap(here: Path, private: Path, args: argparse.Namespace) -> int:
    manifest = _read_manifest(here / MANIFEST_FILENAME)
    wheel = _private_self_wheel(here, manifest, private)
    if wheel is not None:
        _forget_private_copy("")  # a runtime imported earlier in this process must not shadow ours
        sys.path.insert(0, str(wheel))
    try:
        from runtime.contract.errors import KaggleOfflineError
        from runtime.installer.core import install
    except ImportError as error:
        raise BootstrapError(
            f"{here}: cannot import kaggle-offline's installer ({error}); this wheelhouse holds no "
            "kaggle-offline wheel, so rebuild it without --no-self"
        ) from None
    try:
        report = install(
            [here],
            input_root=args.input_root,
            search=not args.only_here,
            dry_run=args.dry_run,
            allow_unverified=args.allow_unverified,
        )
    except KaggleOfflineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary())
    return 0


def _read_manifest(path: Path) -> dict[str, Any]:
    # The installer's rule for every document, kept here because this file stands alone: UTF-8
    # with or without a byte order mark, and a nesting too deep to parse is a corrupt manifest.
    try:
        data = json.loads(_bounded_bytes(path).decode("utf-8-sig"))
    except FileNotFoundError:
        raise BootstrapError(
            f"{path}: manifest not found; bootstrap.py must stay beside its manifest.json"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise BootstrapError(f"{path}: unreadable manifest ({error})") from None
    except json.JSONDecodeError as error:
        raise BootstrapError(f"{path}: corrupt manifest, not valid JSON ({error})") from None
    except RecursionError:
        raise BootstrapError(f"{path}: corrupt manifest, nested too deeply to be one") from None
    if not isinstance(data, dict) or not isinstance(data.get("wheels"), list):
        raise BootstrapError(f"{path}: not a kaggle-offline manifest (no list of wheels)")
    return data


def _bounded_bytes(path: Path) -> bytes:
    """A regular file's bytes, at most the installer's limit for a document (never a FIFO's)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = stream.read(_MAX_MANIFEST_BYTES + 1)
    if len(data) > _MAX_MANIFEST_BYTES:
        raise OSError(errno.EFBIG, f"larger than {_MAX_MANIFEST_BYTES >> 20} MiB")
    return data


def _private_self_wheel(here: Path, manifest: dict[str, Any], private: Path) -> Path | None:
    """A verified private copy of kaggle-offline's wheel, or None if the manifest names none."""
    filename = manifest.get("self_wheel")
    if filename is None:
        return None
    origin = here / MANIFEST_FILENAME
    wheel_dir = manifest.get("wheel_dir", "wheels")
    _check_plain_name(origin, "self_wheel", filename)
    _check_plain_name(origin, "wheel_dir", wheel_dir)
    entry = next(
        (w for w in manifest["wheels"] if isinstance(w, dict) and w.get("filename") == filename),
        None,
    )
    if entry is None or not entry.get("sha256"):
        raise BootstrapError(f"{origin}: self_wheel {filename} has no wheel entry with a sha256")
    source = next((p for p in (here / wheel_dir / filename, here / filename) if p.is_file()), None)
    if source is None:
        raise BootstrapError(
            f"{here}: {filename} is listed in manifest.json but missing from disk (looked in "
            f"{wheel_dir}/ and beside the manifest); upload the whole wheelhouse folder again with `kaggle datasets create -p DIR --dir-mode zip` (without it Kaggle drops wheels/)"
        )
    # Hash the very bytes that get imported, so a file swapped after the check cannot run. The
    # copy is a new file in the private folder ("x"): no name can make it overwrite anything.
    target = private / filename
    digest = hashlib.sha256()
    size = source.stat().st_size
    expected_size = entry.get("size") if type(entry.get("size")) is int else None
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    try:
        if shutil.disk_usage(private).free < size:
            raise full  # known before a byte is written
        # Never more than one byte past the manifest's size: a swapped giant file is not copied.
        left = expected_size + 1 if expected_size is not None else None
        with source.open("rb") as stream, target.open("xb") as copy:
            while left is None or left > 0:
                chunk = stream.read(_CHUNK if left is None else min(_CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                copy.write(chunk)
                left = None if left is None else left - len(chunk)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise BootstrapError(f"{source}: cannot copy it to {private} ({error})") from None
        raise BootstrapError(
            f"{_no_room(private, error)} (kaggle-offline's wheel needs {size} bytes)"
        ) from None
    expected = str(entry["sha256"]).lower()
    if digest.hexdigest() != expected:
        raise BootstrapError(
            f"{source}: sha256 {digest.hexdigest()[:16]}... does not match the manifest's "
            f"{expected[:16]}...: the wheel was altered or truncated, so nothing was installed; "
            "re-attach the dataset or rebuild the wheelhouse"
        )
    return target


def _no_room(folder: Path, error: OSError) -> str:
    """One line for a temporary folder that cannot take bootstrap.py's private copy."""
    if error.errno == errno.ENOSPC:
        return (
            f"no space left on {folder}: bootstrap.py keeps a private copy of kaggle-offline's "
            "wheel there; free some space, or set TMPDIR to a folder with room, and run it again"
        )
    return f"{folder}: cannot create bootstrap.py's private folder ({error}); set TMPDIR elsewhere"


def _os_error(error: OSError, private: str) -> str:
    """One line for a file error under the installer (its own refusals are one line already)."""
    where = Path(error.filename).parent if error.filename else Path(private)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {where}; free some space there and run bootstrap.py again"
    return f"{error.filename or where}: {error.strerror or error}"


def _check_plain_name(origin: Path, key: str, value: object) -> None:
    """A manifest's paths are plain names inside its wheelhouse (the installer's rule, too)."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(char in value for char in ("/", "\\", "\x00"))
        or Path(value).name != value
    ):
        raise BootstrapError(
            f"{origin}: {key} {value!r} is not a plain file name: a manifest may only name files "
            "inside its own wheelhouse; nothing was opened or installed"
        )


def _forget_private_copy(private: str) -> None:
    """Drop the private wheel from sys.path and its modules from sys.modules.

    With ``%run bootstrap.py`` the kernel's own process goes on after this script; its later
    ``import runtime`` must find the installed package, not a deleted temporary zip. Called with
    "" it forgets every loaded ``runtime`` module so that the private copy is imported fresh.
    """
    if private:
        sys.path[:] = [entry for entry in sys.path if not entry.startswith(private)]
    for name in [n for n in sys.modules if n == "runtime" or n.startswith("runtime.")]:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if not private or module_file.startswith(private):
            del sys.modules[name]


if __name__ == "__main__":
    sys.exit(main())
