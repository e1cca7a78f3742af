"""The scoring loop's files, kills, signals and full disks (issue 20, runtime side).

Ids read from our files are plain names; a run's outputs are invalidated when it starts, so a
``kill -9`` never leaves an earlier run's files passing for this one's; ``fuse`` and ``tune``
never write onto their inputs; SIGTERM unwinds like an error; every output place is checked
(writable, free space) before the work, and a disk that fills during it is one line naming it.
Real processes, real signals and real (tmpfs) filesystems.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from runtime.__main__ import main
from runtime.contract.errors import InputError, OutputError
from runtime.contract.settings import EnsembleSettings, RunRequest
from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig
from runtime.pipeline import predict
from runtime.samples.sample import write_sample
from runtime.volumes.probability import (
    MANIFEST_NAME,
    encode,
    find_probabilities,
    fuse,
    save_probability,
    write_manifest,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHAPE = (12, 16, 16)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = UNetConfig(channels=(4, 8))
    torch.save(UNet3D(config).state_dict(), folder / "weights.pt")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "format": MODEL_FORMAT,
                "format_version": MODEL_FORMAT_VERSION,
                "architecture": config.to_dict(),
                "weights": "weights.pt",
                "normalization": {"mean": 127.5, "std": 64.0},
                "inference": {"patch_size": [16, 16, 16], "overlap": 0.25, "threshold": 0.5},
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("sample"), n=2, shape=(16, 24, 24), seed=3)


def _probability_folder(folder: Path, ids: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for volume_id in ids:
        save_probability(folder / f"{volume_id}.npy", encode(rng.random(SHAPE), "uint8"))
    write_manifest(folder, "uint8", {i: SHAPE for i in ids}, {"test": True})
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- security: ids read from our files are plain names -------------------------------------------
@pytest.mark.parametrize(
    "crafted", ["../../escaped", "/tmp/absolute-escape", "..", "a\\b", "x\x00"]
)
def test_fuse_refuses_a_crafted_id_in_probabilities_json_before_writing(
    tmp_path: Path, crafted: str
) -> None:
    folders = [_probability_folder(tmp_path / name, ["v0"]) for name in ("a", "b")]
    for folder in folders:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        manifest["volumes"] = {crafted: {"file": f"{crafted}.npy", "shape": list(SHAPE)}}
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(InputError) as refused:
        fuse(folders, out, EnsembleSettings((0.5, 0.5)))
    assert "is not a plain name" in str(refused.value) and "\n" not in str(refused.value)
    assert MANIFEST_NAME in str(refused.value)
    assert not out.exists() and not (tmp_path / "escaped.npy").exists()
    assert not Path("/tmp/absolute-escape.npy").exists()


def test_a_manifest_file_entry_must_be_the_ids_own_file(tmp_path: Path) -> None:
    folder = _probability_folder(tmp_path / "a", ["v0", "v1"])
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["volumes"]["v0"]["file"] = "v1.npy"  # another volume's file, silently
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"volumes\.v0\.file must be 'v0\.npy'"):
        find_probabilities(folder)


def test_postprocess_json_volume_ids_are_plain_names(tmp_path: Path) -> None:
    from runtime.volumes.mask_settings import read_postprocess_file

    path = tmp_path / "postprocess.json"
    path.write_text(
        json.dumps(
            {
                "format": "kaggle-offline-postprocess",
                "format_version": 1,
                "settings": {"threshold": 0.4},
                "probability_encoding": "uint8",
                "volumes": ["1", "../../etc/passwd"],
            }
        )
    )
    with pytest.raises(InputError, match=r"volumes\[1\] is not a plain name"):
        read_postprocess_file(path)


# --- nothing stale passes for fresh -------------------------------------------------------------
def test_a_manifest_encoding_or_shape_that_its_files_contradict_is_refused(tmp_path: Path) -> None:
    folder = _probability_folder(tmp_path / "a", ["v0"])
    save_probability(folder / "v0.npy", encode(np.zeros(SHAPE), "float16"))  # rewritten alone
    with pytest.raises(InputError, match=r"v0\.npy: holds float16 .* says uint8"):
        find_probabilities(folder)
    save_probability(folder / "v0.npy", encode(np.zeros((3, 4, 5)), "uint8"))
    with pytest.raises(InputError, match=r"of shape \(3, 4, 5\), but .* of shape \(12, 16, 16\)"):
        find_probabilities(folder)


def test_fuse_onto_one_of_its_inputs_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    a = _probability_folder(tmp_path / "a", ["v0", "v1"], seed=1)
    b = _probability_folder(tmp_path / "b", ["v0", "v1"], seed=2)
    before = _files(a)
    with pytest.raises(OutputError, match=r"-o .*/a would overwrite the input .*/a/v0\.npy"):
        fuse([a, b], a, EnsembleSettings((0.5, 0.5)))
    assert main(["fuse", str(a), str(b), "-o", str(a)]) == 2
    assert _files(a) == before


def test_tune_refuses_to_write_onto_its_grid_and_clears_its_earlier_results(
    tmp_path: Path,
) -> None:
    from runtime.samples.sample import write_sample as sample

    root = sample(tmp_path / "sample", n=1, shape=(12, 16, 16), seed=1)
    label_file = next((root / "train_labels").glob("*.tif"))
    volume_id = label_file.stem
    labels = tifffile.imread(label_file)
    probs = tmp_path / "probs"
    probs.mkdir()
    save_probability(probs / f"{volume_id}.npy", encode((labels == 1) * 0.8, "uint8"))
    write_manifest(probs, "uint8", {volume_id: labels.shape}, {})
    out = tmp_path / "tuned"
    out.mkdir()
    grid = out / "postprocess.json"  # last run's result, given as this run's grid
    grid.write_text(json.dumps({"thresholds": [0.5]}))
    argv = ["tune", str(probs), str(root), "--grid", str(grid), "-o", str(out), "--jobs", "1"]
    assert main([*argv, "--no-progress"]) == 2
    assert json.loads(grid.read_text()) == {"thresholds": [0.5]}
    # An earlier tune's results go when a tune starts: a killed tune leaves none behind.
    (out / "tune-results.json").write_text("{}")
    grid2 = tmp_path / "grid.json"
    grid2.write_text(json.dumps({"thresholds": ["0.5"]}))  # refused at once
    assert main(["tune", str(probs), str(root), "--grid", str(grid2), "-o", str(out)]) == 2
    assert (out / "tune-results.json").exists()  # the grid was refused before the outputs went
    grid2.write_text(json.dumps({"thresholds": [0.3, 0.5]}))
    assert (
        main(["tune", str(probs), str(root), "--grid", str(grid2), "-o", str(out), "--jobs", "1"])
        == 0
    )
    assert json.loads((out / "tune-results.json").read_text())["format"] == "kaggle-offline-tune"


def _runtime(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        **kwargs,
    )


def _wait_for(process: subprocess.Popen, text: str, timeout: float = 240) -> list[str]:
    """Read stderr lines until one holds ``text``; the lines so far."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    process.kill()
    raise AssertionError(f"never saw {text!r}; got {''.join(seen)[-2000:]}")


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough volumes that a run is still going when the first is written."""
    return write_sample(tmp_path_factory.mktemp("slow"), n=8, shape=(32, 64, 64), seed=4)


@pytest.mark.slow
def test_kill_9_leaves_no_stale_metrics_and_the_next_run_removes_its_mask_folder(
    slow_root: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["predict", str(slow_root), "--model", str(tiny_model), "--device", "cpu"]
    args += ["--no-progress", "-o", str(out / "submission.zip")]
    args += ["--save-probabilities", str(tmp_path / "probs")]
    first = _runtime(*args)
    assert first.wait(timeout=600) == 0, first.stderr.read() if first.stderr else ""
    assert json.loads((out / "metrics.json").read_text())["run"]["outcome"] == "ok"
    assert len(find_probabilities(tmp_path / "probs").files) == 8

    second = _runtime(*args)
    _wait_for(second, "[1/8]")
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=60)
    # What the killed run leaves says nothing of "ok": no metrics.json, no submission.zip.
    assert not (out / "metrics.json").exists() and not (out / "submission.zip").exists()
    leftovers = list(out.glob(".submission-masks-*"))
    assert leftovers and any(leftovers[0].iterdir())
    # The first run's .npy files are still there, but never pass for the killed run's.
    with pytest.raises(InputError, match="no probabilities.json"):
        find_probabilities(tmp_path / "probs")

    third = _runtime(*args)
    lines = _wait_for(third, "removed")
    assert third.wait(timeout=600) == 0
    assert not any(path.exists() for path in leftovers)
    assert any("temporary masks of an interrupted run" in line for line in lines)


def test_a_killed_tune_leaves_no_postprocess_json_for_predict(
    sample_root: Path, tmp_path: Path
) -> None:
    label_file = next((sample_root / "train_labels").glob("*.tif"))
    labels = tifffile.imread(label_file)
    probs = tmp_path / "probs"
    probs.mkdir()
    save_probability(probs / f"{label_file.stem}.npy", encode((labels == 1) * 0.8, "uint8"))
    write_manifest(probs, "uint8", {label_file.stem: labels.shape}, {})
    out = tmp_path / "tuned"
    out.mkdir()
    (out / "postprocess.json").write_text(
        json.dumps({"format": "kaggle-offline-postprocess", "format_version": 1,
                    "settings": {"threshold": 0.3}, "probability_encoding": "uint8"})
    )  # fmt: skip
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"thresholds": [i / 100 for i in range(1, 100)],
                                "min_component_voxels": list(range(0, 40))}))  # fmt: skip
    process = _runtime("tune", str(probs), str(sample_root), "--grid", str(grid), "-o",
                       str(out), "--jobs", "1", "--no-progress")  # fmt: skip
    _wait_for(process, "postprocess.json, left by an earlier run")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (out / "postprocess.json").exists()
    assert main(["predict", str(sample_root), "--postprocess", str(out / "postprocess.json"),
                 "-o", str(tmp_path / "s.zip")]) == 2  # fmt: skip


@pytest.mark.slow
def test_sigterm_writes_metrics_and_removes_temporary_folders(
    slow_root: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    probs = tmp_path / "probs"
    process = _runtime(
        "predict", str(slow_root), "--model", str(tiny_model), "--device", "cpu",
        "--no-progress", "-o", str(out / "submission.zip"), "--save-probabilities", str(probs),
    )  # fmt: skip
    _wait_for(process, "[1/8]")
    os.kill(process.pid, signal.SIGTERM)
    rest = process.stderr.read() if process.stderr else ""
    assert process.wait(timeout=120) == 143
    assert "error: terminated by SIGTERM" in rest and "Traceback" not in rest
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["outcome"] == "terminated" and "SIGTERM" in run["error"]
    assert not list(out.glob(".submission-masks-*")) and not (out / "submission.zip").exists()


# --- output places: checked first, a full disk named ---------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (root only; skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> None:
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_outputs_that_cannot_fit_are_refused_before_any_work(
    sample_root: Path, tiny_model: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small", "8k") as small:  # 2 volumes of 16x24x24: 18 KiB
        options = RunRequest(
            models=(str(tiny_model),),
            device="cpu",
            progress_bar=False,
            save_probabilities=small / "probs",
        )
        with pytest.raises(OutputError) as refused:
            predict(sample_root, tmp_path / "submission.zip", options)
        message = str(refused.value)
        assert message.startswith("--save-probabilities ") and "not enough free space" in message
        assert "will be written" in message and "\n" not in message
        assert not (tmp_path / "metrics.json").exists()  # refused before the run began


def test_a_disk_filling_during_the_run_is_named_and_fails_the_save(
    sample_root: Path, tiny_model: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small", "2m") as small:
        options = RunRequest(
            models=(str(tiny_model),),
            device="cpu",
            progress_bar=False,
            save_probabilities=small / "probs",
        )
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            if line.startswith("model: "):  # after the checks, before any volume: fill it
                _fill(small)

        with pytest.raises(OutputError) as failed:
            predict(sample_root, tmp_path / "out" / "submission.zip", options, log=log)
        assert str(failed.value).startswith(f"no space left on {small / 'probs'}")
        assert "requested and" not in str(failed.value)
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics["run"]["outcome"] == "failed" and "no space left" in metrics["run"]["error"]
        assert not (tmp_path / "out" / "submission.zip").exists()


def test_a_full_disk_under_a_numpy_write_says_no_space_left(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as small:
        with pytest.raises(OutputError) as failed:
            save_probability(small / "v.npy", np.zeros((64, 64, 64), dtype=np.uint8))
        assert str(failed.value) == f"no space left on {small} (writing v.npy)"
        assert [p.name for p in small.iterdir()] == []  # no temporary left behind


def test_score_json_under_a_file_is_refused_before_scoring(
    sample_root: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    labels = sample_root / "train_labels"
    argv = ["score", str(labels), str(labels), "--json", str(blocker / "score.json")]
    assert main(argv) == 2


# --- more sizes and kinds of file that set a cost ------------------------------------------------
def test_a_pipe_named_like_a_mask_is_refused_not_read_forever(
    sample_root: Path, tmp_path: Path
) -> None:
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for label in (sample_root / "train_labels").glob("*.tif"):
        os.mkfifo(predictions / label.name)  # nobody ever writes: open() would block for good
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "score",
            str(predictions),
            str(sample_root),
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        check=False,
    )
    assert done.returncode == 2 and "not a regular file" in done.stderr
    assert "Traceback" not in done.stderr and time.perf_counter() - started < 120
