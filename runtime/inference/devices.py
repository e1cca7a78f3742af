"""The GPU as this kernel sees it, for ``runtime doctor``: torch's view, else nvidia-smi's.

torch is imported only if it is installed (it costs seconds), and a broken torch is a finding,
not a crash; without torch ``nvidia-smi`` is asked.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from typing import Any

__all__ = ["gpu_info"]


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
