"""Check a wheel with compiled modules against a target: tags, glibc symbols, libraries, import.

The glibc a module needs is the highest ``GLIBC_2.N`` symbol version it references (the ELF's
``.gnu.version_r`` section, read with pyelftools), the libraries it loads are its ``DT_NEEDED``
entries. A module loads on the target when every library is one the manylinux policy lets a
wheel assume (the C library's own and libgcc_s; libstdc++ only up to the target's version) and no
symbol version is newer than the target's.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
import zipfile
from pathlib import Path

__all__ = ["ModuleFacts", "WheelCheck", "check_wheel", "module_facts"]

# Libraries every manylinux system has (PEP 600 / auditwheel's policy), libstdc++ aside.
_SYSTEM_LIBRARIES = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libgcc_s.so.1",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
}
# The newest GLIBCXX_3.4.N the libstdc++ of a glibc's reference distribution provides.
_GLIBCXX_FOR_GLIBC = {(2, 17): 19, (2, 28): 25, (2, 31): 28, (2, 35): 30}
_VERSION = re.compile(r"^(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)$")


@dataclasses.dataclass(frozen=True)
class ModuleFacts:
    name: str  # its path inside the wheel
    needed: tuple[str, ...]  # DT_NEEDED libraries
    versions: dict[str, tuple[int, ...]]  # GLIBC / GLIBCXX / CXXABI -> highest version referenced


@dataclasses.dataclass
class WheelCheck:
    wheel: Path
    tags: list[str]
    modules: list[ModuleFacts]
    imported: bool | None  # None: no target Python here to try
    problems: list[str]

    def summary(self) -> str:
        glibc = max((m.versions.get("GLIBC", (0,)) for m in self.modules), default=(0,))
        lines = [
            f"{self.wheel.name}",
            f"  tags: {', '.join(self.tags)}",
            f"  compiled modules: {len(self.modules)}; highest glibc symbol: "
            f"{'.'.join(map(str, glibc)) if glibc != (0,) else 'none'}",
        ]
        for module in self.modules:
            lines.append(f"  {module.name}: needs {', '.join(module.needed) or 'nothing'}")
        lines.append(
            "  import in the target Python: "
            + {True: "ok", False: "FAILED", None: "not tried (no such interpreter here)"}[
                self.imported
            ]
        )
        lines += [f"  problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def module_facts(path: Path, name: str | None = None) -> ModuleFacts:
    """What a shared object needs from the system it loads on."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    needed: list[str] = []
    versions: dict[str, tuple[int, ...]] = {}
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                needed += [
                    str(getattr(tag, "needed", ""))
                    for tag in section.iter_tags()
                    if tag.entry.d_tag == "DT_NEEDED"
                ]
            elif isinstance(section, GNUVerNeedSection):
                for _, auxiliaries in section.iter_versions():
                    for auxiliary in auxiliaries:
                        match = _VERSION.match(auxiliary.name)
                        if match:
                            kind, number = match[1], tuple(int(p) for p in match[2].split("."))
                            versions[kind] = max(versions.get(kind, ()), number)
    return ModuleFacts(name or path.name, tuple(needed), versions)


def check_wheel(
    wheel: Path, glibc: tuple[int, int], python: Path | None, module: str | None = None
) -> WheelCheck:
    """Inspect ``wheel`` for a target with ``glibc``; import ``module`` with ``python`` if given."""
    from packaging.utils import parse_wheel_filename

    _, _, _, tags = parse_wheel_filename(wheel.name)
    problems: list[str] = []
    modules: list[ModuleFacts] = []
    with tempfile.TemporaryDirectory(prefix="compiled-check-") as scratch:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(".so") or ".so." in member.rsplit("/", 1)[-1]:
                    target = Path(scratch) / "modules" / Path(member).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
                    modules.append(module_facts(target, member))
        if not modules:
            problems.append("no compiled module in the wheel")
        for facts in modules:
            problems += _module_problems(facts, glibc)
        for tag in tags:
            if tag.platform.startswith(("manylinux", "linux")):
                declared = _platform_glibc(tag.platform)
                if declared is None or declared > glibc:
                    problems.append(
                        f"platform tag {tag.platform} does not promise glibc "
                        f"{glibc[0]}.{glibc[1]} or older"
                    )
        imported = None
        if python is not None and module:
            imported, message = _import_in(python, wheel, module, Path(scratch))
            if not imported:
                problems.append(f"import {module} with {python} failed: {message}")
    return WheelCheck(wheel, sorted(str(t) for t in tags), modules, imported, problems)


def _module_problems(facts: ModuleFacts, glibc: tuple[int, int]) -> list[str]:
    problems = []
    needs = facts.versions.get("GLIBC")
    if needs and needs > glibc:
        problems.append(
            f"{facts.name} needs glibc {'.'.join(map(str, needs))}, newer than the target's "
            f"{glibc[0]}.{glibc[1]}"
        )
    for library in facts.needed:
        if library in _SYSTEM_LIBRARIES:
            continue
        if library == "libstdc++.so.6":
            allowed = max((v for g, v in _GLIBCXX_FOR_GLIBC.items() if g <= glibc), default=0)
            wanted = facts.versions.get("GLIBCXX", (3, 4, 0))
            if wanted > (3, 4, allowed):
                problems.append(
                    f"{facts.name} needs GLIBCXX {'.'.join(map(str, wanted))}, newer than a "
                    f"glibc {glibc[0]}.{glibc[1]} system's libstdc++ (3.4.{allowed})"
                )
            continue
        problems.append(f"{facts.name} loads {library}, which the target may not have")
    return problems


def _platform_glibc(platform: str) -> tuple[int, int] | None:
    if platform.startswith("manylinux2014"):
        return (2, 17)
    if platform.startswith("manylinux2010"):
        return (2, 12)
    if platform.startswith("manylinux1"):
        return (2, 5)
    match = re.match(r"manylinux_(\d+)_(\d+)_", platform)
    return (int(match[1]), int(match[2])) if match else None


def _import_in(python: Path, wheel: Path, module: str, scratch: Path) -> tuple[bool, str]:
    """pip-install the wheel (its tags checked by pip for that interpreter) and import it."""
    target = scratch / "site"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
        + ["--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        return False, (install.stderr.strip().splitlines() or ["pip failed"])[-1]
    done = subprocess.run(
        [str(python), "-c", f"import sys; sys.path.insert(0, {str(target)!r}); import {module}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=scratch,
        check=False,
    )
    return done.returncode == 0, (done.stderr.strip().splitlines() or [""])[-1]
