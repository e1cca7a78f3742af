"""What a wheel's archive says about itself, read with bounds: its METADATA headers and its size.

pip trusts a wheel's ``.dist-info/METADATA`` over its file name (a file named ``alpha-1.0`` whose
METADATA says 9.9 installs 9.9), and unpacks every member at the size the archive declares. So
both halves read them before trusting a wheel: the name and version inside, the one
``.dist-info`` folder pip will use, and the bytes unpacking will write. Everything read from the
archive is bounded: only METADATA's header block is read, line by line, up to
:data:`MAX_HEADER_BYTES` (a METADATA of gigabytes costs no more than that), and the sizes come from
the central directory, which the wheel's own size bounds. Standard library only.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runtime.contract.errors import WheelhouseError

__all__ = ["MAX_HEADER_BYTES", "WheelArchive", "read_wheel_archive"]

# Real METADATA header blocks are a few kilobytes (the description comes after the blank line
# that ends them); a long Requires-Dist list stays far below this.
MAX_HEADER_BYTES = 1 << 20
_MAX_LINE = 64 << 10
BLOCK = 4096  # a file occupies whole blocks on disk: each member is counted rounded up to one


@dataclass(frozen=True)
class WheelArchive:
    """The parts of a wheel that decide what pip installs, and what unpacking it costs."""

    dist_info: str  # the one top-level ``<name>-<version>.dist-info`` folder
    name: str  # METADATA's Name, as written
    version: str  # METADATA's Version, as written
    headers: tuple[tuple[str, str], ...]  # every METADATA header, in order
    unpacked_bytes: int  # the members' declared sizes, each rounded up to a whole block
    source_bytes: int  # of the ``.py`` members: what compiling to bytecode roughly adds
    members: int

    def header_values(self, key: str) -> tuple[str, ...]:
        return tuple(value for name, value in self.headers if name.lower() == key.lower())


def read_wheel_archive(path: Path) -> WheelArchive:
    """The archive facts of the wheel at ``path``; :class:`WheelhouseError` names what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            dist_infos = sorted(
                {
                    info.filename.split("/", 1)[0]
                    for info in infos
                    if "/" in info.filename
                    and info.filename.split("/", 1)[0].endswith(".dist-info")
                }
            )
            if len(dist_infos) != 1:
                found = ", ".join(dist_infos[:3]) or "none"
                raise WheelhouseError(
                    f"{path}: a wheel holds exactly one top-level .dist-info folder, this one "
                    f"{len(dist_infos)} ({found}); not a wheel pip can install"
                )
            member = f"{dist_infos[0]}/METADATA"
            try:
                with archive.open(member) as stream:
                    headers = _read_headers(stream, path)
            except KeyError:
                raise WheelhouseError(f"{path}: no {member} inside; not a wheel") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise WheelhouseError(f"{path}: unreadable wheel ({error})") from None
    values = dict((key.lower(), value) for key, value in reversed(headers))
    name, version = values.get("name", ""), values.get("version", "")
    if not name or not version:
        raise WheelhouseError(f"{path}: {member} has no Name or no Version; not a wheel")
    return WheelArchive(
        dist_info=dist_infos[0],
        name=name,
        version=version,
        headers=headers,
        unpacked_bytes=sum(-(-info.file_size // BLOCK) * BLOCK for info in infos),
        source_bytes=sum(info.file_size for info in infos if info.filename.endswith(".py")),
        members=len(infos),
    )


def _read_headers(stream: IO[bytes], path: Path) -> tuple[tuple[str, str], ...]:
    """RFC 822 style headers up to the first blank line, folded lines joined; bounded."""
    headers: list[tuple[str, str]] = []
    read = 0
    while True:
        raw = stream.readline(_MAX_LINE)
        read += len(raw)
        if read > MAX_HEADER_BYTES or (len(raw) == _MAX_LINE and not raw.endswith(b"\n")):
            raise WheelhouseError(
                f"{path}: METADATA's headers run past {MAX_HEADER_BYTES >> 20} MiB (or a line "
                f"past {_MAX_LINE >> 10} KiB); not a wheel's metadata"
            )
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.strip():
            break  # the end of the headers (or of the file); the description follows
        if line[0] in " \t" and headers:
            key, value = headers[-1]
            headers[-1] = (key, f"{value} {line.strip()}")
            continue
        key, colon, value = line.partition(":")
        if colon:
            headers.append((key.strip(), value.strip()))
    return tuple(headers)
