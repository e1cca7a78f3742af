"""The one table of ``bench/gpu_check.sh``, from what its steps left in its work folder.

    python bench/gpu_report.py WORK [--results bench/RESULTS.md]

WORK holds ``environment.json`` (the device and versions), ``steps.tsv`` (step, exit status,
seconds), ``gpu-tests.xml`` (pytest's JUnit report), ``inference.json`` (bench_inference.py
``--json``) and the steps' logs. With ``--results`` the section between the ``gpu-check`` markers
of that file is replaced by this run's table and bench output; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

BEGIN = "<!-- gpu-check:begin -->"
END = "<!-- gpu-check:end -->"
# Issue 13's targets for the inference bench under fp16 on a GPU.
TARGETS = {"ours_of_bare": 0.9, "monai": 1.3, "monai_defaults": 2.5, "mask_equal": 0.995}
TIME_LIMIT = 360  # seconds for the whole check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument(
        "--results", type=Path, help="Markdown file whose gpu-check section to replace"
    )
    args = parser.parse_args()
    rows, ok = table_rows(args.work)
    table = markdown_table(rows)
    print(table)
    if args.results:
        section = results_section(args.work, table)
        write_section(args.results, section)
        print(f"\nwrote {args.results}")
    return 0 if ok else 1


def table_rows(work: Path) -> tuple[list[tuple[str, str, str]], bool]:
    """(check, result, target) rows and whether every check that ran met its target."""
    environment = _json(work / "environment.json") or {}
    steps = _steps(work / "steps.tsv")
    rows: list[tuple[str, str, str]] = [("device", _device_text(environment), "")]
    ok = True

    tests = _junit(work / "gpu-tests.xml")
    status, seconds = steps.get("tests", (None, 0.0))
    if tests is None:
        rows.append(("pytest -m gpu", f"no report (exit status {status})", "all pass"))
        ok = False
    else:
        text = f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"
        text += f" ({seconds:.0f} s)"
        if tests["failed"]:
            text += ": " + ", ".join(tests["failures"])
        rows.append(("pytest -m gpu", text, "all pass"))
        ok = ok and tests["failed"] == 0 and status == 0

    inference = _json(work / "inference.json")
    status, seconds = steps.get("inference", (None, 0.0))
    if inference is None:
        rows.append(("bench_inference.py", f"no result (exit status {status})", ""))
        ok = False
    else:
        rows += _inference_rows(inference, seconds, gpu=bool(environment.get("cuda")))
        ok = ok and status == 0 and _inference_ok(inference, gpu=bool(environment.get("cuda")))

    if "nnunet" in steps:
        status, seconds = steps["nnunet"]
        tail = _last_lines(work / "nnunet.log", 1)
        rows.append(("bench_nnunet.py", f"exit status {status} ({seconds:.0f} s): {tail}", ""))
        ok = ok and status == 0
    total = sum(seconds for _, seconds in steps.values())
    rows.append(("whole check", f"{total:.0f} s", f"< {TIME_LIMIT} s on one GPU"))
    return rows, ok


def _inference_rows(
    report: dict[str, Any], seconds: float, *, gpu: bool
) -> list[tuple[str, str, str]]:
    sides = report["sides"]
    ours = sides["ours"]
    setting = (
        f"{report['model']} ({report['parameters'] / 1e6:.1f} M parameters), "
        f"{'x'.join(map(str, report['shape']))}, patch {report['patch']}^3, "
        f"{report['windows']} windows, {report['precision']}, batch {ours['batch']}"
    )
    rows = [("inference bench", f"{setting} ({seconds:.0f} s)", "")]
    rows.append(
        ("ours, median of rounds", f"{ours['median']:.2f} s (spread {ours['spread']:.0%})", "")
    )
    target = lambda key: f">= {TARGETS[key]}" if gpu else ""  # noqa: E731
    rows.append(
        ("ours ÷ bare forward (speed)", f"{report['ours_of_bare']:.2f}", target("ours_of_bare"))
    )
    for key, label in (
        ("monai", "MONAI, same windows"),
        ("monai_defaults", "MONAI, fp32 defaults"),
    ):
        if key in sides:
            side = sides[key]
            rows.append(
                (
                    f"ours vs {label}",
                    f"{side['time_over_ours']:.2f}x faster ({side['median']:.2f} s, batch {side['batch']})",
                    f">= {TARGETS[key]}x" if gpu else "",
                )
            )
    agreement = report.get("agreement")
    if agreement:
        rows.append(
            (
                "masks vs MONAI, same windows",
                f"{agreement['mask_equal']:.4%} equal, largest logit difference {agreement['max_logit_diff']:.2e}",
                f">= {TARGETS['mask_equal']:.1%}" if report["precision"] != "fp32" else "equal",
            )
        )
    return rows


def _inference_ok(report: dict[str, Any], *, gpu: bool) -> bool:
    agreement = report.get("agreement")
    if agreement is not None and not agreement["ok"]:
        return False
    if not gpu:  # the CPU part only has to run
        return True
    sides = report["sides"]
    return report["ours_of_bare"] >= TARGETS["ours_of_bare"] and all(
        sides[k]["time_over_ours"] >= TARGETS[k] for k in ("monai", "monai_defaults") if k in sides
    )


def markdown_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| check | result | target |", "| --- | --- | --- |"]
    lines += [f"| {check} | {result} | {target} |" for check, result, target in rows]
    return "\n".join(lines)


def results_section(work: Path, table: str) -> str:
    environment = _json(work / "environment.json") or {}
    parts = [
        BEGIN,
        f"Run {environment.get('date', '?')} by `bench/gpu_check.sh` on {_device_text(environment)}.",
        "",
        table,
        "",
    ]
    for name, title in (("inference.log", "bench_inference.py"), ("nnunet.log", "bench_nnunet.py")):
        text = _tail(work / name, 40)
        if text:
            parts += [f"`{title}` output:", "", "```text", text, "```", ""]
    parts.append(END)
    return "\n".join(parts)


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n## GPU check\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def _device_text(environment: dict[str, Any]) -> str:
    cudnn = environment.get("cudnn")
    if isinstance(cudnn, int):  # 91300 is 9.13.0
        cudnn = f"{cudnn // 10000}.{cudnn // 100 % 100}.{cudnn % 100}"
    versions = (
        f"torch {environment.get('torch', '?')}, CUDA {environment.get('cuda_runtime') or '-'}, "
        f"cuDNN {cudnn or '-'}, Python {environment.get('python', '?')}"
    )
    if not environment.get("cuda"):
        return f"no CUDA device ({environment.get('reason', 'none visible')}); {versions}"
    return (
        f"{environment['gpu']} (sm_{environment['capability']}, {environment['memory_gib']} GiB, "
        f"driver {environment.get('driver') or '?'}); {versions}"
    )


def _steps(path: Path) -> dict[str, tuple[int, float]]:
    steps: dict[str, tuple[int, float]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, status, seconds = line.split("\t")
            steps[name] = (int(status), float(seconds))
    return steps


def _junit(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in root.iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            counts["failed"] += 1
            counts["failures"].append(case.get("name", "?"))
        elif "skipped" in outcome:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_lines(path: Path, lines: int) -> str:
    return _tail(path, lines).replace("|", "/") or "no output"


if __name__ == "__main__":
    sys.exit(main())
