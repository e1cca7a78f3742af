"""Rebuilding an uploaded wheelhouse: the id is remembered, the next command is `version`."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from bundler.wheelhouse.updates import PreviousBuild, previous_build, upload_command, wheel_changes
from tests.support.bundler_fixtures import make_fixture_index

ROOT = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path, index: str, *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "build", *args, "--target", "kaggle-py312",
         "-o", str(tmp_path / "house"), "--index-url", index,
         "--cache-dir", str(tmp_path / "cache"), "--no-self"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed


def _next(completed: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("next: ")]
    return line.removeprefix("next: ")


def test_a_second_build_for_the_same_id_prints_version_with_what_changed(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    house = tmp_path / "house"
    first = _build(
        tmp_path, index, "ko-lib==1.0", "ko-backport", "--dataset-id", "tester/ko-wheels"
    )
    assert _next(first) == f"kaggle datasets create -p {house} --dir-mode zip"
    assert "changes" not in first.stdout
    assert (
        "then: python -m bundler model MODEL_PATH -o model-upload --id tester/MODEL" in first.stdout
    )

    # No --dataset-id this time: the folder remembers the one it was built for.
    second = _build(tmp_path, index, "ko-lib==2.0", "tifffile>=2026.11")
    summary = "added tifffile==2026.11.1; removed ko-backport==1.0; upgraded ko-lib 1.0 -> 2.0"
    assert f"  changes   {summary} (since the last build in this folder)" in second.stdout
    command = shlex.split(_next(second))
    assert command[:5] == ["kaggle", "datasets", "version", "-p", str(house)]
    assert command[5:] == ["-m", f"kaggle-offline rebuild: {summary}", "--dir-mode", "zip"]
    assert json.loads((house / "dataset-metadata.json").read_text())["id"] == "tester/ko-wheels"

    same = _build(tmp_path, index, "ko-lib==2.0", "tifffile>=2026.11")
    assert "no wheel changed" in _next(same) and "datasets version" in _next(same)
    # Another id is another dataset: create it.
    other = _build(tmp_path, index, "ko-lib==2.0", "--dataset-id", "tester/other-wheels")
    assert _next(other) == f"kaggle datasets create -p {house} --dir-mode zip"


def test_a_placeholder_id_is_not_remembered(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"wheels": [{"name": "a", "version": "1"}]}))
    (tmp_path / "dataset-metadata.json").write_text(json.dumps({"id": "INSERT_OWNER/x-wheels"}))
    previous = previous_build(tmp_path)
    assert previous == PreviousBuild(None, None, {"a": "1"})
    assert upload_command(tmp_path, "alice/x-wheels", previous, None).startswith(
        "kaggle datasets create"
    )
    assert previous_build(tmp_path / "nothing") is None


def test_wheel_changes_compare_versions_not_strings() -> None:
    changes = wheel_changes(
        {"a": "1.10", "b": "2.0", "c": "1"}, {"a": "1.9", "b": "10.0", "d": "1"}
    )
    assert changes.downgraded == ["a 1.10 -> 1.9"] and changes.upgraded == ["b 2.0 -> 10.0"]
    assert changes.added == ["d==1"] and changes.removed == ["c==1"]
    assert not wheel_changes({"a": "1"}, {"a": "1"})
