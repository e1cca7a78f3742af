"""``runtime doctor``: what an offline kernel has — wheelhouses, packages, wheel tags and the GPU.

Read-only: it plans but never installs. Problems (a corrupt manifest, a conflict) are shown as
findings instead of stopping the report, because the report is what one reads to fix them.
torch is imported only if it is installed (it costs seconds); otherwise ``nvidia-smi`` is asked.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.environment import Environment
from runtime.exceptions import KaggleOfflineError
from runtime.plan import make_plan
from runtime.wheelhouses import Wheelhouse, find_wheelhouses, open_wheelhouse

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
    environment: Environment | None = None,
    probe_gpu: bool = True,
) -> Diagnosis:
    """Look at everything, change nothing; ``wheelhouses`` are used as well as the search."""
    environment = environment or Environment.current()
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
        plan = make_plan(found, environment)
        plan_summary = {
            "install": [f"{w.name} {w.version}" for w in plan.install],
            "warnings": list(plan.warnings),
        }
    except KaggleOfflineError as error:
        problems.append(str(error))
    return Diagnosis(
        interpreter=_interpreter(environment),
        input_root=str(discovery.root),
        wheelhouses=[_describe_wheelhouse(w, environment) for w in found],
        packages=_package_statuses(found, environment),
        plan=plan_summary,
        problems=problems,
        gpu=gpu_info() if probe_gpu else {},
    )


def _interpreter(environment: Environment) -> dict[str, Any]:
    from runtime.profile import current_tags

    tags = current_tags()
    implementation = sys.implementation.name
    return {
        "executable": environment.executable,
        "version": environment.python_full,
        "implementation": implementation,
        "abi": f"{'cp' if implementation == 'cpython' else implementation}"
        f"{sys.version_info.major}{sys.version_info.minor}",
        "tag_count": len(tags),
        "top_tags": list(tags[:_SHOWN_TAGS]),
        "installed_distributions": len(environment.versions),
    }


def _describe_wheelhouse(wheelhouse: Wheelhouse, environment: Environment) -> dict[str, Any]:
    manifest = wheelhouse.manifest
    status = "usable"
    if manifest is not None and manifest.target.python_version != environment.python:
        status = f"built for Python {manifest.target.python_version}, not {environment.python}"
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
    wheelhouses: Sequence[Wheelhouse], environment: Environment
) -> list[PackageStatus]:
    from runtime.versions import satisfies

    statuses = []
    for wheelhouse in wheelhouses:
        if wheelhouse.manifest is None:
            continue
        for entry in wheelhouse.manifest.wheels:
            installed = environment.version_of(entry.name)
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


def gpu_info() -> dict[str, Any]:
    """The GPU as torch sees it when torch is installed, else as nvidia-smi reports it."""
    if importlib.util.find_spec("torch") is not None:
        info = _torch_gpu()
        if not info.get("cuda_available"):
            smi = _nvidia_smi_gpu()
            if smi.get("devices"):
                info["nvidia_smi"] = smi["devices"]
                info.setdefault("notes", []).append(
                    "the driver sees a GPU but this torch cannot use it (CPU build or driver mismatch)"
                )
        return info
    return _nvidia_smi_gpu()


def _torch_gpu() -> dict[str, Any]:
    try:
        import torch
    except Exception as error:  # a broken torch install is a finding, not a crash
        return {"source": "torch", "error": f"import torch failed: {error}", "devices": []}
    info: dict[str, Any] = {
        "source": "torch",
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
        "devices": [],
        "notes": [],
    }
    if str(torch.__version__).startswith("2.9.0"):
        info["notes"].append(
            "torch 2.9.0 runs fp16/bf16 Conv3d about 4x slower (cuDNN disabled); 2.9.1+ fixes it"
        )
    if info["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            capability = f"{properties.major}.{properties.minor}"
            info["devices"].append(
                {
                    "name": properties.name,
                    "capability": capability,
                    "memory_gib": round(properties.total_memory / 2**30, 1),
                }
            )
            if properties.major < 7:
                info["notes"].append(
                    f"GPU {index} ({properties.name}, sm_{properties.major}{properties.minor}): "
                    "no Triton, so no torch.compile; recent CUDA builds may lack its kernels"
                )
    return info


def _nvidia_smi_gpu() -> dict[str, Any]:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return {"source": None, "devices": [], "notes": ["no torch and no nvidia-smi: CPU only"]}
    query = "--query-gpu=name,memory.total,compute_cap,driver_version"
    try:
        result = subprocess.run(
            [executable, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"source": "nvidia-smi", "error": str(error), "devices": []}
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        return {"source": "nvidia-smi", "error": message[0] if message else "failed", "devices": []}
    devices = []
    for line in result.stdout.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) >= 4:
            name, memory, capability, driver = fields[:4]
            devices.append(
                {
                    "name": name,
                    "capability": capability,
                    "memory_gib": round(float(memory) / 1024, 1) if _is_number(memory) else None,
                    "driver": driver,
                }
            )
    return {"source": "nvidia-smi", "devices": devices}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
