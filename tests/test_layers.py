"""The layers of ``runtime/`` and the rooms of ``bundler/`` hold by structure: what each package may
import is checked here, every import of every module (top level, in functions, in classes).

``runtime`` is a diamond: contract <- installer, volumes, inference <- pipeline, samples <-
commands. No module list is kept by hand: the modules are found by walking each package's folder,
a package that is not in the tables below fails until someone says what it may import, and the
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
# The diamond: runtime package -> the project packages it may import. ``runtime`` itself (the
# package's ``__version__``) is open to all; nothing may import ``bundler``.
RUNTIME_LAYERS: dict[str, tuple[str, ...]] = {
    "contract": (),
    "installer": ("runtime.contract",),
    "fusion": ("runtime.contract",),
    "volumes": ("runtime.contract", "runtime.fusion"),
    "inference": ("runtime.contract", "runtime.fusion"),
    # and the demo model, which the --model dispatcher (pipeline/models.py) resolves
    "pipeline": ("runtime.contract", "runtime.volumes", "runtime.inference", "runtime.samples"),
    "samples": ("runtime.contract", "runtime.volumes", "runtime.inference"),
    # Whole scrolls sit beside the pipeline: the engine, the volumes layer, the pipeline's model
    # loading and the demo's folder (for the model files' digest).
    "scroll": (
        "runtime.contract", "runtime.volumes", "runtime.inference", "runtime.pipeline",
        "runtime.samples",
    ),
    "commands": (
        "runtime.contract", "runtime.installer", "runtime.volumes", "runtime.inference",
        "runtime.pipeline", "runtime.samples", "runtime.scroll",
    ),
}  # fmt: skip
# Third-party packages a layer must never import, at the top or inside a function.
NEVER = {"volumes": ("torch",), "fusion": ("torch",)}
# Climbs that exist today and are being removed, each with who removes it; a listed climb that is
# gone fails too, so this list only shrinks.
KNOWN_CLIMBS: set[tuple[str, str]] = set()

# The bundler's rooms, in order: each may import the rooms listed for it (and itself).
BUNDLER = PROJECT_ROOT / "bundler"
BUNDLER_ROOMS: dict[str, tuple[str, ...]] = {
    "errors": ("runtime.contract",),
    "blobs": ("runtime.contract",),
    "resolution": ("bundler.errors", "bundler.blobs", "runtime.contract"),
    "kaggle": (
        "bundler.errors", "runtime.contract", "runtime.commands.predict", "runtime.inference",
        "runtime.pipeline.models",  # the --model dispatcher (demo too), for the model check
    ),
    "wheelhouse": (
        "bundler.errors", "bundler.blobs", "bundler.resolution", "bundler.kaggle", "runtime.contract",
    ),
    # A wheel built from a compiled source folder (the official scorer's C++, a team's own).
    "compiled": ("bundler.errors", "bundler.wheelhouse", "runtime.contract"),
    "commands": (
        "bundler.commands", "bundler.errors", "bundler.resolution", "bundler.kaggle",
        "bundler.wheelhouse", "bundler.compiled", "runtime.contract", "runtime.commands.predict",
        "runtime.commands.parsing",
    ),
    "__init__": ("bundler.resolution", "bundler.kaggle", "bundler.wheelhouse"),
    "__main__": ("bundler.commands", "runtime.contract", "runtime.commands.parsing"),
}  # fmt: skip
# Imports a room may make only inside functions: the kernel's torch engine, for the model check.
BUNDLER_LAZY_ONLY = ("runtime.inference", "runtime.pipeline", "torch")


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


def _layer_of(path: Path, top: Path) -> str:
    return path.relative_to(top).parts[0].removesuffix(".py")


def _climbs(top: Path, rules: dict[str, tuple[str, ...]], package: str) -> list[str]:
    """Every import of ``package``'s own modules that its layer's rule does not allow."""
    offences = []
    for path in _modules(top):
        layer = _layer_of(path, top)
        allowed = (f"{package}.{layer}", *rules.get(layer, ()))
        for line, name in _imports(path):
            relative = str(path.relative_to(PROJECT_ROOT))
            if name.split(".")[0] not in ("runtime", "bundler") or name == "runtime":
                continue
            if not _within(name, allowed) and (relative, name) not in KNOWN_CLIMBS:
                offences.append(f"{relative} line {line}: {name}")
    return offences


def test_every_runtime_package_has_a_layer() -> None:
    layers = {_layer_of(p, RUNTIME) for p in _modules(RUNTIME)} - {"__init__", "__main__"}
    assert layers <= set(RUNTIME_LAYERS), (
        f"say what {sorted(layers - set(RUNTIME_LAYERS))} may import"
    )


def test_runtime_is_a_diamond() -> None:
    """contract <- installer, volumes, inference <- pipeline, samples <- commands."""
    offences = _climbs(RUNTIME, {**RUNTIME_LAYERS, "__init__": ("runtime.installer",),
                                 "__main__": (*RUNTIME_LAYERS["commands"], "runtime.commands")}, "runtime")  # fmt: skip
    assert not offences


def test_known_climbs_still_exist() -> None:
    """A climb that was removed must leave the list too, or it would excuse a new one."""
    present = {
        (str(path.relative_to(PROJECT_ROOT)), name)
        for path in _modules(RUNTIME)
        for _, name in _imports(path)
    }
    assert present >= KNOWN_CLIMBS, f"remove {sorted(KNOWN_CLIMBS - present)} from KNOWN_CLIMBS"


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_layers_never_import_the_third_party_packages_of_others(layer: str) -> None:
    offences = [
        f"{path.relative_to(PROJECT_ROOT)} line {line}: {name}"
        for path in _modules(RUNTIME / layer)
        for line, name in _imports(path)
        if _within(name, NEVER[layer])
    ]
    assert not offences


def test_every_bundler_module_is_in_a_room() -> None:
    rooms = {_layer_of(p, BUNDLER) for p in _modules(BUNDLER)}
    assert rooms <= set(BUNDLER_ROOMS), f"say what {sorted(rooms - set(BUNDLER_ROOMS))} may import"


def test_bundler_rooms_import_in_one_direction() -> None:
    """errors, blobs <- resolution, kaggle <- wheelhouse <- commands; never the kernel's layers
    below runtime.contract, except predict's options and, lazily, the model check's engine."""
    assert not _climbs(BUNDLER, BUNDLER_ROOMS, "bundler")


def test_the_bundler_imports_torch_and_the_engine_only_inside_functions() -> None:
    offences = [
        f"{path.relative_to(PROJECT_ROOT)} line {node.lineno}: {name}"
        for path in _modules(BUNDLER)
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if _within(name, BUNDLER_LAZY_ONLY)
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
        assert "May import" in doc, init
