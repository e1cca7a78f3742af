"""Files written atomically, files hashed and JSON documents read: the one copy of each.

Everything the project writes that someone else reads later (a manifest, a mask, the submission
zip, metrics.json, a cached wheel) goes through :func:`replacing`, so a reader sees the old file
or the complete new one, never half of one. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runtime.contract.errors import OutputError

__all__ = [
    "JsonFields",
    "check_document_format",
    "copy_hashing",
    "is_out_of_space",
    "load_json",
    "read_document_bytes",
    "replacing",
    "sha256_file",
    "sha256_stream",
    "json_text",
    "write_bytes_atomically",
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
    except OSError as problem:
        temporary.unlink(missing_ok=True)
        if is_out_of_space(problem):
            raise OutputError(f"no space left on {path.parent} (writing {path.name})") from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# numpy's tofile() (used by np.save and tifffile on real files) reports a full disk as
# "131072 requested and 106240 written", an OSError without errno.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def is_out_of_space(problem: OSError) -> bool:
    """Whether a write failed because its filesystem (or the user's quota) is full."""
    if problem.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return problem.errno is None and bool(_SHORT_WRITE.search(str(problem)))


def write_text_atomically(path: Path | str, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path | str, data: bytes) -> None:
    with replacing(path) as temporary:
        temporary.write_bytes(data)


def json_text(data: Any) -> str:
    """JSON as the project writes it: indented, with a final newline."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def write_json_atomically(path: Path | str, data: Any) -> None:
    """JSON, indented, with a final newline; a crash leaves the old file or the new one."""
    write_text_atomically(path, json_text(data))


def load_json(path: str | os.PathLike[str], *, kind: str, error: type[Exception]) -> Any:
    """The JSON document at ``path``; every way it can be unusable is one line, ``error("<path>: ...")``.

    One rule for every document either half reads (manifests, profiles): UTF-8 with or without a
    byte order mark (Windows editors add one, and RFC 8259 lets a parser ignore it), and nesting
    deeper than the interpreter can parse is a corrupt document, not a crash. ``NaN``,
    ``Infinity`` and numbers beyond a float (``1e400``) are not JSON values (Python's parser
    accepts them): one is refused here, naming its key, before it can reach a comparison.
    """
    try:
        text = read_document_bytes(path).decode("utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: {kind} not found") from None
    except OSError as problem:
        raise error(f"{path}: unreadable {kind} ({problem.strerror or problem})") from None
    except UnicodeDecodeError as problem:
        raise error(
            f"{path}: unreadable {kind}, not UTF-8 ({problem.reason} at byte {problem.start})"
        ) from None
    try:
        data = json.loads(
            text,
            parse_constant=_NonFinite,
            parse_float=_finite_float,
            object_pairs_hook=_finite_object,
        )
        if isinstance(data, _NonFinite | list):
            _finite_value("the document", data)
        return data
    except json.JSONDecodeError as problem:
        raise error(f"{path}: corrupt {kind}, not valid JSON ({problem})") from None
    except _NotJson as problem:
        raise error(f"{path}: corrupt {kind}, {problem}") from None
    except RecursionError:
        raise error(f"{path}: corrupt {kind}, nested too deeply to be one") from None


class _NotJson(ValueError):
    pass


class _NonFinite(str):
    """Where the parser met NaN, Infinity or a number beyond a float (1e400): refused by key."""


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _finite_value(key: str, value: Any) -> None:
    pending = [value]  # lists in lists, without recursion (objects are checked as they are built)
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, _NonFinite):
            raise _NotJson(f"{key} is {item}, not a finite number (NaN and Infinity are not JSON)")


def _finite_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in pairs:
        _finite_value(repr(key), value)
    return dict(pairs)


# Far above any document of ours (a manifest of a thousand wheels is about 1 MiB), far below
# what would cost a kernel its memory: a larger file is not one of our documents.
MAX_DOCUMENT_BYTES = 64 << 20


def read_document_bytes(path: str | os.PathLike[str], limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; an ``OSError`` saying why not.

    Never blocks on a FIFO (a named pipe called manifest.json would hang a search of the input
    folder) and never reads more than ``limit`` bytes, whatever the file claims or becomes.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB, too large to be one")
    return data


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as stream:
        return sha256_stream(stream)


def copy_hashing(source: Path, target: Path, *, limit: int | None = None) -> tuple[str, int]:
    """Copy ``source`` to ``target`` and return the sha256 and size of the very bytes copied.

    Hashing the copy as it is written, rather than the source before or after, is what makes a
    check race-free: a file swapped in the source after the check never reaches ``target``.
    ``target`` must not exist (``x`` mode), so that no path can make this truncate a file.
    With ``limit`` (the size the caller expects), no more than ``limit + 1`` bytes are copied:
    a file that is larger is known to be wrong without copying all of it.
    """
    digest = hashlib.sha256()
    size = 0
    budget = None if limit is None else limit + 1
    with open(source, "rb") as stream, open(target, "xb") as copy:
        while budget is None or size < budget:
            chunk = stream.read(CHUNK if budget is None else min(CHUNK, budget - size))
            if not chunk:
                break
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


_JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
               str: "a string", list: "a list", dict: "an object"}  # fmt: skip
_REQUIRED: Any = object()


class JsonFields:
    """Typed reads from one JSON object of a document; every wrong type is one line, ``error``.

    A manifest or profile is untrusted input: ``"name": null`` must be refused by name, never
    turned into a package called "None" by ``str()``.
    """

    def __init__(self, data: Any, where: str, error: type[Exception]) -> None:
        if not isinstance(data, dict):
            raise error(f"{where} must be a JSON object, not {_kind(data)}")
        self.data, self.where, self.error = data, where, error

    def _get(self, key: str, default: Any, expected: tuple[type, ...], kind: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(f"{self.where}: missing key {key!r}")
            return default
        value = self.data[key]
        # bool is an int in Python, never in a manifest: a size of `true` is a type error.
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise self.error(f"{self.where}: {key!r} must be {kind}, not {_kind(value)}")
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        return self._get(key, default, (str,), "a string")

    def optional_text(self, key: str) -> str | None:
        return self._get(key, None, (str, type(None)), "a string or null")

    def flag(self, key: str, default: Any = _REQUIRED) -> bool:
        return self._get(key, default, (bool,), "true or false")

    def count(self, key: str) -> int:
        value = self._get(key, _REQUIRED, (int,), "a whole number")
        if value < 0:
            raise self.error(f"{self.where}: {key!r} must not be negative, got {value}")
        return value

    def mapping(self, key: str, default: Any = _REQUIRED) -> dict[str, Any]:
        return self._get(key, default, (dict,), "an object")

    def items(self, key: str, *, required: bool = False) -> list[Any]:
        return self._get(key, _REQUIRED if required else [], (list,), "a list")

    def text_mapping(self, key: str, default: Any = _REQUIRED) -> dict[str, str]:
        value = self.mapping(key, default)
        for item in value.values():
            if not isinstance(item, str):
                raise self.error(
                    f"{self.where}: {key!r} must map names to strings, not to {_kind(item)}"
                )
        return value

    def texts(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        values = self.items(key, required=required)
        for value in values:
            if not isinstance(value, str):
                raise self.error(
                    f"{self.where}: {key!r} must be a list of strings, not hold {_kind(value)}"
                )
        return tuple(values)


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask
