"""Every command the README and docs/*.md show, checked against the code that would run it.

Fenced ``bash``/``sh`` blocks (and the ``!`` lines of ``python`` blocks, a notebook's shell
lines) are split into commands. For each one:

- ``python -m MODULE``: the module exists; for ``runtime``, ``bundler`` and a wheelhouse's
  ``bootstrap.py``, the whole command line is parsed by the command's own argparse parser
  (subcommands included), so an option that does not exist, a bad choice or a missing required
  argument fails here; every ``--option`` must also be written out in full (no abbreviations);
- ``nox -s SESSION``: the session exists in noxfile.py;
- ``pip install ".[EXTRA]"``: the extra exists in pyproject.toml;
- a script of this repository (``python bench/x.py``): the file exists.

Inline code spans that start with ``python -m runtime CMD`` or ``python -m bundler CMD`` have
their ``--options`` checked against that command's parser, and every relative link points at a
file (and heading) that exists. A block preceded by ``<!-- commands: illustrative -->`` is not
checked (for commands that are deliberately not runnable as written).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
ILLUSTRATIVE = "<!-- commands: illustrative -->"
# Tools that are not ours: their commands are shown, not checked (kaggle is the official CLI).
EXTERNAL = {"kaggle", "sudo", "export", ".", "source", "cd", "git", "unshare", "rm", "apt"}
EXTERNAL_MODULES = {"pip", "venv", "pytest", "nox"}
# Our commands: module -> the function whose argparse parsing we intercept.
OUR_MAINS = {"runtime": "runtime.__main__", "bundler": "bundler.__main__"}


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {shlex.join(self.tokens)}"


def _fenced_blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """(language, first line number, body) of every fenced block not marked illustrative."""
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, flags=re.M | re.S):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        if before.strip() == ILLUSTRATIVE:
            continue
        line = text.count("\n", 0, match.start()) + 2
        body = "\n".join(row[len(match.group(1)) :] for row in match.group(3).splitlines())
        yield match.group(2), line, body


def _commands(path: Path) -> Iterator[Command]:
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT).as_posix()
    for language, first_line, body in _fenced_blocks(text):
        if language not in SHELL_LANGUAGES and language != "python":
            continue
        logical: list[tuple[int, str]] = []
        pending, start = "", first_line
        for offset, row in enumerate(body.splitlines()):
            if language == "python":
                if not pending and not row.lstrip().startswith("!"):
                    continue
                row = row.lstrip().removeprefix("!")
            if not pending:
                start = first_line + offset
            if row.rstrip().endswith("\\"):
                pending += row.rstrip()[:-1] + " "
                continue
            logical.append((start, pending + row))
            pending = ""
        for line, source in logical:
            tokens = shlex.split(source, comments=True)
            for part in _split_operators(tokens):
                if part:
                    yield Command(name, line, tuple(part))


def _split_operators(tokens: list[str]) -> Iterator[list[str]]:
    part: list[str] = []
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            yield part
            part = []
        else:
            part.append(token)
    yield part


ALL_COMMANDS = [command for document in DOCUMENTS for command in _commands(document)]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser, method: str, args: list[str]) -> None:
        self.parser, self.method, self.args = parser, method, args


class _ParseError(Exception):
    pass


@contextlib.contextmanager
def _intercepted_parsing() -> Iterator[None]:
    """The first argparse parse a main() makes raises _Captured instead of parsing."""
    originals = {
        name: getattr(argparse.ArgumentParser, name)
        for name in ("parse_args", "parse_intermixed_args", "parse_known_args")
    }

    def interceptor(method: str) -> Callable[..., object]:
        def intercept(self: argparse.ArgumentParser, args: object = None, *_: object) -> object:
            raise _Captured(self, method, list(args or []))  # type: ignore[call-overload]

        return intercept

    for name in originals:
        setattr(argparse.ArgumentParser, name, interceptor(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def _capture(main: Callable[[list[str]], object], argv: list[str]) -> _Captured:
    with _intercepted_parsing():
        try:
            main(argv)
        except _Captured as captured:
            return captured
    raise AssertionError(f"{argv}: main() returned without parsing its arguments")


def _parse_strictly(captured: _Captured) -> None:
    """Parse as the command would; raise _ParseError with argparse's message on any error."""

    def error(self: argparse.ArgumentParser, message: str) -> None:
        raise _ParseError(f"{self.prog}: {message}")

    parsers = _all_parsers(captured.parser)
    with contextlib.ExitStack() as stack:
        for parser in parsers:
            stack.enter_context(_patched(parser, "error", error.__get__(parser)))
        getattr(captured.parser, captured.method)(captured.args)


@contextlib.contextmanager
def _patched(target: object, name: str, value: object) -> Iterator[None]:
    setattr(target, name, value)
    try:
        yield
    finally:
        delattr(target, name)


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _all_parsers(child)
    return found


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


def _check_our_command(main: Callable[[list[str]], object], argv: list[str]) -> None:
    captured = _capture(main, argv)
    try:
        _parse_strictly(captured)
    except _ParseError as error:
        raise AssertionError(str(error)) from None
    except SystemExit as stop:  # --help or --version: shown, fine
        assert stop.code in (0, None)
    # No abbreviations: every --option as written must be one the parser defines.
    parser = captured.parser
    if argv and not argv[0].startswith("-"):
        parser = _subparser(parser, argv[0]) or parser
    known = _option_strings(parser) | _option_strings(captured.parser)
    for token in argv:
        option = token.split("=", 1)[0]
        if option.startswith("--") and option != "--" and option not in known:
            raise AssertionError(f"{option} is not an option of {parser.prog}")


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _main_of(module: str) -> Callable[[list[str]], object]:
    return importlib.import_module(module).main  # type: ignore[no-any-return]


def _bootstrap_main() -> Callable[[list[str]], object]:
    return _main_of("runtime.installer.bootstrap")


def _nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(decorator) for decorator in node.decorator_list)
    }


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["optional-dependencies"])


def check_command(tokens: list[str]) -> None:
    """Raise AssertionError when ``tokens`` names something this project does not have."""
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]  # VARIABLE=value prefixes
    if not tokens or tokens[0] in EXTERNAL:
        return
    program, rest = tokens[0], tokens[1:]
    if program == "nox":
        program, rest = "python", ["-m", "nox", *rest]
    if program not in ("python", "python3"):
        raise AssertionError(f"unknown program {program!r} (add it to EXTERNAL if it is a tool)")
    if rest[:1] == ["-c"]:
        return
    if rest[:1] == ["-m"]:
        module, argv = rest[1], rest[2:]
        if module in OUR_MAINS:
            _check_our_command(_main_of(OUR_MAINS[module]), argv)
        elif module == "nox":
            _check_nox(argv)
        elif module == "pip":
            _check_pip(argv)
        elif module not in EXTERNAL_MODULES:
            assert _module_exists(module), f"no module {module}"
        return
    script = rest[0]
    if script.endswith("/bootstrap.py"):
        _check_our_command(_bootstrap_main(), rest[1:])
    else:
        assert (ROOT / script).is_file(), f"{script} is not a file of this repository"


def _check_nox(argv: list[str]) -> None:
    sessions = _nox_sessions()
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-s", "--session", "--sessions"):
            assert value in sessions, f"nox has no session {value!r} (it has {sorted(sessions)})"


def _check_pip(argv: list[str]) -> None:
    extras = _extras()
    for token in argv:
        match = re.fullmatch(r"(?:\.|kaggle-offline)\[([\w,-]+)\]", token)
        if match:
            for extra in match.group(1).split(","):
                assert extra in extras, f"pyproject.toml has no extra {extra!r}"


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_documented_command(command: Command) -> None:
    """Each documented command names modules, options and sessions that exist."""
    check_command(list(command.tokens))


def test_documents_show_commands() -> None:
    """The parser of this test finds the commands (a broken parser would pass everything)."""
    readme = [c for c in ALL_COMMANDS if c.document == "README.md"]
    programs = {" ".join(c.tokens[:3]) for c in readme}
    assert "python -m bundler" in programs
    assert "python -m nox" in programs
    assert len(ALL_COMMANDS) > 30


@pytest.mark.parametrize(
    "tokens, wrong",
    [
        (["python", "-m", "bundler", "build", "x", "--dataset", "a/b"], "--dataset"),
        (["python", "-m", "runtime", "predict", "s", "--thresold", "0.3"], "thresold"),
        (["python", "-m", "runtime", "predict", "s", "--tta", "sideways"], "tta"),
        (["python", "-m", "runtime.demo.train"], "runtime.demo.train"),
        (["python", "-m", "nox", "-s", "kagle"], "kagle"),
        (["python", "-m", "pip", "install", ".[bundle]"], "bundle"),
        (["python", "bench/bench_nothing.py"], "bench_nothing"),
        (["python", "/kaggle/input/x/bootstrap.py", "--dryrun"], "dryrun"),
    ],
)
def test_checker_catches(tokens: list[str], wrong: str) -> None:
    """The checker fails on what a stale document would say."""
    with pytest.raises(AssertionError, match=re.escape(wrong)):
        check_command(tokens)


# --- inline spans and links ------------------------------------------------------------------

_INLINE = re.compile(r"`python -m (runtime|bundler) ([a-z]+)([^`]*)`")


def _inline_commands() -> Iterator[tuple[str, str, str, list[str]]]:
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in _INLINE.finditer(text):
            options = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", match.group(3))
            yield document.name, match.group(1), match.group(2), options


def test_inline_command_options() -> None:
    """`python -m runtime CMD --x` in prose names options CMD has."""
    wrong = []
    for document, module, command, options in _inline_commands():
        captured = _capture(_main_of(OUR_MAINS[module]), [command, "--help"])
        parser = _subparser(captured.parser, command)
        if parser is None and captured.parser.prog.split()[-1] == command:
            parser = captured.parser  # the command's own parser was the one parsing
        if parser is None:
            wrong.append(f"{document}: python -m {module} has no command {command}")
            continue
        known = _option_strings(parser) | _option_strings(captured.parser)
        wrong += [f"{document}: {module} {command} {o}" for o in options if o not in known]
    assert not wrong


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_links_resolve() -> None:
    """Every relative link in README.md and docs/ names a file, and a heading there if anchored."""
    broken = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{document.name}: {target} (no such heading)")
    assert not broken


def test_demo_config_names_its_training_module() -> None:
    """The demo model's description names the module that made it, and that module exists."""
    config = (ROOT / "runtime" / "samples" / "demo" / "config.json").read_text(encoding="utf-8")
    modules = re.findall(r"python -m ([\w.]+)", config)
    assert modules
    for module in modules:
        assert _module_exists(module), module


def test_quick_start_is_two_commands_after_setup() -> None:
    """The quick start block: one setup line (a venv, for PEP 668 systems), then two commands."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [body for language, _, body in _fenced_blocks(section) if language == "bash"]
    assert len(blocks) == 1
    lines = [line for line in blocks[0].splitlines() if line.strip()]
    assert len(lines) == 3
    setup = lines[0]
    assert setup.startswith("python3 -m venv ") and "KAGGLE_OFFLINE_TORCH_INDEX_URL=" in setup
    assert "nox -s kaggle" in lines[1] and "nox -s tests" in lines[2]
    # The torch variable is explained before the block a user copies, and PEP 668 with it.
    before = section.split("```", 1)[0]
    assert "CPU" in before and "externally-managed-environment" in before


def test_readme_stays_short() -> None:
    """The README is what a user reads first; reference text belongs in docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 220, f"README.md has {lines} lines: move reference text to docs/"
