"""Releases and their metadata through pip's own finder and session (``SPEC["mode"]`` ``probe`` or ``sizes``).

Runs in the shim's subprocess, with the target's markers, tags and Python patched in, so the
finder lists exactly the files the target accepts. Metadata comes from a release's PEP 658
``.metadata`` file where the index serves one, else from the wheel's ``METADATA`` read through
HTTP range requests by pip's ``lazy_wheel`` (a few hundred kB of a 400 MB vLLM wheel), else from
a local wheel file; an sdist is never built. Sizes come from the index's ``Content-Length`` (or
the local file), see :mod:`bundler.resolution.release_sizes`. The search itself is :func:`bundler.kernel_fit.check_requests`.
"""

from __future__ import annotations

import email.parser
import json
import logging
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from bundler.resolution.kernel_fit import (
    FitLimits,
    Release,
    Request,
    canonical,
    check_requests,
)
from bundler.resolution.pip_protocol import main, require
from bundler.resolution.pip_shim import target_patches
from bundler.resolution.release_sizes import file_size

# A wheel whose metadata cannot be read by range requests is downloaded whole only up to this.
_WHOLE_DOWNLOAD_LIMIT = 64 * 1024 * 1024
# Bytes per range request when a wheel's METADATA is read without downloading the wheel.
_RANGE_CHUNK = 1 << 20
# Metadata reads in flight at once (each a few range requests to the index).
_PARALLEL = 8


class PipReleaseSource:
    """:class:`bundler.kernel_fit.ReleaseSource` on pip's PackageFinder and PipSession."""

    def __init__(self, pip_args: list[str]) -> None:
        from pip._internal.cli.req_command import SessionCommandMixin
        from pip._internal.commands import create_command

        command = create_command("install")
        options, _ = command.parse_args([*pip_args, "--no-cache-dir"])
        build_session = require(SessionCommandMixin, "_build_session")
        build_finder = require(command, "_build_package_finder")
        self.session = build_session(command, options)
        self.finder = build_finder(options, self.session)
        self._local = threading.local()
        self._new_session = lambda: build_session(command, options)
        self._new_finder = lambda session: build_finder(options, session)
        self._links: dict[str, Any] = {}
        self.started = time.monotonic()
        self._releases: dict[str, list[Release]] = {}
        self._requires: dict[str, list[str] | None] = {}
        self._sizes: dict[str, int | None] = {}
        self.metadata_reads = 0

    def _thread_session(self) -> Any:
        if not hasattr(self._local, "session"):
            self._local.session = self._new_session()
            self._local.finder = self._new_finder(self._local.session)
        return self._local.session

    def prefetch_releases(self, names: Sequence[str]) -> None:
        todo = [name for name in names if name not in self._releases]
        if len(todo) < 2:
            return

        def listing(name: str) -> tuple[str, list[Release]]:
            self._thread_session()
            return name, self._list(name, self._local.finder)

        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(todo))) as pool:
            for name, found in pool.map(listing, todo):
                self._releases[name] = found

    def prefetch_sizes(self, releases: Sequence[Release]) -> None:
        todo = [r for r in releases if r.url not in self._sizes]
        if len(todo) < 2:
            return

        def sized(release: Release) -> tuple[str, int | None]:
            return release.url, file_size(self._thread_session(), release.url)

        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(todo))) as pool:
            self._sizes.update(pool.map(sized, todo))

    def releases(self, name: str) -> list[Release]:
        if name not in self._releases:
            self._releases[name] = self._list(name, self.finder)
        return self._releases[name]

    def _list(self, name: str, finder: Any) -> list[Release]:
        found = []
        for candidate in finder.find_all_candidates(name):
            link = candidate.link
            if getattr(link, "is_yanked", False):
                continue
            self._links[link.url_without_fragment] = link
            found.append(
                Release(
                    name=canonical(str(candidate.name)),
                    version=str(candidate.version),
                    filename=link.filename,
                    url=link.url_without_fragment,
                    is_wheel=link.is_wheel,
                    pure=link.is_wheel and _is_pure(link.filename),
                )
            )
        found.sort(key=lambda r: _sort_key(r.version), reverse=True)
        return found

    def requires(self, release: Release) -> list[str] | None:
        if release.url not in self._requires:
            self.metadata_reads += 1
            self._requires[release.url] = self._read_requires(release, self.session)
        return self._requires[release.url]

    def prefetch(self, releases: Sequence[Release]) -> None:
        """Read several releases' metadata at once, one pip session per thread."""
        todo = [r for r in releases if r.url not in self._requires]
        if len(todo) < 2:
            return

        def read(release: Release) -> tuple[str, list[str] | None]:
            return release.url, self._read_requires(release, self._thread_session())

        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(todo))) as pool:
            for url, lines in pool.map(read, todo):
                self.metadata_reads += 1
                self._requires[url] = lines

    def say(self, line: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"  [{elapsed:5.1f} s] {line}", file=sys.stderr, flush=True)

    def _read_requires(self, release: Release, session: Any) -> list[str] | None:
        if not release.is_wheel:
            return None  # reading an sdist's metadata means building it: never here
        link = self._links.get(release.url)
        metadata_link = link.metadata_link() if link is not None else None
        if metadata_link is not None:
            try:
                response = session.get(metadata_link.url_without_fragment)
                response.raise_for_status()
                return _requires_of(response.content)
            except Exception:
                pass
        if urlsplit(release.url).scheme == "file":
            return _wheel_requires(Path(url2pathname(urlsplit(release.url).path)))
        try:
            return _lazy_requires(release, session)
        except Exception:  # no range requests: the whole wheel, if small
            return self._whole_wheel_requires(release, session)

    def _whole_wheel_requires(self, release: Release, session: Any) -> list[str] | None:
        size = self.size(release)
        if size is None or size > _WHOLE_DOWNLOAD_LIMIT:
            return None
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".whl") as handle:
            try:
                response = session.get(release.url, stream=True)
                response.raise_for_status()
                for chunk in response.raw.stream(1 << 16, decode_content=False):
                    handle.write(chunk)
                handle.flush()
            except Exception:
                return None
            return _wheel_requires(Path(handle.name))

    def size(self, release: Release) -> int | None:
        if release.url not in self._sizes:
            self._sizes[release.url] = file_size(self.session, release.url)
        return self._sizes[release.url]


def _lazy_requires(release: Release, session: Any) -> list[str]:
    """The wheel's Requires-Dist through pip's LazyZipOverHTTP, in 1 MB ranges: its default 10 kB
    steps cost a hundred requests for the central directory of a vLLM wheel."""
    from pip._internal.network import lazy_wheel

    lazy_zip = require(lazy_wheel, "LazyZipOverHTTP")
    with lazy_zip(release.url, session, chunk_size=_RANGE_CHUNK) as archive:
        wheel = require(lazy_wheel, "MemoryWheel")(archive.name, archive)
        dist = require(lazy_wheel, "get_wheel_distribution")(wheel, release.name)
        return [str(line) for line in dist.metadata.get_all("Requires-Dist") or []]


def _is_pure(filename: str) -> bool:
    from pip._vendor.packaging.utils import parse_wheel_filename

    try:
        tags = parse_wheel_filename(filename)[3]
    except ValueError:
        return False
    return all(tag.abi == "none" and tag.platform == "any" for tag in tags)


def _sort_key(version: str) -> Any:
    from pip._vendor.packaging.version import InvalidVersion, Version

    try:
        return Version(version)
    except InvalidVersion:
        return Version("0")


def _requires_of(metadata: bytes) -> list[str]:
    message = email.parser.BytesParser().parsebytes(metadata, headersonly=True)
    return [str(line) for line in message.get_all("Requires-Dist") or []]


def _wheel_requires(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(
                (n for n in archive.namelist() if n.count("/") == 1 and n.endswith(
                    ".dist-info/METADATA")),
                None,
            )  # fmt: skip
            return None if member is None else _requires_of(archive.read(member))
    except (OSError, zipfile.BadZipFile):
        return None


def probe_with_pip(spec: dict[str, Any], pip_args: list[str]) -> int:
    """Check ``spec["requests"]`` against ``spec["pins"]``; the result goes to ``spec["result"]``."""
    started = time.monotonic()
    target_patches(spec)
    # The finder warns about every file:// index without the project ("Location ... is
    # ignored"): noise beside the probe's own lines.
    logging.getLogger("pip").setLevel(logging.ERROR)
    source = PipReleaseSource(pip_args)
    limits = FitLimits(**spec["limits"])
    fits = check_requests(
        [Request.parse(text) for text in spec["requests"]],
        spec["pins"],
        spec["markers"],
        source,
        kernel=spec["kernel"],
        pinned_by_kernel=spec.get("pinned_by_kernel", {}),
        limits=limits,
    )
    result = {
        "fits": [fit.to_dict() for fit in fits],
        "metadata_reads": source.metadata_reads,
        "seconds": time.monotonic() - started,
    }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "probe", probe_with_pip))
