"""Fetch files into the blob store: local files copied here, remote ones through pip's transport.

Remote files are downloaded by :mod:`bundler.wheelhouse.transport` in the shim's subprocess, with the very
session pip builds from the same index arguments and configuration, so whatever lets pip reach an
index (credentials, netrc, keyring, proxies, certificates, trusted hosts) lets the download reach
it too. Every file enters the store only whole and verified; an interrupted download resumes.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bundler.blobs import BlobStore
from bundler.errors import DownloadError
from bundler.resolution.resolve import IndexSettings, run_shim


@dataclass(frozen=True)
class Fetch:
    """One file to bring into the store."""

    url: str
    filename: str
    sha256: str | None  # None when the index gave no hash: computed after the download


@dataclass(frozen=True)
class Fetched:
    filename: str
    sha256: str
    downloaded_bytes: int  # 0 when the store already had it (or a complete .part was kept)


def progress_mode(log: Callable[[str], None] | None) -> str:
    """A bar on a terminal, plain lines otherwise, nothing when the build is quiet."""
    if log is None:
        return "none"
    return "bar" if sys.stderr.isatty() else "lines"


def fetch_all(
    fetches: Sequence[Fetch],
    store: BlobStore,
    index: IndexSettings,
    *,
    progress: str = "none",
) -> list[Fetched]:
    """Bring every file into ``store``; raise the first DownloadError after the others finish."""
    results: list[Fetched] = []
    errors: list[str] = []
    remote: list[Fetch] = []
    for item in fetches:
        if item.sha256 and store.has(item.sha256):
            results.append(Fetched(item.filename, item.sha256, 0))
            continue
        scheme = urlsplit(item.url).scheme
        if scheme == "file":
            try:
                results.append(_fetch_local(item, store))
            except DownloadError as error:
                errors.append(str(error))
        elif scheme in ("http", "https"):
            remote.append(item)
        else:
            errors.append(f"{item.filename}: unsupported URL scheme in {item.url}")
    if remote:
        for entry in _fetch_remote(remote, store, index, progress):
            if "error" in entry:
                errors.append(str(entry["error"]))
            else:
                results.append(
                    Fetched(entry["filename"], entry["sha256"], int(entry["downloaded_bytes"]))
                )
    if errors:
        raise DownloadError(errors[0])
    return results


def _fetch_local(item: Fetch, store: BlobStore) -> Fetched:
    path = Path(urllib.request.url2pathname(urlsplit(item.url).path))
    try:
        digest = store.add_file(path, expected_sha256=item.sha256)
    except FileNotFoundError:
        raise DownloadError(f"{item.filename}: {path} does not exist") from None
    except ValueError as error:
        raise DownloadError(f"{item.filename}: {error}; the index is inconsistent") from None
    return Fetched(item.filename, digest, path.stat().st_size)


def _fetch_remote(
    items: Sequence[Fetch], store: BlobStore, index: IndexSettings, progress: str
) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-fetch-") as scratch:
        result_path = Path(scratch) / "fetched.json"
        spec = {
            "mode": "fetch",
            "blob_dir": str(store.root),
            "files": [
                {"url": item.url, "filename": item.filename, "sha256": item.sha256}
                for item in items
            ],
            "result": str(result_path),
            "progress": progress,
        }
        completed = run_shim(spec, Path(scratch), index.pip_args(), index, progress=progress)
        try:
            return list(json.loads(result_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            tail = (completed.stderr or "").strip().splitlines()
            raise DownloadError(
                f"downloading {len(items)} file(s) through pip failed"
                f" ({tail[-1] if tail else f'exit status {completed.returncode}'})"
            ) from None
