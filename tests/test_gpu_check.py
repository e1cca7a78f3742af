"""bench/gpu_check.sh keeps working without a GPU, and its report judges a GPU run correctly."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "gpu_report", PROJECT_ROOT / "bench" / "gpu_report.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="bash")
@pytest.mark.slow
def test_the_check_runs_its_cpu_part_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: bench/gpu_check.sh runs the whole check instead")
    results = PROJECT_ROOT / "bench" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    environment = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    environment.pop("OUT", None)
    completed = subprocess.run(
        ["bash", str(PROJECT_ROOT / "bench" / "gpu_check.sh")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "NO CUDA DEVICE" in out
    assert "| pytest -m gpu | 0 passed, 0 failed," in out
    assert "| ours ÷ bare forward (speed) |" in out and "| whole check |" in out
    assert "bench/RESULTS.md is left as it is" in out
    assert (results.read_bytes() if results.exists() else None) == before


def _gpu_run(work: Path, *, ours_of_bare: float, monai: float, failed: int = 0) -> None:
    work.mkdir()
    environment = {
        "date": "2026-12-01T12:00:00", "python": "3.12.3", "torch": "2.11.0+cu130",
        "cuda_runtime": "13.0", "cudnn": 91300, "cuda": True, "gpu": "NVIDIA H200",
        "capability": "90", "memory_gib": 139.8, "driver": "580.159.03",
    }  # fmt: skip
    (work / "environment.json").write_text(json.dumps(environment))
    (work / "steps.tsv").write_text("tests\t0\t95\ninference\t0\t120\n")
    cases = "".join(
        f'<testcase name="test_{i}">{"<failure/>" if i < failed else ""}</testcase>'
        for i in range(4)
    )
    (work / "gpu-tests.xml").write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")

    def side(seconds: float, batch: int) -> dict:
        return {"median": seconds, "spread": 0.01, "batch": batch, "time_over_ours": seconds / 2.0}

    report = {
        "model": "resenc-m", "parameters": 102_349_770, "shape": [320, 320, 320], "patch": 128,
        "windows": 64, "precision": "fp16", "ours_of_bare": ours_of_bare,
        "sides": {
            "ours": side(2.0, 2), "monai": side(2.0 * monai, 4), "monai_defaults": side(6.0, 4),
            "bare": side(2.0 * ours_of_bare, 2),
        },
        "agreement": {"mask_equal": 0.9991, "max_logit_diff": 0.03, "ok": True},
    }  # fmt: skip
    (work / "inference.json").write_text(json.dumps(report))
    (work / "inference.log").write_text("the bench's own table\n")


def test_the_report_judges_a_gpu_run_against_the_targets(tmp_path: Path) -> None:
    report = _report_module()
    _gpu_run(tmp_path / "good", ours_of_bare=0.93, monai=1.4)
    rows, ok = report.table_rows(tmp_path / "good")
    assert ok
    text = report.markdown_table(rows)
    assert (
        "NVIDIA H200 (sm_90, 139.8 GiB, driver 580.159.03); torch 2.11.0+cu130, CUDA 13.0" in text
    )
    assert "| pytest -m gpu | 4 passed, 0 failed, 0 skipped (95 s) | all pass |" in text
    assert "| ours vs MONAI, same windows | 1.40x faster (2.80 s, batch 4) | >= 1.3x |" in text
    assert "| ours vs MONAI, fp32 defaults | 3.00x faster" in text
    assert "| whole check | 215 s | < 360 s on one GPU |" in text

    for name, changes in {
        "slow": {"ours_of_bare": 0.8, "monai": 1.4},
        "behind-monai": {"ours_of_bare": 0.95, "monai": 1.1},
        "failing": {"ours_of_bare": 0.95, "monai": 1.4, "failed": 1},
    }.items():
        _gpu_run(tmp_path / name, **changes)
        rows, ok = report.table_rows(tmp_path / name)
        assert not ok, name
    assert "| 3 passed, 1 failed, 0 skipped (95 s): test_0 |" in report.markdown_table(rows)


def test_the_report_replaces_only_its_own_section(tmp_path: Path) -> None:
    report = _report_module()
    _gpu_run(tmp_path / "work", ours_of_bare=0.93, monai=1.4)
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# Results\n\nCPU numbers stay.\n\n{report.BEGIN}\nold run\n{report.END}\n\nTail stays.\n"
    )
    table = report.markdown_table(report.table_rows(tmp_path / "work")[0])
    report.write_section(results, report.results_section(tmp_path / "work", table))
    text = results.read_text()
    assert text.startswith("# Results\n\nCPU numbers stay.\n\n") and text.endswith("Tail stays.\n")
    assert "old run" not in text and "the bench's own table" in text
    assert text.count(report.BEGIN) == 1 and "Run 2026-12-01T12:00:00" in text
