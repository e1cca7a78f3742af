"""``bundler compiled``: wheels of compiled code for a kernel's Python and glibc, and their check.

The quick tests read real shared objects (compiled here with the system's GCC); the slow ones
cross-compile real projects with zig (the ``ziglang`` package) for CPython 3.12 and glibc 2.17
and import the wheel in a real Python 3.12, skipped where either is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bundler.__main__ import main as bundler_main
from bundler.compiled.build import _module_name, platform_tags
from bundler.compiled.check import check_wheel, module_facts
from bundler.wheelhouse.self_wheel import write_wheel

_THREADED = """
#include <pthread.h>
static void *work(void *arg) { return arg; }
int start(void) { pthread_t t; return pthread_create(&t, 0, work, 0); }
"""


def _gcc_module(folder: Path) -> Path:
    """A shared object GCC links against this machine's glibc (pthread_create: GLIBC_2.34)."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc here")
    source = folder / "threaded.c"
    source.write_text(_THREADED)
    module = folder / "threaded.cpython-312-x86_64-linux-gnu.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(source)], check=True)
    return module


def _wheel_of(module: Path, folder: Path, platforms: list[str]) -> Path:
    dist_info = "threaded-1.0.dist-info"
    wheel_text = "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" + "".join(
        f"Tag: cp312-cp312-{p}\n" for p in platforms
    )
    files = [
        (module.name, module.read_bytes()),
        (f"{dist_info}/METADATA", b"Metadata-Version: 2.1\nName: threaded\nVersion: 1.0\n"),
        (f"{dist_info}/WHEEL", wheel_text.encode()),
    ]
    wheel = folder / f"threaded-1.0-cp312-cp312-{'.'.join(platforms)}.whl"
    write_wheel(files, dist_info, wheel)
    return wheel


def test_the_glibc_a_module_needs_is_read_from_its_elf(tmp_path: Path) -> None:
    facts = module_facts(_gcc_module(tmp_path))
    assert "libc.so.6" in facts.needed
    assert facts.versions["GLIBC"] >= (2, 34)  # pthread_create moved into libc in 2.34


def test_a_gcc_build_is_refused_for_manylinux2014_and_accepted_for_a_newer_glibc(
    tmp_path: Path,
) -> None:
    module = _gcc_module(tmp_path)
    old = check_wheel(_wheel_of(module, tmp_path, platform_tags((2, 17))), (2, 17), None)
    assert any("needs glibc 2.3" in p and "target's 2.17" in p for p in old.problems)
    assert old.tags == ["cp312-cp312-manylinux2014_x86_64", "cp312-cp312-manylinux_2_17_x86_64"]
    assert old.imported is None and "not tried" in old.summary()
    newer = check_wheel(_wheel_of(module, tmp_path, ["manylinux_2_35_x86_64"]), (2, 35), None)
    assert newer.problems == []
    # a tag that promises more than the module keeps is a problem too
    promised = check_wheel(_wheel_of(module, tmp_path, ["manylinux_2_39_x86_64"]), (2, 35), None)
    assert any("does not promise glibc 2.35" in p for p in promised.problems)


def test_a_wheel_without_compiled_code_is_a_problem(tmp_path: Path) -> None:
    dist_info = "plain-1.0.dist-info"
    wheel = tmp_path / "plain-1.0-py3-none-any.whl"
    write_wheel(
        [
            ("plain/__init__.py", b""),
            (f"{dist_info}/METADATA", b"Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n"),
            (
                f"{dist_info}/WHEEL",
                b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            ),
        ],
        dist_info,
        wheel,
    )
    assert check_wheel(wheel, (2, 17), None).problems == ["no compiled module in the wheel"]
    assert _module_name(wheel) == "plain"


def test_a_folder_that_is_no_project_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    code = bundler_main(
        ["compiled", str(tmp_path / "src"), "-o", str(tmp_path / "out")]
        + [
            "--interpreter",
            sys.executable,
            "--python",
            f"{sys.version_info[0]}.{sys.version_info[1]}",
        ]
    )
    assert code != 0
    message = capsys.readouterr().err.strip()
    assert "neither a Python project" in message and "\n" not in message


# --- real cross-compiles (slow: zig builds its libc and libc++ on first use) -------------------
def _working_python312() -> str | None:
    """A Python 3.12 that runs: on PATH, or one pyenv installed (its PATH shim may not run)."""
    candidates = [
        shutil.which("python3.12"),
        *map(str, Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")),
    ]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys"], capture_output=True, check=False)
        if done.returncode == 0:
            return candidate
    return None


_PYTHON312 = _working_python312()
needs_toolchain = pytest.mark.skipif(
    _PYTHON312 is None or importlib.util.find_spec("ziglang") is None,
    reason="needs python3.12 and the ziglang package here",
)

_PYBIND_SOURCE = """
#include <pybind11/pybind11.h>
#include <vector>
#include <numeric>
int total(int n) { std::vector<int> v(n); std::iota(v.begin(), v.end(), 1);
                   return std::accumulate(v.begin(), v.end(), 0); }
PYBIND11_MODULE(tiny_matching, m) { m.def("total", &total); }
"""
_CMAKE = """
cmake_minimum_required(VERSION 3.15)
project(tiny_matching LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(pybind11 REQUIRED)
pybind11_add_module(tiny_matching tiny.cpp)
"""


@pytest.mark.slow
@pytest.mark.toolchain
@needs_toolchain
def test_a_pybind11_cmake_project_becomes_a_manylinux2014_wheel_that_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pybind11")
    if shutil.which("cmake") is None:
        pytest.skip("no cmake here")
    source = tmp_path / "tiny"
    source.mkdir()
    (source / "tiny.cpp").write_text(_PYBIND_SOURCE)
    (source / "CMakeLists.txt").write_text(_CMAKE)
    out = tmp_path / "wheels"
    code = bundler_main(
        ["compiled", str(source), "-o", str(out), "--python", "3.12", "--version", "1.2"]
        + ["--interpreter", str(_PYTHON312)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    (wheel,) = out.glob("*.whl")
    assert wheel.name == (
        "tiny_matching-1.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    )
    assert "import in the target Python: ok" in printed
    with zipfile.ZipFile(wheel) as archive:
        (module,) = [n for n in archive.namelist() if n.endswith(".so")]
        (tmp_path / module).write_bytes(archive.read(module))
    facts = module_facts(tmp_path / module)
    assert facts.versions["GLIBC"] <= (2, 17)
    assert "libstdc++.so.6" not in facts.needed  # zig links libc++ statically
    # and it computes: installed into a folder, imported by the real Python 3.12
    site = tmp_path / "site"
    subprocess.run(
        [_PYTHON312, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "-t", str(site)]
        + [str(wheel)],
        check=True,
    )
    done = subprocess.run(
        [_PYTHON312, "-c", "import tiny_matching; print(tiny_matching.total(10))"],
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "55"


_SETUP = """
from setuptools import Extension, setup
setup(name="tiny-c", version="0.3", ext_modules=[Extension("tiny_c", ["tiny_c.c"])])
"""
_C_SOURCE = """
#include <Python.h>
static PyObject *twice(PyObject *self, PyObject *arg) {
    return PyLong_FromLong(2 * PyLong_AsLong(arg)); }
static PyMethodDef methods[] = {{"twice", twice, METH_O, ""}, {0}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tiny_c", 0, -1, methods};
PyMODINIT_FUNC PyInit_tiny_c(void) { return PyModule_Create(&module); }
"""


@pytest.mark.slow
@pytest.mark.toolchain
@needs_toolchain
def test_a_setuptools_extension_is_retagged_manylinux_after_its_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tiny-c"
    source.mkdir()
    (source / "setup.py").write_text(_SETUP)
    (source / "tiny_c.c").write_text(_C_SOURCE)
    out = tmp_path / "wheels"
    arguments = ["compiled", str(source), "-o", str(out), "--glibc", "2.17"]
    assert bundler_main([*arguments, "--interpreter", str(_PYTHON312)]) == 0
    (wheel,) = out.glob("*.whl")
    assert wheel.name.endswith("-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert "import in the target Python: ok" in capsys.readouterr().out
    with zipfile.ZipFile(wheel) as archive:
        wheel_file = next(n for n in archive.namelist() if n.endswith("/WHEEL"))
        lines = archive.read(wheel_file).decode().splitlines()
        tags = [line for line in lines if line.startswith("Tag:")]
    assert tags == [
        "Tag: cp312-cp312-manylinux_2_17_x86_64",
        "Tag: cp312-cp312-manylinux2014_x86_64",
    ]
