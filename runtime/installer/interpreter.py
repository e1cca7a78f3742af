"""The running interpreter as the installer sees it: installed distributions, Python, wheel tags.

Reading ``METADATA`` of every distribution (what ``importlib.metadata`` does for ``dist.version``)
costs a fifth of a second on a kernel with a thousand distributions. A ``.dist-info`` folder's name
already carries the normalized name and version (the wheel spec requires it), so the folder
names are read instead, and only folders whose names do not parse (egg-info) have their metadata
headers read. That keeps the "nothing to install" path in milliseconds. The same scan notes pip's
debris: the ``~name`` folders an upgrade stashes the old version in and a killed one leaves
behind (pip then warns "Ignoring invalid distribution ~name" on every run). Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from runtime.contract.profile import canonical_name

# A version as it appears in a .dist-info folder name: starts with a digit (or "v"), no "-".
_FOLDER_VERSION = re.compile(r"v?\d[^-]*")
_METADATA_SUFFIXES = (".dist-info", ".egg-info")
_MAX_HEADER_LINE = 64 << 10
_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Interpreter:
    """What is installed and what the interpreter accepts; build with :meth:`current` or by hand."""

    versions: Mapping[str, str]  # canonical name -> installed version
    python_version: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    executable: str = sys.executable
    explicit_tags: tuple[str, ...] | None = field(default=None, repr=False)
    debris: tuple[str, ...] = ()  # pip's leftover "~name" folders on the scanned paths
    # The paths scanned for `versions`; None when they were given by hand (nothing to re-read).
    scanned: tuple[str, ...] | None = field(default=None, repr=False)

    @classmethod
    def current(cls, paths: Iterable[str] | None = None) -> Interpreter:
        scanned = tuple(sys.path if paths is None else paths)
        versions, debris = scan_site(scanned)
        return cls(versions=versions, debris=tuple(debris), scanned=scanned)

    def rescanned(self) -> Interpreter:
        """The same interpreter with its installed distributions read again from disk."""
        if self.scanned is None:
            return self
        versions, debris = scan_site(self.scanned)
        return dataclasses.replace(self, versions=versions, debris=tuple(debris))

    @property
    def python(self) -> str:
        """``major.minor``, the form profiles and manifests use."""
        return f"{self.python_version[0]}.{self.python_version[1]}"

    @property
    def python_full(self) -> str:
        return ".".join(str(part) for part in self.python_version)

    @cached_property
    def tags(self) -> frozenset[str]:
        """Wheel tags this interpreter installs; computed only when something is to be installed."""
        if self.explicit_tags is not None:
            return frozenset(self.explicit_tags)
        from runtime.installer.versions import packaging_module

        return frozenset(str(tag) for tag in packaging_module("tags").sys_tags())

    def version_of(self, name: str) -> str | None:
        return self.versions.get(canonical_name(name))

    def without(self, names: Iterable[str]) -> Interpreter:
        """The same interpreter with ``names`` counted as not installed (pip did not finish them)."""
        gone = {canonical_name(name) for name in names}
        if not gone:
            return self
        kept = {name: version for name, version in self.versions.items() if name not in gone}
        return dataclasses.replace(self, versions=kept)


def installed_versions(paths: Iterable[str] | None = None) -> dict[str, str]:
    """Canonical name -> version of every distribution on ``paths`` (default ``sys.path``)."""
    return scan_site(paths)[0]


def scan_site(paths: Iterable[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Installed versions on ``paths`` (default ``sys.path``), and pip's ``~name`` debris there.

    The first distribution of a name along the path wins, as it does for imports and for pip.
    Only real folders are scanned: a wheel put on ``sys.path`` by bootstrap.py (zipimport) must not
    count as installed, or our own wheel would never be installed.
    """
    found: dict[str, str] = {}
    debris: list[str] = []
    for entry in sys.path if paths is None else paths:
        directory = entry or "."
        try:
            scanner = os.scandir(directory)
        except OSError:  # not a folder (a zip, a missing path entry): nothing installed there
            continue
        with scanner:
            for item in scanner:
                if item.name.startswith("~"):
                    if item.is_dir(follow_symlinks=False):
                        debris.append(item.path)
                elif item.name.endswith(_METADATA_SUFFIXES):
                    parsed = _parse_metadata_folder(item.path, item.name)
                    if parsed is not None and parsed[0] not in found:
                        found[parsed[0]] = parsed[1]
    return found, sorted(debris)


def metadata_folder_identity(folder_name: str) -> tuple[str, str] | None:
    """(canonical name, version) from a ``name-version.dist-info`` folder name, if it parses."""
    stem, _, suffix = folder_name.rpartition(".")
    if suffix == "dist-info":
        name, _, version = stem.rpartition("-")
        if name and _FOLDER_VERSION.fullmatch(version):
            return canonical_name(name), version
    return None


def _parse_metadata_folder(path: str, folder_name: str) -> tuple[str, str] | None:
    identity = metadata_folder_identity(folder_name)
    if identity is not None:
        return identity
    # egg-info names may carry "-py3.11" or no version at all (in-tree builds): read the headers.
    for filename in ("METADATA", "PKG-INFO"):
        parsed = _read_name_and_version(Path(path) / filename)
        if parsed is not None:
            return parsed
    return None


def _read_name_and_version(path: Path) -> tuple[str, str] | None:
    """Name and Version from a metadata file's headers, without importing the email parser."""
    name = version = None
    read = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            # Bounded: a header block is a few kilobytes, a leftover file may be anything.
            for line in iter(lambda: stream.readline(_MAX_HEADER_LINE), ""):
                read += len(line)
                if read > _MAX_HEADER_BYTES or not line.strip():
                    break  # the headers end at the first blank line; the description follows
                key, _, value = line.partition(":")
                if key == "Name":
                    name = value.strip()
                elif key == "Version":
                    version = value.strip()
                if name and version:
                    return canonical_name(name), version
    except OSError:
        pass  # a broken leftover folder is not an installed distribution
    return None
