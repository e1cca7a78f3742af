"""Read ``-r FILE`` requirement files: requirement lines, comments, continuations, nested ``-r``.

Options inside a file (``--index-url``, ``--hash``, ``-c``...) are refused with the line that has
them: index settings belong on the command line, where they are part of the cache key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bundler.errors import BundlerError


def read_requirement_files(paths: Sequence[Path]) -> list[str]:
    found: list[str] = []
    for path in paths:
        found += _read(Path(path), seen=())
    return found


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundlerError(f"{path}: requirements file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BundlerError(f"{path}: unreadable requirements file ({error})") from None
    lines: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw if raw.lstrip().startswith("#") else raw.split(" #", 1)[0]
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, " ".join((pending + line).split())))
        pending = ""
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def _read(path: Path, seen: tuple[Path, ...]) -> list[str]:
    resolved = path.resolve()
    if resolved in seen:
        raise BundlerError(f"{path}: includes itself through -r")
    found: list[str] = []
    for number, line in _logical_lines(path):
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ", "--requirement=")):
            nested = (
                line.split("=", 1)[1]
                if line.startswith("--requirement=")
                else line.split(None, 1)[1]
            )
            found += _read(path.parent / nested.strip(), (*seen, resolved))
            continue
        if line.startswith("-") or " --" in line:
            option = (
                line.split()[0]
                if line.startswith("-")
                else line[line.index(" --") + 1 :].split()[0]
            )
            raise BundlerError(
                f"{path}:{number}: option {option} is not supported in requirement files here; "
                "give index settings on the command line (--index-url, --find-links)"
            )
        found.append(line)
    return found
