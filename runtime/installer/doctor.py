"""``runtime doctor``: what an offline kernel has — wheelhouses, packages, predict's needs, the GPU.

Read-only: it plans but never installs. Problems (a broken or tampered wheelhouse, a conflict, a
missing torch) are shown as findings instead of stopping the report, because the report is what
one reads to fix them; ``runtime doctor`` then exits 1. Each wheelhouse is shown as one group: its
line, then its packages. A wheelhouse is called usable only after each of its wheels was hashed
against its manifest. The GPU findings come from :func:`runtime.inference.devices.gpu_info`
(torch lives there, not in this standard-library-only layer); ``runtime doctor`` passes them in.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import KaggleOfflineError
from runtime.contract.files import sha256_file
from runtime.installer.discovery import Wheelhouse, find_wheelhouses, open_wheelhouse
from runtime.installer.interpreter import Interpreter
from runtime.installer.needs import check_needs
from runtime.installer.plan import ALLOW_UNVERIFIED_HINT, make_plan

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
    wheelhouses: list[dict[str, Any]]  # each with its "packages"
    plan: dict[str, Any]
    predict: list[dict[str, Any]]
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "interpreter": self.interpreter,
            "input_root": self.input_root,
            "wheelhouses": self.wheelhouses,
            "plan": self.plan,
            "predict": self.predict,
            "problems": self.problems,
            "notes": self.notes,
            "gpu": self.gpu,
        }

    def render(self) -> str:
        py = self.interpreter
        lines = [
            f"python      {py['version']} ({py['implementation']}, {py['abi']}) at {py['executable']}",
            f"tags        {py['tag_count']} accepted, most preferred: {', '.join(py['top_tags'])}",
            f"input root  {self.input_root}"
            + ("" if Path(self.input_root).is_dir() else " (does not exist)"),
            f"wheelhouses {len(self.wheelhouses) or 'none'} found",
        ]
        for number, house in enumerate(self.wheelhouses, 1):
            lines.append(f"  [{number}] {house['path']}: {house['status']}")
            if house["kind"]:
                lines.append(f"      {house['kind']}")
            for package in house["packages"]:
                flag = ", optional" if package["optional"] else ""
                have = f", this kernel has {package['installed']}" if package["installed"] else ""
                lines.append(
                    f"      {package['name']} {package['version']}: {package['status']}{have}{flag}"
                )
        if self.plan.get("install"):
            lines.append(f"to install  {', '.join(self.plan['install'])}")
        elif "install" in self.plan:
            lines.append("to install  nothing")
        for warning in self.plan.get("warnings", []):
            lines.append(f"  warning   {warning}")
        met = [n for n in self.predict if not n["problem"]]
        lines.append(
            "predict     "
            + (", ".join(f"{n['distribution']} {n['version']}" for n in met) or "nothing found")
        )
        for note in self.notes:
            lines.append(f"note        {note}")
        for problem in self.problems:
            lines.append(f"problem     {problem}")
        lines.append(f"gpu         {_describe_gpu(self.gpu)}")
        lines += [f"  note      {note}" for note in self.gpu.get("notes", [])]
        lines.append(
            f"verdict     {len(self.problems)} problem(s) found"
            if self.problems
            else "verdict     ok"
        )
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
    notes: list[str] = []
    found: list[Wheelhouse] = []
    houses: list[dict[str, Any]] = []
    for path in wheelhouses:
        try:
            found.append(open_wheelhouse(path))
        except KaggleOfflineError as error:
            houses.append(_broken(Path(path), error))
            problems.append(str(error))
    discovery = find_wheelhouses(input_root)
    known = {w.path.resolve() for w in found}
    found += [w for w in discovery.wheelhouses if w.path.resolve() not in known]
    houses += [_describe_wheelhouse(w, interpreter, problems) for w in found]
    for broken in discovery.problems:
        houses.append(_broken(broken.path, broken.error))
        problems.append(str(broken))

    plan_summary: dict[str, Any] = {}
    try:
        plan = make_plan(found, interpreter)
        plan_summary = {
            "install": [f"{w.name} {w.version}" for w in plan.install],
            "warnings": list(plan.warnings),
        }
    except KaggleOfflineError as error:
        problems.append(str(error))

    predict = check_needs(interpreter)
    for status in predict:
        if status.problem:
            (notes if status.need.optional else problems).append(
                f"predict: {status.problem}"
                + (f" ({status.need.without})" if status.need.optional else "")
            )
    if interpreter.debris:
        problems.append(
            "pip's leftovers of an interrupted install, which make every pip run warn: "
            f"{', '.join(interpreter.debris)}; the next install removes them, or rm -rf them"
        )
    return Diagnosis(
        interpreter=_interpreter(interpreter),
        input_root=str(discovery.root),
        wheelhouses=houses,
        plan=plan_summary,
        predict=[status.to_dict() for status in predict],
        problems=problems,
        notes=notes,
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


def _broken(path: Path, error: KaggleOfflineError) -> dict[str, Any]:
    return {
        "path": str(path),
        "verified": False,
        "python": None,
        "target": None,
        "wheels": 0,
        "self_wheel": None,
        "status": f"broken: {error}",
        "kind": "",
        "packages": [],
    }


def _describe_wheelhouse(
    wheelhouse: Wheelhouse, interpreter: Interpreter, problems: list[str]
) -> dict[str, Any]:
    manifest = wheelhouse.manifest
    if manifest is None:
        status = f"unverified: no manifest.json, so not installed from ({ALLOW_UNVERIFIED_HINT})"
        kind = f"{len(wheelhouse.plain_wheels)} wheels, no hashes"
    elif manifest.target.python_version != interpreter.python:
        status = (
            f"not used: built for Python {manifest.target.python_version}, not {interpreter.python}"
        )
        kind = f"target {manifest.target.name}, {len(manifest.wheels)} wheels"
    else:
        damage = _damage(wheelhouse)
        status = f"damaged: {'; '.join(damage)}" if damage else "usable, every wheel hash-checked"
        problems += [f"{wheelhouse.path}: {line}" for line in damage]
        kind = f"target {manifest.target.name} (Python {manifest.target.python_version}), {len(manifest.wheels)} wheels"
    return {
        "path": str(wheelhouse.path),
        "verified": manifest is not None,
        "python": manifest.target.python_version if manifest else None,
        "target": manifest.target.name if manifest else None,
        "wheels": len(manifest.wheels) if manifest else len(wheelhouse.plain_wheels),
        "self_wheel": manifest.self_wheel if manifest else None,
        "status": status,
        "kind": kind,
        "packages": [vars(p) for p in _package_statuses(wheelhouse, interpreter)],
    }


def _damage(wheelhouse: Wheelhouse) -> list[str]:
    """What differs between the wheel files and the manifest: missing, resized or re-hashed."""
    assert wheelhouse.manifest is not None
    found = []
    for entry in wheelhouse.manifest.wheels:
        path = wheelhouse.wheel_path(entry)
        if path is None:
            found.append(f"{entry.filename} is missing from disk")
            continue
        try:
            size = path.stat().st_size
            # The size first: a file of another size is damaged without reading all of it.
            digest = sha256_file(path) if size == entry.size else "(not read)"
        except OSError as error:
            found.append(f"{entry.filename} is unreadable ({error.strerror or error})")
            continue
        if size != entry.size or digest != entry.sha256:
            found.append(
                f"{entry.filename} differs from the manifest (sha256 {digest[:16]}..., {size} "
                f"bytes; the manifest says {entry.sha256[:16]}..., {entry.size}): tampered or "
                "truncated"
            )
    return found


def _package_statuses(wheelhouse: Wheelhouse, interpreter: Interpreter) -> list[PackageStatus]:
    from runtime.installer.versions import satisfies

    if wheelhouse.manifest is None:
        return []
    statuses = []
    for entry in wheelhouse.manifest.wheels:
        installed = interpreter.version_of(entry.name)
        if installed is None:
            status = "missing"
        else:
            status = "installed" if satisfies(installed, entry.specifier) else "differs"
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
