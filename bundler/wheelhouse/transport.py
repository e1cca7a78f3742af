"""Downloads through pip's own session: ``python -m bundler.wheelhouse.transport SPEC -- ARGS``.

Run by :func:`bundler.resolution.resolve.run_shim` for ``SPEC["mode"] == "fetch"``, in a subprocess
of its own, as the resolver shim is; :mod:`bundler.resolution.pip_protocol` is what they share.

The session is the one ``pip download`` would build from the same arguments and configuration:
index credentials (also those pip strips from the URLs in its report: its auth handler finds them
again by the index URL), netrc and keyring, proxies, certificates and client certificates, trusted
hosts, retries and timeouts. Each file goes to ``partial/<sha256>.part`` in the blob store and
enters the store only whole and verified:

- a ``.part`` that already holds the whole file (a run killed after its last byte) is hashed and
  kept, with no request at all;
- otherwise the download resumes with a Range request; a 206 must start where asked, a 200 means
  the server ignored the range (start over), and a 416 (RFC 9110 15.5.17: the range starts at or
  beyond the end; ``Content-Range: bytes */LENGTH``) means the ``.part`` is not a prefix of this
  file: it is dropped and the file fetched whole;
- a resumed file whose hash is wrong is fetched whole once more before that is an error.

Progress goes to stderr: one bar redrawn in place on a terminal, plain lines otherwise.
Standard library and pip only; pip's internals are looked up with :func:`bundler.resolution.pip_protocol.require`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from bundler.blobs import BlobStore
from bundler.resolution.pip_protocol import main, require
from runtime.contract.files import sha256_file

_CHUNK = 1 << 16
_PARALLEL = 4
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE_RANGE = re.compile(r"bytes \*/(\d+)")


class FetchFailure(Exception):
    """One file could not be fetched; the message is one line for the user."""


def _session_factory(pip_args: list[str]) -> Callable[[], Any]:
    """New PipSessions, each as ``pip download PIP_ARGS`` would build it."""
    from pip._internal.cli.req_command import SessionCommandMixin
    from pip._internal.commands import create_command

    build_session = require(SessionCommandMixin, "_build_session")
    command = create_command("download")
    options, _ = command.parse_args([*pip_args, "--no-cache-dir"])

    def new_session() -> Any:
        return build_session(command, options)

    return new_session


class Progress:
    """Bytes and totals of the downloads in flight: a bar on a terminal, lines otherwise."""

    def __init__(self, mode: str, stream: TextIO = sys.stderr, files: int = 0) -> None:
        self.mode = mode  # "bar", "lines" or "none"
        self.stream = stream
        self.files = files
        self.done_files = 0
        self.received = 0
        self.total = 0
        self.lock = threading.Lock()
        self.last = 0.0

    def start(self, filename: str, total: int | None, resumed_at: int) -> None:
        with self.lock:
            self.total += total or 0
            self.received += resumed_at
            if self.mode == "lines":
                size = f" ({_size(total)})" if total else ""
                at = f", resuming at {_size(resumed_at)}" if resumed_at else ""
                self._line(f"downloading {filename}{size}{at}")

    def advance(self, count: int) -> None:
        with self.lock:
            self.received += count
            now = time.monotonic()
            interval = 0.1 if self.mode == "bar" else 5.0
            if now - self.last >= interval:
                self.last = now
                self._status()

    def finish(self, filename: str) -> None:
        with self.lock:
            self.done_files += 1
            if self.mode == "lines":
                self._line(f"downloaded {filename}")
            self._status(force=self.done_files == self.files)

    def close(self) -> None:
        if self.mode == "bar" and self.files:
            self.stream.write("\n")
            self.stream.flush()

    def _status(self, force: bool = False) -> None:
        of = f" of {_size(self.total)}" if self.total else ""
        text = f"{self.done_files}/{self.files} files, {_size(self.received)}{of}"
        if self.mode == "bar":
            fraction = min(1.0, self.received / self.total) if self.total else 0.0
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(f"\r  downloading [{bar}] {fraction:4.0%} {text}  ")
            self.stream.flush()
        elif self.mode == "lines" and (force or self.total):
            self._line(f"progress: {text}")

    def _line(self, text: str) -> None:
        self.stream.write(f"  {text}\n")
        self.stream.flush()


def _size(count: int | None) -> str:
    return f"{(count or 0) / 1e6:.1f} MB"


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    errno = re.search(r"\[Errno -?\d+\][^\"')]*", text)
    return (errno.group(0).strip() if errno else text.splitlines()[0])[:200]


class _Download:
    """One file into the store, resuming from its ``.part`` where that can be trusted."""

    def __init__(
        self, item: dict[str, Any], store: BlobStore, session: Any, progress: Progress
    ) -> None:
        self.url = str(item["url"])
        self.filename = str(item["filename"])
        self.sha256 = item.get("sha256")
        self.store = store
        self.session = session
        self.progress = progress
        self.host = urlsplit(self.url).hostname or self.url
        if self.sha256:
            self.part = store.partial_path(self.sha256)
        else:  # no hash to name it by: a fresh file each time, nothing to resume
            key = hashlib.sha256(self.url.encode()).hexdigest()
            self.part = store.root / "partial" / f"url-{key}.part"
            self.part.unlink(missing_ok=True)
        self.part.parent.mkdir(parents=True, exist_ok=True)

    def run(self) -> dict[str, Any]:
        start = self.part.stat().st_size if self.part.exists() else 0
        if start and sha256_file(self.part) == self.sha256:
            # Killed after the last byte, before the rename: the bytes are all there.
            self.store.commit_partial(self.sha256)
            return self._result(self.sha256, 0, kept_part=True)
        received = self._get(start)
        digest = sha256_file(self.part)
        if self.sha256 and digest != self.sha256 and start:
            # The resumed-from bytes were not this file's: once more, whole.
            self.part.unlink(missing_ok=True)
            received += self._get(0)
            digest = sha256_file(self.part)
        if self.sha256 and digest != self.sha256:
            self.part.unlink(missing_ok=True)
            raise FetchFailure(
                f"{self.filename} from {self.host}: sha256 {digest} does not match the index's "
                f"{self.sha256}; the partial file was discarded, re-run to download it again"
            )
        if self.sha256:
            self.store.commit_partial(digest)
        else:
            final = self.store.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            self.part.replace(final)
        return self._result(digest, received)

    def _result(self, digest: str, received: int, kept_part: bool = False) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "sha256": digest,
            "downloaded_bytes": received,
            "kept_part": kept_part,
        }

    def _get(self, start: int) -> int:
        """Bytes received now; the ``.part`` then holds the whole file (if the server is honest)."""
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        received = 0
        total: int | None = None
        try:
            response = self.session.get(self.url, headers=headers, stream=True)
            try:
                if response.status_code == 416 and start:
                    # Nothing of ours lies at or beyond the file's end: the .part is not a
                    # prefix of this file. Content-Range says how long the file is.
                    stated = _UNSATISFIABLE_RANGE.fullmatch(
                        response.headers.get("Content-Range", "")
                    )
                    length = f" (the file has {stated.group(1)} bytes)" if stated else ""
                    self.progress.stream.write(
                        f"  {self.filename}: the server refused the range from byte {start}"
                        f"{length}; downloading it whole\n"
                    )
                    self.part.unlink(missing_ok=True)
                    return self._get(0)
                if response.status_code >= 400:
                    raise FetchFailure(self._http_failure(response))
                append = start and response.status_code == 206 and self._starts_at(response, start)
                if start and not append:
                    start = 0  # the server ignored the range or answered another one: start over
                length = response.headers.get("Content-Length")
                total = start + int(length) if length and length.isdigit() else None
                self.progress.start(self.filename, total, start)
                with open(self.part, "ab" if append else "wb") as out:
                    for chunk in response.raw.stream(_CHUNK, decode_content=False):
                        out.write(chunk)
                        received += len(chunk)
                        self.progress.advance(len(chunk))
            finally:
                response.close()
        except FetchFailure:
            raise
        except Exception as error:  # requests/urllib3/OS errors: one line, resumable
            have = start + received
            of_total = f" of {total}" if total else ""
            raise FetchFailure(
                f"network failure downloading {self.filename} from {self.host} after "
                f"{have}{of_total} bytes ({_reason(error)}); nothing was written to the "
                "wheelhouse: re-run the same command to resume"
            ) from None
        if total is not None and start + received < total:
            raise FetchFailure(
                f"network failure downloading {self.filename} from {self.host}: the connection "
                f"closed after {start + received} of {total} bytes; re-run the same command to "
                "resume"
            )
        self.progress.finish(self.filename)
        return received

    @staticmethod
    def _starts_at(response: Any, start: int) -> bool:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        return bool(match) and int(match.group(1)) == start

    def _http_failure(self, response: Any) -> str:
        status = f"HTTP {response.status_code} {response.reason or ''}".strip()
        if response.status_code in (401, 403):
            return (
                f"{self.filename} from {self.host}: {status}; the index needs credentials: give "
                "them in --index-url (https://USER:TOKEN@host/...), netrc or keyring"
            )
        return f"{self.filename} from {self.host}: {status}; check the index and re-run"


def fetch_with_pip(spec: dict[str, Any], pip_args: list[str]) -> int:
    """Download ``spec["files"]`` into ``spec["blob_dir"]``; results go to ``spec["result"]``."""
    store = BlobStore(Path(spec["blob_dir"]))
    items = list(spec["files"])
    new_session = _session_factory(pip_args)
    progress = Progress(spec.get("progress", "none"), files=len(items))
    local = threading.local()

    def fetch_one(item: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(local, "session"):
            local.session = new_session()
        try:
            return _Download(item, store, local.session, progress).run()
        except FetchFailure as failure:
            return {"filename": item["filename"], "error": str(failure)}

    with ThreadPoolExecutor(max_workers=max(1, min(_PARALLEL, len(items)))) as pool:
        results = list(pool.map(fetch_one, items))
    progress.close()
    Path(spec["result"]).write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "fetch", fetch_with_pip))
