"""The layers of ``runtime/`` hold by structure: what each package may import is checked here.

No module list is kept by hand: the modules are found by walking each layer's folder, and the
commands that must run before anything is installed say so in ``runtime.commands.COMMANDS``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.commands import COMMANDS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIME = PROJECT_ROOT / "runtime"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# layer folder -> the project packages its modules may import (besides the standard library)
STANDARD_LIBRARY_LAYERS = {
    "contract": ("runtime.contract",),
    "installer": ("runtime.contract", "runtime.installer"),
}
# layer folder -> what it must never import, at the top or inside a function
FORBIDDEN = {
    "volumes": ("torch", "runtime.inference", "runtime.pipeline", "runtime.commands"),
    "inference": (
        "runtime.volumes",
        "runtime.pipeline",
        "runtime.commands",
        "runtime.installer",
        "runtime.samples",
    ),
    "fusion": (
        "torch",
        "runtime.volumes",
        "runtime.inference",
        "runtime.pipeline",
        "runtime.commands",
    ),
    "contract": ("runtime.installer", "runtime.volumes", "runtime.inference", "bundler"),
    "installer": ("runtime.volumes", "runtime.inference", "runtime.pipeline", "bundler"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every imported module of a file, with its line: top level, in functions, in classes."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports stay inside the package
                found.append((node.lineno, _module_name(path) + "." + (node.module or "")))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def _standard_library_files() -> list[Path]:
    files = [p for layer in STANDARD_LIBRARY_LAYERS for p in _modules(RUNTIME / layer)]
    files += [RUNTIME / "__init__.py", RUNTIME / "__main__.py", RUNTIME / "commands/__init__.py"]
    files += [
        RUNTIME.parent / (command.module.replace(".", "/") + ".py")
        for command in COMMANDS.values()
        if command.standard_library_only
    ]
    return files


@pytest.mark.parametrize(
    "path", _standard_library_files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT))
)
def test_standard_library_layers_import_nothing_else_even_inside_functions(path: Path) -> None:
    layer = path.relative_to(RUNTIME).parts[0]
    allowed = STANDARD_LIBRARY_LAYERS.get(layer, ("runtime.contract", "runtime.installer"))
    allowed += ("runtime",) if layer in ("__init__.py", "__main__.py", "commands") else ()
    foreign = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        if name.split(".")[0] not in STDLIB and not _within(name, (*allowed, "runtime.commands"))
    ]
    assert not foreign, f"{path.relative_to(PROJECT_ROOT)} imports {foreign}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_never_import_what_is_above_them(layer: str) -> None:
    offences = [
        f"{path.relative_to(PROJECT_ROOT)} line {line}: {name}"
        for path in _modules(RUNTIME / layer)
        for line, name in _imports(path)
        if _within(name, FORBIDDEN[layer])
    ]
    assert not offences


def test_standard_library_modules_import_in_an_interpreter_that_has_nothing_else() -> None:
    """Import every module of the standard-library layers and every command module where any
    import outside the standard library and our own package fails, as in a bare kernel."""
    names = [_module_name(p) for p in _standard_library_files()]
    names += [command.module for command in COMMANDS.values()]  # only argparse at import time
    code = (
        "import importlib, importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top not in sys.stdlib_module_names and top != 'runtime':\n"
        "            raise ImportError(f'{name} is not in the standard library')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"for name in {sorted(set(names))!r}:\n"
        "    importlib.import_module(name)\n"
        "foreign = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))\n"
        "print(' '.join(m for m in foreign if m != '__main__'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["runtime"]


def test_every_runtime_package_says_what_it_may_import() -> None:
    for init in sorted(RUNTIME.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if init.parent.name != "commands":
            assert "May import" in doc, init
