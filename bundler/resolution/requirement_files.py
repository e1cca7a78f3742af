"""Read ``-r FILE`` / ``-c FILE`` requirement files with the line kinds pip accepts in them.

The grammar is pip's (``pip._internal.req.req_file``): ``#`` comments at a line start or after
whitespace, ``\\`` continuations, ``${VAR}`` expansion, nested ``-r``/``-c`` relative to the file,
and the options pip allows in a file: ``-i/--index-url``, ``--extra-index-url``, ``--no-index``,
``-f/--find-links``, ``--trusted-host``, ``--pre``, ``--only-binary``, ``--no-binary``,
``--prefer-binary``, ``--require-hashes``, ``--use-feature`` and, after a requirement,
``--hash=ALGO:DIGEST``. So lock files from pip-compile or ``uv pip compile --generate-hashes``
work as they are. Two kinds are refused with the reason: ``-e`` (an editable checkout cannot be
vendored) and per-requirement ``--config-settings``/``--global-option`` (the bundler builds
sdists itself, the same way for every requirement).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundler.errors import BundlerError

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ENV_VAR = re.compile(r"(?P<var>\$\{(?P<name>[A-Z0-9_]+)\})")
_VALUE_OPTIONS = {
    "-i": "index_url",
    "--index-url": "index_url",
    "--extra-index-url": "extra_index_urls",
    "-f": "find_links",
    "--find-links": "find_links",
    "--trusted-host": "trusted_hosts",
    "--only-binary": "only_binary",
    "--no-binary": "no_binary",
    "--use-feature": "use_feature",
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-e": "editable",
    "--editable": "editable",
}
_FLAG_OPTIONS = {
    "--no-index": "no_index",
    "--pre": "pre",
    "--prefer-binary": "prefer_binary",
    "--require-hashes": "require_hashes",
}
_REFUSED_REQUIREMENT_OPTIONS = {
    "--config-settings": "the bundler builds every sdist the same way, with `build`'s defaults",
    "-C": "the bundler builds every sdist the same way, with `build`'s defaults",
    "--global-option": "pip has deprecated it; the bundler builds sdists with `build`'s defaults",
}
_HASH_ALGORITHMS = ("sha256", "sha384", "sha512")


@dataclass(frozen=True)
class RequirementLine:
    """One requirement as given: its text, the hashes it is pinned to, and where it was read."""

    text: str
    hashes: tuple[str, ...] = ()  # "sha256:<hex>"
    origin: str = "command line"

    def pip_line(self) -> str:
        return " ".join([self.text, *(f"--hash={value}" for value in self.hashes)])


@dataclass
class RequirementInput:
    """Everything read from the files: requirements, constraints, and the options they set."""

    requirements: list[RequirementLine] = field(default_factory=list)
    constraints: list[RequirementLine] = field(default_factory=list)
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_index: bool = False
    pre: bool = False
    only_binary: list[str] = field(default_factory=list)
    no_binary: list[str] = field(default_factory=list)


def read_requirement_files(
    requirement_files: Sequence[Path], constraint_files: Sequence[Path] = ()
) -> RequirementInput:
    found = RequirementInput()
    for path in requirement_files:
        _read(Path(path), found, constraint=False, seen=())
    for path in constraint_files:
        _read(Path(path), found, constraint=True, seen=())
    return found


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) per logical line: comments gone, continuations joined."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundlerError(f"{path}: requirements file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BundlerError(f"{path}: unreadable requirements file ({error})") from None
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = _COMMENT.sub("", raw) if not pending or not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(" ".join(pending).split())
        pending = []
        if joined:
            lines.append((start, _expand(joined)))
    if pending and " ".join(pending).strip():
        lines.append((start, _expand(" ".join(" ".join(pending).split()))))
    return lines


def _expand(line: str) -> str:
    """``${NAME}`` from the environment, as pip does (unset names are left as they are)."""
    for match in _ENV_VAR.finditer(line):
        value = os.environ.get(match.group("name"))
        if value is not None:
            line = line.replace(match.group("var"), value)
    return line


def _split(line: str) -> tuple[str, list[str]]:
    """The requirement part and the option tokens, split where pip splits them."""
    tokens = line.split(" ")
    for position, token in enumerate(tokens):
        if token.startswith("-"):
            return " ".join(tokens[:position]), shlex.split(" ".join(tokens[position:]))
    return line, []


def _read(path: Path, found: RequirementInput, *, constraint: bool, seen: tuple[Path, ...]) -> None:
    resolved = path.resolve()
    if resolved in seen:
        raise BundlerError(f"{path}: includes itself through -r/-c")
    for number, line in _logical_lines(path):
        where = f"{path}:{number}"
        requirement, tokens = _split(line)
        hashes: list[str] = []
        position = 0
        while position < len(tokens):
            token = tokens[position]
            option, has_value, value = token.partition("=")
            if option not in _VALUE_OPTIONS and len(token) > 2 and token[:2] in _VALUE_OPTIONS:
                # A short option with its value in the same token: -rbase.txt
                option, has_value, value = token[:2], "=", token[2:]
            if option == "--hash":
                value = value if has_value else _next(tokens, position, where, option)
                position += 0 if has_value else 1
                hashes.append(_check_hash(value, where))
            elif option in _REFUSED_REQUIREMENT_OPTIONS:
                raise BundlerError(
                    f"{where}: {option} is not supported here: {_REFUSED_REQUIREMENT_OPTIONS[option]}"
                )
            elif option in _FLAG_OPTIONS:
                _set_flag(found, _FLAG_OPTIONS[option])
            elif option in _VALUE_OPTIONS:
                if not has_value:
                    value = _next(tokens, position, where, option)
                    position += 1
                _set_value(found, _VALUE_OPTIONS[option], value, path, where, constraint, seen)
            else:
                raise BundlerError(f"{where}: unknown option {token} in a requirements file")
            position += 1
        if not requirement:
            if hashes:
                raise BundlerError(f"{where}: --hash must follow a requirement on its line")
            continue
        entry = RequirementLine(requirement, tuple(hashes), where)
        (found.constraints if constraint else found.requirements).append(entry)


def _next(tokens: list[str], position: int, where: str, option: str) -> str:
    if position + 1 >= len(tokens):
        raise BundlerError(f"{where}: option {option} needs a value")
    return tokens[position + 1]


def _check_hash(value: str, where: str) -> str:
    algorithm, _, digest = value.partition(":")
    if algorithm not in _HASH_ALGORITHMS or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise BundlerError(f"{where}: --hash={value} is not ALGORITHM:HEXDIGEST (sha256:...)")
    return f"{algorithm}:{digest.lower()}"


def _set_flag(found: RequirementInput, name: str) -> None:
    if name == "no_index":
        found.no_index = True
    elif name == "pre":
        found.pre = True
    # --prefer-binary is always on; --require-hashes is what any --hash line turns on anyway.


def _set_value(
    found: RequirementInput,
    name: str,
    value: str,
    path: Path,
    where: str,
    constraint: bool,
    seen: tuple[Path, ...],
) -> None:
    if name in ("requirement", "constraint"):
        if "://" in value:
            raise BundlerError(f"{where}: {value}: only local requirement files are supported")
        nested = path.parent / value
        _read(
            nested,
            found,
            constraint=constraint or name == "constraint",
            seen=(*seen, path.resolve()),
        )
    elif name == "editable":
        raise BundlerError(
            f"{where}: -e {value}: an editable requirement cannot go into a wheelhouse; build "
            "its wheel and give the project as a normal requirement"
        )
    elif name == "index_url":
        found.index_url = value
    elif name == "extra_index_urls":
        found.extra_index_urls.append(value)
    elif name == "find_links":
        # pip reads a relative find-links path against the file when it exists there.
        relative = path.parent / value
        found.find_links.append(
            str(relative) if "://" not in value and relative.exists() else value
        )
    elif name == "trusted_hosts":
        found.trusted_hosts.append(value)
    elif name == "only_binary":
        found.only_binary.append(value)
    elif name == "no_binary":
        found.no_binary.append(value)
