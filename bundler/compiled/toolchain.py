"""The cross toolchain: zig's C and C++ compilers (from the ``ziglang`` package) for a glibc.

Build systems want one executable per compiler, so two small wrapper scripts call
``python -m ziglang cc|c++ -target x86_64-linux-gnu.<glibc>``. zig links libc++ statically into
C++ modules, so the result needs neither the build machine's libstdc++ nor a new glibc. Its first
use builds and caches that libc++ (about two minutes on two cores).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import sys
from pathlib import Path

from bundler.errors import BundlerError

__all__ = ["Toolchain", "zig_toolchain"]


@dataclasses.dataclass(frozen=True)
class Toolchain:
    cc: Path
    cxx: Path
    target: str  # zig's target triple with its glibc, e.g. x86_64-linux-gnu.2.17
    glibc: tuple[int, int]

    def environment(self) -> dict[str, str]:
        """Variables that make setuptools, CMake and scikit-build use the toolchain."""
        return {
            "CC": str(self.cc),
            "CXX": str(self.cxx),
            "LDSHARED": f"{self.cc} -shared",
            "LDCXXSHARED": f"{self.cxx} -shared",
        }


def zig_toolchain(folder: Path, glibc: tuple[int, int], arch: str = "x86_64") -> Toolchain:
    """Write the ``cc`` and ``c++`` wrappers into ``folder`` for ``arch``-linux-gnu.<glibc>."""
    if importlib.util.find_spec("ziglang") is None:
        raise BundlerError(
            "bundler compiled needs the ziglang package (pip install ziglang, or the "
            "project's [compiled] extra) as its cross compiler"
        )
    target = f"{arch}-linux-gnu.{glibc[0]}.{glibc[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    wrappers = {}
    for name, driver in (("cc", "cc"), ("c++", "c++")):
        path = folder / f"zig-{name}"
        command = shlex.join([sys.executable, "-m", "ziglang", driver, "-target", target])
        path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        path.chmod(0o755)
        wrappers[name] = path
    return Toolchain(wrappers["cc"], wrappers["c++"], target, glibc)
