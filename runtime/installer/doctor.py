"""``runtime doctor``: what an offline kernel has — wheelhouses, packages, wheel tags and the GPU.

Read-only: it plans but never installs. Problems (a corrupt manifest, a conflict) are shown as
findings instead of stopping the report, because the report is what one reads to fix them.
The GPU findings come from :func:`runtime.inference.devices.gpu_info` (torch lives there, not in
this standard-library-only layer); ``runtime doctor`` passes them in.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import KaggleOfflineError
from runtime.installer.discovery import Wheelhouse, find_wheelhouses, open_wheelhouse
from runtime.installer.interpreter import Interpreter
from runtime.installer.plan import make_plan

_SHOWN_TAGS = 5


@dataclass(frozen=True)
class PackageStatus:
    """One vendored package against this kernel: ``installed``, ``missing`` or ``differs``."""

    name: str
    version: str  # the wheelhouse's version
    specifier: str
    installed: str | None
    status: str
    optional: bool
    wheelhouse: str


@dataclass(frozen=True)
class Diagnosis:
    interpreter: dict[str, Any]
    input_root: str
    wheelhouses: list[dict[str, Any]]
    packages: list[PackageStatus]
    plan: dict[str, Any]
    problems: list[str]
    gpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interpreter": self.interpreter,
            "input_root": self.input_root,
            "wheelhouses": self.wheelhouses,
            "packages": [vars(package) for package in self.packages],
            "plan": self.plan,
            "problems": self.problems,
            "gpu": self.gpu,
        }

    def render(self) -> str:
        py = self.interpreter
        lines = [
            f"python      {py['version']} ({py['implementation']}, {py['abi']}) at {py['executable']}",
            f"tags        {py['tag_count']} accepted, most preferred: {', '.join(py['top_tags'])}",
            f"input root  {self.input_root}"
            + ("" if Path(self.input_root).is_dir() else " (does not exist)"),
        ]
        if not self.wheelhouses:
            lines.append("wheelhouses none found")
        for house in self.wheelhouses:
            kind = (
                f"Python {house['python']}, {house['wheels']} wheels"
                if house["verified"]
                else f"UNVERIFIED, {house['wheels']} wheels"
            )
            lines.append(f"wheelhouse  {house['path']} ({kind}): {house['status']}")
        for package in self.packages:
            flag = ", optional" if package.optional else ""
            have = f", this kernel has {package.installed}" if package.installed else ""
            lines.append(f"  {package.name} {package.version}: {package.status}{have}{flag}")
        if self.plan.get("install"):
            lines.append(f"to install  {', '.join(self.plan['install'])}")
        elif "install" in self.plan:
            lines.append("to install  nothing")
        for problem in self.problems:
            lines.append(f"problem     {problem}")
        lines.append(f"gpu         {_describe_gpu(self.gpu)}")
        lines += [f"  note      {note}" for note in self.gpu.get("notes", [])]
        return "\n".join(lines)


def diagnose(
    wheelhouses: Sequence[str | os.PathLike[str]] = (),
    *,
    input_root: str | os.PathLike[str] | None = None,
    interpreter: Interpreter | None = None,
    gpu: Mapping[str, Any] | None = None,
) -> Diagnosis:
    """Look at everything, change nothing; ``wheelhouses`` are used as well as the search."""
    interpreter = interpreter or Interpreter.current()
    problems: list[str] = []
    found: list[Wheelhouse] = []
    for path in wheelhouses:
        try:
            found.append(open_wheelhouse(path))
        except KaggleOfflineError as error:
            problems.append(str(error))
    discovery = find_wheelhouses(input_root)
    problems += [str(problem) for problem in discovery.problems]
    known = {w.path.resolve() for w in found}
    found += [w for w in discovery.wheelhouses if w.path.resolve() not in known]

    plan_summary: dict[str, Any] = {}
    try:
        plan = make_plan(found, interpreter)
        plan_summary = {
            "install": [f"{w.name} {w.version}" for w in plan.install],
            "warnings": list(plan.warnings),
        }
    except KaggleOfflineError as error:
        problems.append(str(error))
    return Diagnosis(
        interpreter=_interpreter(interpreter),
        input_root=str(discovery.root),
        wheelhouses=[_describe_wheelhouse(w, interpreter) for w in found],
        packages=_package_statuses(found, interpreter),
        plan=plan_summary,
        problems=problems,
        gpu=dict(gpu or {}),
    )


def _interpreter(interpreter: Interpreter) -> dict[str, Any]:
    from runtime.installer.capture import current_tags

    tags = current_tags()
    implementation = sys.implementation.name
    return {
        "executable": interpreter.executable,
        "version": interpreter.python_full,
        "implementation": implementation,
        "abi": f"{'cp' if implementation == 'cpython' else implementation}"
        f"{sys.version_info.major}{sys.version_info.minor}",
        "tag_count": len(tags),
        "top_tags": list(tags[:_SHOWN_TAGS]),
        "installed_distributions": len(interpreter.versions),
    }


def _describe_wheelhouse(wheelhouse: Wheelhouse, interpreter: Interpreter) -> dict[str, Any]:
    manifest = wheelhouse.manifest
    status = "usable"
    if manifest is not None and manifest.target.python_version != interpreter.python:
        status = f"built for Python {manifest.target.python_version}, not {interpreter.python}"
    return {
        "path": str(wheelhouse.path),
        "verified": manifest is not None,
        "python": manifest.target.python_version if manifest else None,
        "target": manifest.target.name if manifest else None,
        "wheels": len(manifest.wheels) if manifest else len(wheelhouse.plain_wheels),
        "self_wheel": manifest.self_wheel if manifest else None,
        "status": status,
    }


def _package_statuses(
    wheelhouses: Sequence[Wheelhouse], interpreter: Interpreter
) -> list[PackageStatus]:
    from runtime.installer.versions import satisfies

    statuses = []
    for wheelhouse in wheelhouses:
        if wheelhouse.manifest is None:
            continue
        for entry in wheelhouse.manifest.wheels:
            installed = interpreter.version_of(entry.name)
            if installed is None:
                status = "missing"
            else:
                try:
                    status = "installed" if satisfies(installed, entry.specifier) else "differs"
                except ValueError:
                    status = "differs"
            statuses.append(
                PackageStatus(
                    entry.name,
                    entry.version,
                    entry.specifier,
                    installed,
                    status,
                    entry.optional,
                    str(wheelhouse.path),
                )
            )
    return statuses


def _describe_gpu(gpu: dict[str, Any]) -> str:
    if not gpu:
        return "not probed"
    if gpu.get("error"):
        return f"{gpu.get('source')}: {gpu['error']}"
    devices = gpu.get("devices") or []
    shown = (
        "; ".join(
            f"{d['name']} (sm {d.get('capability')}, {d.get('memory_gib')} GiB)" for d in devices
        )
        or "no CUDA device"
    )
    if gpu.get("source") == "torch":
        return f"torch {gpu.get('torch')} (CUDA build {gpu.get('cuda_build')}): {shown}"
    return f"{gpu.get('source') or 'none'}: {shown}"
