"""Files written atomically and files hashed: the one copy of each, shared by every layer.

Everything the project writes that someone else reads later (a manifest, a mask, the submission
zip, metrics.json, a cached wheel) goes through :func:`replacing`, so a reader sees the old file
or the complete new one, never half of one. Standard library only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "check_document_format",
    "read_json",
    "copy_hashing",
    "replacing",
    "sha256_file",
    "sha256_stream",
    "write_json_atomically",
    "write_text_atomically",
]

CHUNK = 1 << 20


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Readers therefore see the old file or the complete new one, never a truncated one, and a
    failure leaves no temporary behind. The file gets the usual permissions (0666 minus umask),
    not mkstemp's owner-only 0600, so that another user (or a Kaggle dataset) can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path | str, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomically(path: Path | str, data: Any) -> None:
    """JSON, indented, with a final newline; a crash leaves the old file or the new one."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str, *, error: type[Exception]) -> Any:
    """A JSON file's content; ``error`` with one line naming the file when it is missing or bad."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, ValueError) as problem:
        raise error(f"{path}: not readable JSON ({problem})") from None


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as stream:
        return sha256_stream(stream)


def copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to ``target`` and return the sha256 and size of the very bytes copied.

    Hashing the copy as it is written, rather than the source before or after, is what makes a
    check race-free: a file swapped in the source after the check never reaches ``target``.
    ``target`` must not exist (``x`` mode), so that no path can make this truncate a file.
    """
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as stream, open(target, "xb") as copy:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            copy.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_document_format(
    data: Any,
    *,
    origin: str,
    kind: str,
    format_name: str,
    format_version: int,
    hint: str,
    error: type[Exception],
) -> None:
    """Raise ``error`` unless ``data`` is a JSON object of our ``format_name`` at ``format_version``.

    ``kind`` names the document in messages ("manifest", "profile"); ``hint`` says what to do
    about an unsupported version.
    """
    if not isinstance(data, dict):
        raise error(f"{origin}: a {kind} must be a JSON object")
    if data.get("format") != format_name:
        raise error(f"{origin}: not a kaggle-offline {kind} (format={data.get('format')!r})")
    if data.get("format_version") != format_version:
        raise error(
            f"{origin}: {kind} format_version {data.get('format_version')!r} is not supported "
            f"(expected {format_version}); {hint}"
        )


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask
