"""Build a source folder's compiled modules into a wheel for a target Python and glibc.

Two kinds of source folder:

* a Python project (``pyproject.toml`` or ``setup.py``): ``pip wheel`` runs with the target's
  interpreter and the zig toolchain in ``CC``/``CXX``/``LDSHARED``; its ``linux`` platform tag
  is then replaced by the ``manylinux`` one the check has just verified;
* a bare CMake project (``CMakeLists.txt``, e.g. Betti-Matching-3D's ``pybind11_add_module``):
  configured for the target's interpreter with the zig compilers, built, and every module named
  with the target's extension suffix packed into a wheel (name and version from the command line).

The target's Python must be installed here (its headers and extension suffix come from it, and the
result is imported with it); the platform is x86_64 Linux.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bundler.compiled.check import WheelCheck, check_wheel
from bundler.compiled.toolchain import Toolchain, zig_toolchain
from bundler.errors import BundlerError

__all__ = ["Interpreter", "build_compiled_wheel", "find_interpreter", "platform_tags"]

_INTERPRETER_FACTS = (
    "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
    "'ext_suffix': sysconfig.get_config_var('EXT_SUFFIX'), 'implementation': "
    "sys.implementation.name}))"
)


@dataclasses.dataclass(frozen=True)
class Interpreter:
    path: Path
    version: str  # "3.12"
    ext_suffix: str  # ".cpython-312-x86_64-linux-gnu.so"

    @property
    def tag(self) -> str:
        """The wheel's python-abi tag pair, e.g. cp312-cp312."""
        short = "cp" + self.version.replace(".", "")
        return f"{short}-{short}"


def find_interpreter(version: str, explicit: Path | None = None) -> Interpreter:
    """The target's Python: ``explicit``, else ``python<version>`` on the PATH."""
    path = explicit or (Path(found) if (found := shutil.which(f"python{version}")) else None)
    if path is None:
        raise BundlerError(
            f"no python{version} here: install the target's Python (its headers build the "
            "module and it imports the result) or pass --interpreter PATH"
        )
    done = subprocess.run(
        [str(path), "-c", _INTERPRETER_FACTS], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise BundlerError(
            f"{path}: cannot run it ({first}); pass --interpreter with the target's Python"
        )
    facts = json.loads(done.stdout)
    if facts["implementation"] != "cpython" or facts["version"] != version:
        raise BundlerError(
            f"{path} is {facts['implementation']} {facts['version']}, not CPython {version}"
        )
    return Interpreter(path, facts["version"], facts["ext_suffix"])


def platform_tags(glibc: tuple[int, int], arch: str = "x86_64") -> list[str]:
    """The platform tags a wheel built for ``glibc`` carries (with the legacy alias for 2.17)."""
    tags = [f"manylinux_{glibc[0]}_{glibc[1]}_{arch}"]
    if glibc == (2, 17):
        tags.append(f"manylinux2014_{arch}")
    return tags


def build_compiled_wheel(
    source: Path,
    output: Path,
    *,
    interpreter: Interpreter,
    glibc: tuple[int, int],
    name: str | None = None,
    version: str | None = None,
    cmake_args: Sequence[str] = (),
    cmake_targets: Sequence[str] = (),
    import_name: str | None = None,
    jobs: int = 2,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Path, WheelCheck]:
    """Build, tag and check the wheel; returns its path in ``output`` and the check."""
    source = source.resolve()
    if not source.is_dir():
        raise BundlerError(f"{source}: not a folder")
    python_project = (source / "pyproject.toml").is_file() or (source / "setup.py").is_file()
    if not python_project and not (source / "CMakeLists.txt").is_file():
        raise BundlerError(
            f"{source}: neither a Python project (pyproject.toml, setup.py) nor a CMake "
            "project (CMakeLists.txt)"
        )
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bundler-compiled-") as scratch_name:
        scratch = Path(scratch_name)
        toolchain = zig_toolchain(scratch / "toolchain", glibc)
        log(f"compiling with zig for {toolchain.target} and CPython {interpreter.version}")
        if python_project:
            built = _pip_wheel(source, scratch, interpreter, toolchain, log)
        else:
            modules = _cmake_build(
                source, scratch, interpreter, toolchain, cmake_args, cmake_targets, jobs, log
            )
            built = _pack(modules, scratch, interpreter, glibc, name, version, source)
        wheel = _retagged(built, output, interpreter, glibc)
    module = import_name or _module_name(wheel)
    check = check_wheel(wheel, glibc, interpreter.path, module)
    return wheel, check


def _run(command: Sequence[str], cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(
        list(command),
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BundlerError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _pip_wheel(
    source: Path,
    scratch: Path,
    interpreter: Interpreter,
    toolchain: Toolchain,
    log: Callable[[str], None],
) -> Path:
    dist = scratch / "dist"
    log(f"pip wheel {source} with {interpreter.path}")
    _run(
        [str(interpreter.path), "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)],
        scratch,
        toolchain.environment(),
        f"pip wheel {source}",
    )
    wheels = sorted(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise BundlerError(f"pip wheel {source} wrote {len(wheels)} wheels, expected one")
    return wheels[0]


def _cmake_build(
    source: Path,
    scratch: Path,
    interpreter: Interpreter,
    toolchain: Toolchain,
    cmake_args: Sequence[str],
    cmake_targets: Sequence[str],
    jobs: int,
    log: Callable[[str], None],
) -> list[Path]:
    build = scratch / "build"
    build.mkdir()
    configure = [
        "cmake",
        str(source),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_C_COMPILER={toolchain.cc}",
        f"-DCMAKE_CXX_COMPILER={toolchain.cxx}",
        f"-DPython_EXECUTABLE={interpreter.path}",
        f"-DPYTHON_EXECUTABLE={interpreter.path}",
    ]
    try:
        import pybind11

        configure.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
    except ImportError:
        pass  # a project that does not use pybind11, or brings its own
    if shutil.which("cmake") is None:
        raise BundlerError("bundler compiled needs cmake for a CMake project (pip install cmake)")
    log(f"cmake configure {source}")
    _run([*configure, *cmake_args], build, {}, f"cmake configure of {source}")
    log(f"cmake build ({jobs} jobs; zig's first use also builds its libc++)")
    targets = [part for target in cmake_targets for part in ("--target", target)]
    _run(
        ["cmake", "--build", ".", "-j", str(jobs), *targets], build, {}, f"cmake build of {source}"
    )
    modules = sorted(p for p in build.rglob(f"*{interpreter.ext_suffix}") if p.is_file())
    if not modules:
        raise BundlerError(
            f"cmake built no module named *{interpreter.ext_suffix} from {source}: is it a "
            f"Python extension (pybind11_add_module, Python_add_library)?"
        )
    return modules


def _pack(
    modules: list[Path],
    scratch: Path,
    interpreter: Interpreter,
    glibc: tuple[int, int],
    name: str | None,
    version: str | None,
    source: Path,
) -> Path:
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    from bundler.wheelhouse.self_wheel import write_wheel

    name = name or modules[0].name.split(".", 1)[0]
    version = version or _source_version(source)
    try:
        Version(version)
    except InvalidVersion:
        raise BundlerError(f"--version {version!r} is not a valid version") from None
    distribution = re.sub(r"[-_.]+", "_", str(canonicalize_name(name)))
    dist_info = f"{distribution}-{version}.dist-info"
    tag = f"{interpreter.tag}-{'.'.join(platform_tags(glibc))}"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    wheel_file = (
        "Wheel-Version: 1.0\nGenerator: kaggle-offline bundler compiled\n"
        "Root-Is-Purelib: false\n"
        + "".join(f"Tag: {interpreter.tag}-{platform}\n" for platform in platform_tags(glibc))
    )
    files = [(module.name, module.read_bytes()) for module in modules]
    files += [
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel_file.encode()),
    ]
    wheel = scratch / f"{distribution}-{version}-{tag}.whl"
    write_wheel(files, dist_info, wheel)
    return wheel


def _retagged(built: Path, output: Path, interpreter: Interpreter, glibc: tuple[int, int]) -> Path:
    """The wheel in ``output`` with the manylinux platform tags (pip's wheels say linux_x86_64)."""
    from packaging.utils import parse_wheel_filename

    name, version, build, tags = parse_wheel_filename(built.name)
    platforms = platform_tags(glibc)
    if all(t.platform in platforms for t in tags):
        destination = output / built.name
        shutil.copyfile(built, destination)
        return destination
    from bundler.wheelhouse.self_wheel import write_wheel

    with zipfile.ZipFile(built) as archive:
        members = [(n, archive.read(n)) for n in archive.namelist()]
    dist_info = next(n.split("/", 1)[0] for n, _ in members if n.endswith(".dist-info/WHEEL"))
    interpreters = sorted({f"{t.interpreter}-{t.abi}" for t in tags})
    files = []
    for member, data in members:
        if member == f"{dist_info}/RECORD":
            continue
        if member == f"{dist_info}/WHEEL":
            kept = [line for line in data.decode().splitlines() if not line.startswith("Tag:")]
            kept += [f"Tag: {i}-{p}" for i in interpreters for p in platforms]
            data = ("\n".join(kept) + "\n").encode()
        files.append((member, data))
    tag = f"{'.'.join(interpreters)}-{'.'.join(platforms)}"
    stem = built.name.split("-", 2)
    destination = output / f"{stem[0]}-{stem[1]}-{tag}.whl"
    write_wheel(files, dist_info, destination)
    return destination


def _source_version(source: Path) -> str:
    """0+g<commit> for a git checkout (the commit it was built from), else 0."""
    done = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = done.stdout.strip()
    return f"0+g{commit}" if done.returncode == 0 and commit else "0"


def _module_name(wheel: Path) -> str | None:
    """The top-level name to import: the first compiled module or package in the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if ".dist-info/" not in n]
    for member in names:
        if member.endswith(".so") and "/" not in member:
            return member.split(".", 1)[0]
    packages = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    return packages[0] if packages else None
