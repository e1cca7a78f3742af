"""``runtime doctor``: wheelhouses, installed or missing packages, interpreter tags and the GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.inference.devices import gpu_info
from runtime.installer.doctor import diagnose
from runtime.installer.interpreter import Interpreter
from tests.support.packages import make_wheel
from tests.support.venvs import Venv, copy_venv, run_checked, runtime_source_path, session_template
from tests.support.wheelhouses import kernel_profile, write_wheelhouse


@pytest.fixture(scope="module")
def input_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One usable wheelhouse, one for Python 3.12 beside it, and one with a corrupt manifest."""
    root = tmp_path_factory.mktemp("doctor-input")
    wheels = tmp_path_factory.mktemp("doctor-wheels")
    made = [
        make_wheel(wheels, "alpha", "1.0"),
        make_wheel(wheels, "beta", "2.0"),
        make_wheel(wheels, "fancycodecs", "1.0"),
    ]
    write_wheelhouse(
        root / "datasets" / "me" / "wheels",
        made,
        target=kernel_profile(),
        specifiers={"beta": ">=2"},
        optional=["fancycodecs"],
    )
    write_wheelhouse(
        root / "datasets" / "me" / "wheels-py312",
        made[:1],
        target=kernel_profile(python_version="3.12"),
    )
    broken = root / "datasets" / "me" / "broken"
    write_wheelhouse(broken, made[:1], target=kernel_profile())
    (broken / "manifest.json").write_text("{")
    return root


def test_diagnosis_lists_wheelhouses_packages_and_problems(input_root: Path) -> None:
    interpreter = Interpreter(versions={"alpha": "1.0", "beta": "1.5"})

    diagnosis = diagnose(input_root=input_root, interpreter=interpreter)

    houses = {Path(house["path"]).name: house for house in diagnosis.wheelhouses}
    assert set(houses) == {"wheels", "wheels-py312"}
    assert houses["wheels"]["status"] == "usable" and houses["wheels"]["verified"]
    assert houses["wheels-py312"]["status"] == "built for Python 3.12, not 3.11"
    statuses = {p.name: p.status for p in diagnosis.packages if p.wheelhouse.endswith("/wheels")}
    assert statuses == {"alpha": "installed", "beta": "differs", "fancycodecs": "missing"}
    # The plan fails (beta 1.5 would have to be replaced): a finding, not a crash.
    assert any("broken/manifest.json: corrupt manifest" in p for p in diagnosis.problems)
    assert any("beta 1.5 is installed but" in p for p in diagnosis.problems)
    assert diagnosis.interpreter["version"] == ".".join(map(str, sys.version_info[:3]))
    assert diagnosis.interpreter["top_tags"][0].startswith("cp311-cp311-")

    text = diagnosis.render()
    assert "  beta 2.0: differs, this kernel has 1.5" in text
    assert "  fancycodecs 1.0: missing, optional" in text
    assert "gpu         not probed" in text


def test_diagnosis_shows_the_plan_when_it_can_be_made(input_root: Path) -> None:
    interpreter = Interpreter(versions={"beta": "2.1"})
    diagnosis = diagnose(
        [input_root / "datasets" / "me" / "wheels"],
        input_root=input_root / "nothing-here",
        interpreter=interpreter,
    )
    assert diagnosis.plan["install"] == ["alpha 1.0", "fancycodecs 1.0"]
    assert diagnosis.problems == []
    assert "to install  alpha 1.0, fancycodecs 1.0" in diagnosis.render()


def test_gpu_from_torch_when_torch_is_installed() -> None:
    pytest.importorskip("torch")
    import torch

    info = gpu_info()

    assert info["source"] == "torch" and info["torch"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert len(info["devices"]) == (torch.cuda.device_count() if info["cuda_available"] else 0)


_FAKE_NVIDIA_SMI = """#!/bin/sh
# Stands in for the driver tool of a T4 machine: prints what the real one prints for this query.
case "$*" in
  *--query-gpu=name,memory.total,compute_cap,driver_version*) echo "Tesla T4, 15360, 7.5, 550.54.15"
     echo "Tesla T4, 15360, 7.5, 550.54.15";;
  *) exit 9;;
esac
"""


def _doctor_json(venv: Venv, input_root: Path, path: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path()), "PATH": path}
    result = run_checked(
        [str(venv.python), "-m", "runtime", "doctor", "--json", "--input-root", str(input_root)],
        env=env,
    )
    return json.loads(result.stdout)


def test_doctor_cli_without_torch_asks_nvidia_smi(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, input_root: Path
) -> None:
    venv = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text(_FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    shell_dir = str(Path(shutil.which("sh") or "/bin/sh").parent)

    with_gpu = _doctor_json(venv, input_root, f"{tools}{os.pathsep}{shell_dir}")
    assert with_gpu["gpu"] == {
        "source": "nvidia-smi",
        "devices": [
            {"name": "Tesla T4", "capability": "7.5", "memory_gib": 15.0, "driver": "550.54.15"}
        ]
        * 2,
    }
    assert any("corrupt manifest" in problem for problem in with_gpu["problems"])  # type: ignore[union-attr]

    without = _doctor_json(venv, input_root, shell_dir)
    assert without["gpu"]["source"] is None and without["gpu"]["devices"] == []  # type: ignore[index]

    text = subprocess.run(
        [str(venv.python), "-m", "runtime", "doctor", "--input-root", str(input_root)],
        env={
            **os.environ,
            "PYTHONPATH": str(runtime_source_path()),
            "PATH": f"{tools}{os.pathsep}{shell_dir}",
        },
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert "gpu         nvidia-smi: Tesla T4 (sm 7.5, 15.0 GiB); Tesla T4" in text
