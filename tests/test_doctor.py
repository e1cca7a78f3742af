"""``runtime doctor``: wheelhouses, installed or missing packages, interpreter tags and the GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runtime.inference.devices import gpu_info
from runtime.installer.doctor import Diagnosis, diagnose
from runtime.installer.interpreter import Interpreter
from runtime.installer.needs import EXTRA, PREDICT_NEEDS
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


def _wheelhouse_problems(diagnosis: Diagnosis) -> list[str]:
    """The problems that are not about predict's needs (a hand-made Interpreter has none)."""
    return [p for p in diagnosis.problems if not p.startswith("predict: ")]


def test_diagnosis_lists_wheelhouses_packages_and_problems(input_root: Path) -> None:
    interpreter = Interpreter(versions={"alpha": "1.0", "beta": "1.5"})

    diagnosis = diagnose(input_root=input_root, interpreter=interpreter)

    houses = {Path(house["path"]).name: house for house in diagnosis.wheelhouses}
    assert set(houses) == {"wheels", "wheels-py312", "broken"}
    assert houses["wheels"]["status"] == "usable, every wheel hash-checked"
    assert houses["wheels"]["verified"]
    assert houses["wheels-py312"]["status"] == "not used: built for Python 3.12, not 3.11"
    assert houses["broken"]["status"].startswith("broken: ") and not houses["broken"]["packages"]
    statuses = {p["name"]: p["status"] for p in houses["wheels"]["packages"]}
    assert statuses == {"alpha": "installed", "beta": "differs", "fancycodecs": "missing"}
    # The plan fails (beta 1.5 would have to be replaced): a finding, not a crash.
    problems = _wheelhouse_problems(diagnosis)
    assert any("broken/manifest.json: corrupt manifest" in p for p in problems)
    assert any("beta 1.5 is installed but" in p for p in problems)
    assert not diagnosis.ok
    assert diagnosis.interpreter["version"] == ".".join(map(str, sys.version_info[:3]))
    assert diagnosis.interpreter["top_tags"][0].startswith("cp311-cp311-")

    text = diagnosis.render()
    assert "      beta 2.0: differs, this kernel has 1.5" in text
    assert "      fancycodecs 1.0: missing, optional" in text
    assert "gpu         not probed" in text


def test_diagnosis_shows_the_plan_when_it_can_be_made(input_root: Path) -> None:
    interpreter = Interpreter(versions={"beta": "2.1"})
    diagnosis = diagnose(
        [input_root / "datasets" / "me" / "wheels"],
        input_root=input_root / "nothing-here",
        interpreter=interpreter,
    )
    assert diagnosis.plan["install"] == ["alpha 1.0", "fancycodecs 1.0"]
    assert _wheelhouse_problems(diagnosis) == []
    assert "to install  alpha 1.0, fancycodecs 1.0" in diagnosis.render()


def test_a_tampered_wheel_makes_a_wheelhouse_damaged_not_usable(
    input_root: Path, tmp_path: Path
) -> None:
    house = tmp_path / "input" / "wheels"
    shutil.copytree(input_root / "datasets" / "me" / "wheels", house)
    beta = next((house / "wheels").glob("beta-*.whl"))
    data = bytearray(beta.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    beta.write_bytes(bytes(data))

    diagnosis = diagnose(input_root=tmp_path / "input", interpreter=Interpreter(versions={}))

    (described,) = diagnosis.wheelhouses
    assert described["status"].startswith(f"damaged: {beta.name} differs from the manifest")
    assert "tampered or truncated" in described["status"]
    assert any(p.startswith(f"{house}: {beta.name} differs") for p in diagnosis.problems)
    assert not diagnosis.ok


def test_several_wheelhouses_are_shown_as_groups(input_root: Path) -> None:
    text = diagnose(input_root=input_root, interpreter=Interpreter(versions={})).render()

    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("  [")]
    assert [lines[i].split(": ", 1)[0] for i in headers] == [
        f"  [1] {input_root / 'datasets' / 'me' / 'wheels'}",
        f"  [2] {input_root / 'datasets' / 'me' / 'wheels-py312'}",
        f"  [3] {input_root / 'datasets' / 'me' / 'broken'}",
    ]
    # Each package line sits under the wheelhouse it belongs to.
    first_group = lines[headers[0] + 1 : headers[1]]
    assert first_group[0].startswith("      target test-kernel (Python 3.11), 3 wheels")
    assert [line.split(":")[0].strip() for line in first_group[1:]] == [
        "alpha 1.0",
        "beta 2.0",
        "fancycodecs 1.0",
    ]
    assert lines[headers[1] + 2].strip() == "alpha 1.0: missing"
    assert text.splitlines()[-1].startswith("verdict     ") and "problem(s) found" in text


def test_doctor_checks_what_predict_needs_and_exits_by_its_findings(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A bare venv, like the README's bundler-only environment: no torch, numpy, ...
    bare = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}
    empty = tmp_path / "empty"
    empty.mkdir()
    command = ["-m", "runtime", "doctor", "--no-gpu", "--input-root", str(empty)]

    result = run_checked([str(bare.python), *command, "--json"], env=env, check=False)

    assert result.returncode == 1, result.stderr
    found = json.loads(result.stdout)
    assert found["ok"] is False
    # Outside a clone: the exact pip command, and bootstrap.py for a kernel.
    problems = " ".join(found["problems"])
    assert "predict: numpy not installed: python -m pip install 'numpy>=1.26'" in problems
    assert "bootstrap.py" in problems
    assert any(p.startswith("predict: torch not installed") for p in found["problems"])
    assert any(n.startswith("predict: imagecodecs not installed") for n in found["notes"])

    # This test environment has all of it (the test extra): no problem, exit 0.
    healthy = run_checked([sys.executable, *command], env=env, check=False)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.splitlines()[-1] == "verdict     ok"
    assert "predict     torch " in healthy.stdout and "imagecodecs " in healthy.stdout


def test_predict_needs_match_the_predict_extra() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"][EXTRA]
    declared = {line.split(">=")[0]: line.split(">=")[1] for line in extra}
    assert declared == {n.distribution: n.minimum for n in PREDICT_NEEDS if n.in_extra}


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
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the corrupt manifest, no numpy or torch
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
        check=False,
        cwd=tmp_path,
    ).stdout
    assert "gpu         nvidia-smi: Tesla T4 (sm 7.5, 15.0 GiB); Tesla T4" in text
