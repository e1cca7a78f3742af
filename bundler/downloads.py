"""Fetch files into the blob store: resumable, hash-checked, several at a time.

A download writes to ``partial/<sha256>.part`` and enters the store only whole and verified, so an
interrupted run leaves nothing half-written in a wheelhouse, and the next run continues from the
bytes it already has (an HTTP Range request).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bundler.blobs import BlobStore
from bundler.errors import DownloadError
from runtime import __version__
from runtime.contract.files import sha256_file

_CHUNK = 1 << 16
_TIMEOUT_S = 60.0
_PARALLEL = 4


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
    downloaded_bytes: int  # 0 when the store already had it


def fetch_all(
    fetches: Sequence[Fetch], store: BlobStore, log: Callable[[str], None] = lambda line: None
) -> list[Fetched]:
    """Bring every file into ``store``; raise the first DownloadError after the others finish."""
    if not fetches:
        return []
    with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(fetches))) as pool:
        futures = [pool.submit(fetch, item, store, log) for item in fetches]
        results: list[Fetched] = []
        errors: list[DownloadError] = []
        for future in futures:
            try:
                results.append(future.result())
            except DownloadError as error:
                errors.append(error)
    if errors:
        raise errors[0]
    return results


def fetch(item: Fetch, store: BlobStore, log: Callable[[str], None] = lambda line: None) -> Fetched:
    if item.sha256 and store.has(item.sha256):
        return Fetched(item.filename, item.sha256, 0)
    scheme = urlsplit(item.url).scheme
    if scheme == "file":
        return _fetch_local(item, store)
    if scheme not in ("http", "https"):
        raise DownloadError(f"{item.filename}: unsupported URL scheme in {item.url}")
    return _fetch_http(item, store, log)


def _fetch_local(item: Fetch, store: BlobStore) -> Fetched:
    path = Path(urllib.request.url2pathname(urlsplit(item.url).path))
    try:
        digest = store.add_file(path, expected_sha256=item.sha256)
    except FileNotFoundError:
        raise DownloadError(f"{item.filename}: {path} does not exist") from None
    except ValueError as error:
        raise DownloadError(f"{item.filename}: {error}; the index is inconsistent") from None
    return Fetched(item.filename, digest, path.stat().st_size)


def _ssl_context() -> ssl.SSLContext:
    # pip's own CA setting, so an index that pip can reach is reachable here too.
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or None
    return ssl.create_default_context(cafile=cafile)


def _fetch_http(item: Fetch, store: BlobStore, log: Callable[[str], None]) -> Fetched:
    if item.sha256:
        part = store.partial_path(item.sha256)
    else:  # no hash to name it by: a fresh file each time, nothing to resume
        key = hashlib.sha256(item.url.encode()).hexdigest()
        part = store.root / "partial" / f"url-{key}.part"
        part.unlink(missing_ok=True)
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"kaggle-offline/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    host = urlsplit(item.url).netloc
    received = 0
    total: int | None = None
    try:
        request = urllib.request.Request(item.url, headers=headers)
        context = _ssl_context() if item.url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S, context=context) as response:
            if start and response.status != 206:
                start = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            if start:
                log(f"resuming {item.filename} at byte {start}")
            with open(part, "ab" if start else "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as error:
        have = start + received
        of_total = f" of {total}" if total else ""
        raise DownloadError(
            f"network failure downloading {item.filename} from {host} after {have}{of_total} "
            f"bytes ({_reason(error)}); nothing was written to the wheelhouse: re-run the same "
            "command to resume"
        ) from None
    if total is not None and start + received < total:
        raise DownloadError(
            f"network failure downloading {item.filename} from {host}: the connection closed "
            f"after {start + received} of {total} bytes; re-run the same command to resume"
        )
    digest = sha256_file(part)
    if item.sha256 and digest != item.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{item.filename} from {host}: sha256 {digest} does not match the index's "
            f"{item.sha256}; the partial file was discarded, re-run to download it again"
        )
    if not item.sha256:
        final = store.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        part.replace(final)
    else:
        store.commit_partial(digest)
    return Fetched(item.filename, digest, received)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, http.client.IncompleteRead):
        return "connection closed early"
    return str(error) or type(error).__name__
