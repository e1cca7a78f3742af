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


def _build(
    tmp_path: Path, index: str, *args: str, out: str = "house"
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "build", *args, "--target", "kaggle-py312",
         "-o", str(tmp_path / out), "--index-url", index,
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

    # Nothing changed: nothing to upload, and no `datasets version` command to run by mistake.
    same = _build(tmp_path, index, "ko-lib==2.0", "tifffile>=2026.11")
    assert "next: " not in same.stdout and "  changes   no wheel changed" in same.stdout
    assert same.stdout.splitlines()[-2].startswith(
        f"nothing to upload: {house} holds the same wheels and metadata as its last build"
    )
    # A new licence is a new version (of the metadata), and the folder remembers it.
    relicensed = _build(
        tmp_path, index, "ko-lib==2.0", "tifffile>=2026.11", "--license", "CC-BY-4.0"
    )
    assert "datasets version" in _next(relicensed)
    licences = json.loads((house / "dataset-metadata.json").read_text())["licenses"]
    assert licences == [{"name": "CC-BY-4.0"}]
    kept = _build(tmp_path, index, "ko-lib==2.0", "tifffile>=2026.11")
    assert "nothing to upload" in kept.stdout
    assert json.loads((house / "dataset-metadata.json").read_text())["licenses"] == licences
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


def _refused(tmp_path: Path, index: str, out: Path, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "build", "ko-lib==1.0", "--target", "kaggle-py312",
         "-o", str(out), "--index-url", index, "--cache-dir", str(tmp_path / "cache"),
         "--no-self", "--dataset-id", "tester/ko-wheels", *args],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert completed.returncode == 2 and completed.stdout == "", completed.stdout
    (line,) = completed.stderr.splitlines()
    return line


def test_build_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    """Everything in -o is uploaded: a model upload, notes or a .gitkeep must not ride along."""
    index = make_fixture_index(tmp_path)
    for name, files in (("model-upload", ("weights.pt", "config.json", "model-instance-metadata.json")),
                        ("notes", ("notes.txt",)), ("repo-folder", (".gitkeep",))):  # fmt: skip
        out = tmp_path / name
        out.mkdir()
        for file in files:
            (out / file).write_text("x")
        line = _refused(tmp_path, index, out)
        assert line.startswith(
            f"error: {out}: holds {', '.join(sorted(files))} and is not a wheelhouse"
        )
        assert sorted(p.name for p in out.iterdir()) == sorted(files)  # nothing written

    # An empty folder and an interrupted first build (only the wheelhouse's own entries) are fine.
    empty = tmp_path / "empty"
    (empty / "wheels").mkdir(parents=True)
    _build(tmp_path, index, "ko-lib==1.0", "--dataset-id", "tester/ko-wheels", out="empty")
    assert (empty / "manifest.json").is_file()


def test_a_licence_kaggle_does_not_know_is_refused_before_resolving(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    line = _refused(tmp_path, index, tmp_path / "house", "--license", "WTFPL")
    assert line.startswith("error: licence 'WTFPL' is not one Kaggle accepts (--license): CC0-1.0,")
    assert not (tmp_path / "house").exists()
