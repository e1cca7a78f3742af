"""``predict``: volumes in, validated submission.zip and metrics.json out, whatever goes wrong.

Most tests use a tiny, untrained but real U-Net (fast on two CPU cores): they check the pipeline,
not the segmentation quality. The demo-model test checks that too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import runtime.volumes.tiff
from runtime.contract.errors import InputError, OutputError, SubmissionError
from runtime.contract.settings import RunRequest
from runtime.contract.tta import IDENTITY, PRESETS
from runtime.inference.engine import InferenceOptions, Segmenter, VolumeResult
from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig
from runtime.pipeline import predict
from runtime.pipeline.models import load_model
from runtime.samples.sample import write_sample
from runtime.volumes.scoring import dice_score
from runtime.volumes.submission import partial_path, validate_submission
from runtime.volumes.tiff import read_volume
from tests.test_volumes import PROJECT_ROOT, run_with_hidden_modules

SMALL = (16, 24, 24)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-level U-Net with random weights, saved in the model-folder format."""
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
                "foreground_class": None,
                "inference": {"patch_size": [16, 16, 16], "overlap": 0.25, "threshold": 0.5},
            }
        )
    )
    return folder


def _options(model: Path, **changes: object) -> RunRequest:
    defaults: dict[str, object] = {"models": (str(model),), "device": "cpu", "progress_bar": False}
    values = {**defaults, **changes}
    if isinstance(values["models"], list):
        values["models"] = tuple(values["models"])
    return RunRequest(**values)  # type: ignore[arg-type]


def _csv_ids(root: Path) -> list[str]:
    return [line.split(",")[0] for line in (root / "test.csv").read_text().splitlines()[1:]]


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


# --- the happy path ------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_model_segments_a_sample_into_a_valid_submission(tmp_path: Path) -> None:
    shape = (64, 64, 64)  # the demo's recommended patch: one window per volume on the CPU
    root = write_sample(tmp_path / "data", n=2, shape=shape, seed=11)
    out = tmp_path / "out" / "submission.zip"
    log = _Lines()
    report = predict(root, out, _options(Path("demo"), models=["demo"]), log=log)

    ids = _csv_ids(root)
    assert validate_submission(out, dict.fromkeys(ids, shape)) == []
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(f"{i}.tif" for i in ids)
        archive.extractall(tmp_path / "unzipped")
    engine = Segmenter(load_model("demo"), InferenceOptions(device="cpu"), log=_Lines())
    scores = []
    for volume_id in ids:
        mask = read_volume(tmp_path / "unzipped" / f"{volume_id}.tif")
        image = read_volume(root / "test_images" / f"{volume_id}.tif")
        # The pipeline hands over exactly what the engine computes (no post-processing asked).
        assert np.array_equal(mask, engine.segment(image).mask), volume_id
        scores.append(dice_score(mask, read_volume(root / "train_labels" / f"{volume_id}.tif")))
    assert min(scores) >= 0.9, scores

    metrics = _metrics(out.with_name("metrics.json"))
    assert metrics["run"]["submission_sha256"] == report.sha256
    assert [v["id"] for v in metrics["volumes"]] == ids
    assert sum(line.startswith("[") for line in log.lines) == 2  # a progress line per volume


def test_metrics_record_every_stage_and_the_run(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=1)
    out = tmp_path / "submission.zip"
    report = predict(root, out, _options(tiny_model, preview_dir=tmp_path / "png"), log=_Lines())
    metrics = _metrics(tmp_path / "metrics.json")

    run = metrics["run"]
    assert run["outcome"] == "ok" and run["submission_sha256"] == report.sha256
    assert run["peak_host_rss_bytes"] > 10_000_000 and run["peak_gpu_memory_bytes"] == {}
    for name in ("torch", "tifffile", "numpy", "imagecodecs", "cudnn"):
        assert name in run["environment"]
    assert run["environment"]["torch"] == torch.__version__.split("+")[0] or run["environment"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert {d["name"] for d in run["decisions"]} >= {"device", "precision", "compile"}
    (model,) = run["options"]["models"]  # the overlap was taken from the model's recommendation
    assert model["overlap"] == 0.25 and model["overlap_source"].startswith("recommended by")
    assert model["format"] == "kaggle-offline-unet" and run["options"]["mask"]["threshold"] == 0.5
    for volume in metrics["volumes"]:
        assert volume["status"] == "ok" and volume["shape"] == list(SMALL)
        assert volume["device"] == "cpu" and volume["precision"] == "fp32"
        assert volume["compiled"] is False and volume["tta"] == ["identity"]
        assert volume["infer_seconds"] > 0 and volume["errors"] == []
        assert 0.0 <= volume["foreground_fraction"] <= 1.0
        assert volume["compression"] == "LZW"
        png = tmp_path / "png" / f"{volume['id']}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp workdir gone


@pytest.mark.slow
def test_post_processing_options_reach_the_masks(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=2)
    workdir = tmp_path / "masks"
    options = _options(
        tiny_model,
        workdir=workdir,
        min_component_voxels=10**9,  # bigger than any volume
        progress_bar=True,
    )
    log = _Lines()
    predict(root, tmp_path / "submission.zip", options, log=log)
    (mask_file,) = workdir.glob("*.tif")  # an explicit workdir keeps the masks
    assert read_volume(mask_file).sum() == 0
    assert "1/1" in capsys.readouterr().err  # the tqdm bar
    assert any(line.startswith("[1/1]") for line in log.lines)  # and the line per volume


@pytest.mark.slow
def test_several_models_make_an_ensemble(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=12)
    options = _options(
        tiny_model,
        models=[str(tiny_model), str(tiny_model / "config.json")],
        ensemble_weights=(2.0, 1.0),
    )
    log = _Lines()
    predict(root, tmp_path / "submission.zip", options, log=log)
    single = tmp_path / "single"
    predict(root, single / "submission.zip", _options(tiny_model), log=_Lines())
    # Two copies of one model, averaged, segment exactly as the model alone does.
    with (
        zipfile.ZipFile(tmp_path / "submission.zip") as a,
        zipfile.ZipFile(single / "submission.zip") as b,
    ):
        assert [a.read(n) for n in a.namelist()] == [b.read(n) for n in b.namelist()]


def _copy_with_recommendation(model: Path, target: Path, **inference: object) -> Path:
    """The model folder again, its config.json recommending other inference settings."""
    import shutil

    shutil.copytree(model, target)
    config = json.loads((target / "config.json").read_text())
    config["inference"] = {**config["inference"], **inference}
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_ensemble_members_recommendations_are_honoured_or_refused(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=14)
    first = _copy_with_recommendation(tiny_model, tmp_path / "m1", threshold=0.3, overlap=0.25)
    second = _copy_with_recommendation(tiny_model, tmp_path / "m2", threshold=0.3, overlap=0.5)
    log = _Lines()
    predict(root, tmp_path / "a.zip", _options(first, models=[first, second]), log=log)
    options = _metrics(tmp_path / "metrics.json")["run"]["options"]
    assert [m["overlap"] for m in options["models"]] == [0.25, 0.5]  # each member its own
    assert options["mask"]["threshold"] == 0.3
    assert "threshold = 0.3 (recommended by m1, m2)" in log.lines
    assert "overlap = 0.5 for m2 (recommended by the model)" in log.lines

    third = _copy_with_recommendation(tiny_model, tmp_path / "m3", threshold=0.7)
    with pytest.raises(InputError) as refused:
        predict(root, tmp_path / "b.zip", _options(first, models=[first, third]), log=_Lines())
    assert str(refused.value).startswith(
        "the models recommend different thresholds (m1 0.3, m3 0.7)"
    )
    assert not (tmp_path / "b.zip").exists()
    predict(
        root,
        tmp_path / "c.zip",
        _options(first, models=[first, third], threshold=0.5),
        log=_Lines(),
    )


@pytest.mark.parametrize(
    "option", [["--spacing", "1,1,1"], ["--folds", "0"], ["--checkpoint", "best"]]
)
def test_nnunet_options_for_another_model_are_refused_in_one_line(
    tiny_model: Path, tmp_path: Path, option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.__main__ import main

    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=15)
    out = tmp_path / "submission.zip"
    status = main(["predict", str(root), "--model", str(tiny_model), "--device", "cpu",
                   "-o", str(out), "--no-progress", *option])  # fmt: skip
    assert status == 2 and not out.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line == (
        f"error: {option[0]} concerns nnU-Net trained-model folders only, and "
        f"{tiny_model.name} is not one"
    )


# --- failures ------------------------------------------------------------------------------------
def _with_pixels_cut_off(source: Path, target: Path) -> None:
    """An uncompressed copy of ``source`` missing its last bytes: its page headers (written
    before the pixels by Pillow) still give the shape, its pixels are incomplete."""
    pages = [Image.fromarray(plane) for plane in read_volume(source)]
    pages[0].save(target, save_all=True, append_images=pages[1:])
    target.write_bytes(target.read_bytes()[:-300])


def _root_with_bad_volumes(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A sample root plus one volume of each kind of trouble, all listed in test.csv."""
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=3)
    images = root / "test_images"
    good = _csv_ids(root)
    _with_pixels_cut_off(images / f"{good[0]}.tif", images / "501.tif")
    tifffile.imwrite(images / "502.tif", np.zeros((24, 24), np.uint8))  # 2D
    (images / "503.tif").write_bytes(b"")  # empty
    (images / "504.tif").write_text("<html>not a volume</html>")  # not a TIFF
    with open(root / "test.csv", "a") as handle:
        handle.write("501,1\n502,1\n503,1\n504,1\n505,1\n")  # 505 has no file
    kinds = {"501": "truncated", "502": "2D", "503": "empty", "504": "not a TIFF", "505": "no file"}
    return root, kinds


def test_bad_volumes_never_stop_the_others_and_are_each_named(
    tiny_model: Path, tmp_path: Path
) -> None:
    root, kinds = _root_with_bad_volumes(tmp_path)
    out = tmp_path / "out" / "submission.zip"
    log = _Lines()
    with pytest.raises(SubmissionError) as error:
        predict(root, out, _options(tiny_model), log=log)

    message = str(error.value)
    assert "\n" not in message
    assert "no mask for 4 id(s): 502, 503, 504, 505" in message
    assert not out.exists()  # a zip missing ids would score nothing: never under the real name
    partial = partial_path(out)
    assert str(partial) in message

    good = _csv_ids(root)[:2]
    shapes = {i: SMALL for i in [*good, "501"]}
    assert validate_submission(partial, shapes) == []
    with zipfile.ZipFile(partial) as archive:
        archive.extractall(tmp_path / "partial")
    assert read_volume(tmp_path / "partial" / "501.tif").sum() == 0  # an all-zero stand-in

    metrics = _metrics(out.with_name("metrics.json"))
    by_id = {v["id"]: v for v in metrics["volumes"]}
    assert [by_id[i]["status"] for i in good] == ["ok", "ok"]
    assert by_id["501"]["status"] == "zero-mask" and by_id["501"]["shape"] == list(SMALL)
    for volume_id, kind in kinds.items():
        (problem,) = by_id[volume_id]["errors"]
        assert kind in problem and volume_id in problem, problem
        assert any(volume_id in line and line.startswith("error: ") for line in log.lines)
    assert metrics["run"]["outcome"] == "failed" and "no mask for 4" in metrics["run"]["error"]
    assert metrics["run"]["partial_zip"] == str(partial)


def test_allow_missing_writes_the_submission_without_the_unknown_shapes(
    tiny_model: Path, tmp_path: Path
) -> None:
    root, _ = _root_with_bad_volumes(tmp_path)
    out = tmp_path / "submission.zip"
    report = predict(root, out, _options(tiny_model, allow_missing=True), log=_Lines())
    good = _csv_ids(root)[:2]
    assert validate_submission(out, {i: SMALL for i in [*good, "501"]}) == []
    assert len(report.failed) == 5
    assert _metrics(tmp_path / "metrics.json")["run"]["outcome"] == "ok-with-stand-ins"


def test_strict_fails_on_missing_ids_before_any_work(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=4)
    with open(root / "test.csv", "a") as handle:
        handle.write("777,1\n888,1\n")
    with pytest.raises(InputError) as error:
        predict(root, tmp_path / "submission.zip", _options(tiny_model, strict=True), log=_Lines())
    assert "no file for 2 id(s)" in str(error.value) and "777, 888" in str(error.value)
    assert not list(tmp_path.glob("*.zip"))
    metrics = _metrics(tmp_path / "metrics.json")
    assert metrics["run"]["error"] == str(error.value)
    assert metrics["run"]["decisions"] == []  # no model was even loaded
    assert {v["id"]: v["status"] for v in metrics["volumes"]}["777"] == "no-mask"


@pytest.mark.slow
def test_strict_turns_a_stand_in_into_a_failure(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=5)
    first = _csv_ids(root)[0]
    path = root / "test_images" / f"{first}.tif"
    _with_pixels_cut_off(path, path)
    out = tmp_path / "submission.zip"
    with pytest.raises(SubmissionError) as error:
        predict(root, out, _options(tiny_model, strict=True), log=_Lines())
    assert f"--strict: 1 volume(s) failed: {first}" in str(error.value)
    assert not out.exists() and partial_path(out).exists()


class _FailingSegmenter(Segmenter):
    """The real engine, with one volume's result replaced by a simulated CUDA failure."""

    fail_id = ""

    def segment_many(
        self, items: Iterable[tuple[str, np.ndarray]], total: int | None = None, **options: Any
    ) -> Iterator[tuple[str, VolumeResult | Exception]]:
        for name, outcome in super().segment_many(items, total, **options):
            if name == self.fail_id:
                yield name, RuntimeError("CUDA error: an illegal memory access (simulated)")
            else:
                yield name, outcome


@pytest.mark.slow
def test_an_engine_failure_gets_an_all_zero_mask_and_is_recorded(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=6)
    failing, fine = _csv_ids(root)
    segmenter = _FailingSegmenter(load_model(tiny_model), InferenceOptions(device="cpu"))
    segmenter.fail_id = failing
    out = tmp_path / "submission.zip"
    report = predict(root, out, _options(tiny_model), log=_Lines(), segmenter=segmenter)

    assert validate_submission(out, {failing: SMALL, fine: SMALL}) == []
    with zipfile.ZipFile(out) as archive:
        archive.extractall(tmp_path / "unzipped")
    assert read_volume(tmp_path / "unzipped" / f"{failing}.tif").sum() == 0
    (record,) = report.failed
    assert record.id == failing and record.status == "zero-mask"
    assert "segmentation failed: CUDA error" in record.errors[0]


# --- overlap of reading, computing and writing ---------------------------------------------------
@pytest.mark.slow
def test_reading_and_writing_run_beside_the_engine(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_sample(tmp_path / "data", n=3, shape=SMALL, seed=7)
    events: list[tuple[str, str, str]] = []  # (stage, volume id, thread name)
    lock = threading.Lock()
    real_read, real_write = (
        runtime.volumes.tiff.read_volume_with_header,
        runtime.volumes.tiff.write_mask,
    )

    def recording_read(source, *, name=None):  # type: ignore[no-untyped-def]
        result = real_read(source, name=name)
        if isinstance(source, str | Path):  # not the zip members read back by validation
            with lock:
                events.append(("read", Path(source).stem, threading.current_thread().name))
        return result

    def recording_write(path, mask):  # type: ignore[no-untyped-def]
        real_write(path, mask)
        with lock:
            events.append(("write", Path(path).stem, threading.current_thread().name))

    monkeypatch.setattr(runtime.volumes.tiff, "read_volume_with_header", recording_read)
    monkeypatch.setattr(runtime.volumes.tiff, "write_mask", recording_write)

    class _Recording(Segmenter):
        def segment_many(self, items, total=None, **options):  # type: ignore[no-untyped-def]
            for name, outcome in super().segment_many(items, total, **options):
                with lock:
                    events.append(("result", name, threading.current_thread().name))
                yield name, outcome

    segmenter = _Recording(load_model(tiny_model), InferenceOptions(device="cpu"))
    predict(
        root, tmp_path / "submission.zip", _options(tiny_model), log=_Lines(), segmenter=segmenter
    )

    ids = _csv_ids(root)
    threads = {
        stage: {t for s, _, t in events if s == stage} for stage in ("read", "result", "write")
    }
    assert threads["read"] == {"predict-reader"} and threads["write"] == {"predict-writer"}
    assert threads["result"] == {threading.current_thread().name}
    order = [(stage, volume_id) for stage, volume_id, _ in events]
    # The second volume is read before the first one's result arrives: reading runs ahead.
    assert order.index(("read", ids[1])) < order.index(("result", ids[0]))
    assert [v for s, v in order if s == "write"] == ids


# --- the command line ----------------------------------------------------------------------------
def _cli(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "predict", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_command_line_writes_submission_metrics_previews_and_masks(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=8)
    out = tmp_path / "out" / "sub.zip"
    completed = _cli(
        str(root),
        "--model",
        str(tiny_model),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--tta",
        "0,2",
        "--threshold",
        "0.4",
        "--closing-radius",
        "1",
        "--fill-holes",
        "--preview",
        str(tmp_path / "png"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--workdir",
        str(tmp_path / "masks"),
        "--no-progress",
    )
    assert completed.returncode == 0, completed.stderr
    ids = _csv_ids(root)
    assert validate_submission(out, {i: SMALL for i in ids}) == []
    assert sorted(p.stem for p in (tmp_path / "png").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (tmp_path / "masks").glob("*.tif")) == sorted(ids)
    metrics = _metrics(tmp_path / "m.json")
    assert metrics["run"]["options"]["mask"]["threshold"] == 0.4
    assert metrics["run"]["options"]["postprocess"]["closing_radius"] == 1
    assert all(v["tta"] == ["identity", "flip_z", "flip_x", "flip_zx"] for v in metrics["volumes"])
    assert f"wrote {out}" in completed.stderr
    assert sum(line.startswith("[") for line in completed.stderr.splitlines()) == 2


@pytest.mark.slow
def test_an_output_folder_gets_submission_zip_inside(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=10)
    for target in (f"{tmp_path / 'new'}/", str(tmp_path / "data")):  # new with a slash; existing
        completed = _cli(str(root), "--model", str(tiny_model), "-o", target, "--no-progress")
        assert completed.returncode == 0, completed.stderr
        written = Path(target) / "submission.zip"
        assert validate_submission(written, {i: SMALL for i in _csv_ids(root)}) == []
        assert (Path(target) / "metrics.json").is_file()


@pytest.mark.slow
def test_command_line_errors_are_one_line(tiny_model: Path, tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=9)
    with open(root / "test.csv", "a") as handle:
        handle.write("4242,1\n")
    completed = _cli(
        str(root), "--model", str(tiny_model), "-o", str(tmp_path / "s.zip"), "--strict"
    )
    assert completed.returncode == 2
    last = completed.stderr.splitlines()[-1]  # after the progress notes: the error, one line
    assert last.startswith("error: no file for 1 id(s)") and last.endswith(": 4242")
    assert "Traceback" not in completed.stderr

    bad = _cli(str(root), "--tta", "0,5")
    assert bad.returncode == 2 and "mirror axes must be distinct among 0, 1, 2" in bad.stderr


@pytest.mark.slow
def test_predict_without_imagecodecs_reads_the_lzw_inputs_with_pillow(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=10)
    out = tmp_path / "submission.zip"
    run_with_hidden_modules(
        {"imagecodecs"},
        f"""
        from runtime.__main__ import main
        code = main(["predict", {str(root)!r}, "--model", {str(tiny_model)!r},
                     "-o", {str(out)!r}, "--device", "cpu", "--no-progress"])
        assert code == 0, code
        """,
        tmp_path,
    )
    ids = _csv_ids(root)
    assert validate_submission(out, {i: SMALL for i in ids}) == []
    metrics = _metrics(tmp_path / "metrics.json")
    assert metrics["run"]["environment"]["imagecodecs"] is None
    assert {v["decoder"] for v in metrics["volumes"]} == {"pillow"}


def test_preview_shows_input_mask_and_overlay_side_by_side(tmp_path: Path) -> None:
    from runtime.volumes.preview import write_preview

    volume = np.zeros((5, 40, 50), np.uint16)
    volume[:, :, 25:] = 1000  # right half bright
    mask = np.zeros(volume.shape, np.uint8)
    mask[2, :20, :] = 1  # top half of the middle slice
    path = write_preview(tmp_path / "p.png", volume, mask)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image)
    scale = 192 // 50  # small slices are enlarged by a whole factor
    assert pixels.shape == (40 * scale, (3 * 50 + 2 * 4) * scale, 3)
    width = (50 + 4) * scale
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 30 * scale].tolist() == [255] * 3
    assert pixels[0, width].tolist() == [255] * 3  # mask panel: on in the top half
    assert pixels[-1, width].tolist() == [0, 0, 0]
    red, green, _ = pixels[0, 2 * width].tolist()  # overlay: reddened where the mask is on
    assert red > green


def test_command_line_values_parse_into_engine_options() -> None:
    import argparse

    from runtime.commands import predict as command

    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(
        [
            "in",
            "--patch-size",
            "96",
            "--tta",
            "all",
            "--time-budget",
            "1h30m",
            "--no-compile",
            "--model",
            "a",
            "--model",
            "b",
            "--ensemble-weights",
            "0.7,0.3",
        ]
    )
    assert args.patch_size == (96, 96, 96) and args.tta == PRESETS["mirror8"]
    assert args.time_budget == 5400.0 and args.compile is False
    assert args.models == ["a", "b"] and args.ensemble_weights == [0.7, 0.3]
    assert parser.parse_args(["in", "--patch-size", "64,128,128"]).patch_size == (64, 128, 128)
    assert parser.parse_args(["in", "--tta", "none"]).tta == (IDENTITY,)
    assert parser.parse_args(["in", "--tta", "rot7"]).tta == PRESETS["rot7"]
    assert parser.parse_args(["in", "--time-budget", "90"]).time_budget == 90.0
    for bad in (
        ["--patch-size", "1,2"],
        ["--tta", "1,1"],
        ["--time-budget", "soon"],
        ["--min-component-voxels", "-3"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["in", *bad])


# --- outputs, earlier runs and one-line errors ---------------------------------------------------
def test_outputs_that_would_overwrite_inputs_or_each_other_are_refused_before_any_work(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=13)
    (volume_id,) = _csv_ids(root)
    images = root / "test_images"
    volume = images / f"{volume_id}.tif"
    before = volume.read_bytes()
    out = tmp_path / "out" / "submission.zip"
    out.parent.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    cases = [
        (volume, {}, f"-o {volume} would overwrite the input {volume}"),
        (out, {"metrics_path": out}, f"-o {out} and --metrics {out} would both write"),
        (out, {"workdir": images}, f"--workdir {images} would overwrite the input {volume}"),
        (tiny_model / "weights.pt", {"models": [str(tiny_model)]}, "would overwrite the input"),
        (out, {"metrics_path": root / "test.csv"}, "would overwrite the input"),
        (out, {"preview_dir": tmp_path / "a-file"}, "is a file, not a folder"),
        (out, {"metrics_path": tmp_path / "out"}, "is a folder, not a file"),
    ]
    for target, changes, expected in cases:
        # A model that does not exist: the check must come before loading anything.
        options = _options(Path("/nonexistent-model"), **changes)
        with pytest.raises(OutputError) as refused:
            predict(root, target, options, log=_Lines())
        assert expected in str(refused.value), str(refused.value)
        assert "\n" not in str(refused.value)
    assert volume.read_bytes() == before and (tiny_model / "weights.pt").stat().st_size > 0
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.zip"))


@pytest.mark.slow
def test_a_failed_run_never_leaves_an_earlier_submission_in_place(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=14)
    out = tmp_path / "submission.zip"
    predict(root, out, _options(tiny_model), log=_Lines())
    earlier = out.read_bytes()
    with open(root / "test.csv", "a") as handle:
        handle.write("4242,1\n")  # now an id has no file: this run cannot write submission.zip
    log = _Lines()
    with pytest.raises(SubmissionError):
        predict(root, out, _options(tiny_model), log=log)
    assert not out.exists() and partial_path(out).exists()
    previous = tmp_path / "submission.previous.zip"
    assert previous.read_bytes() == earlier
    assert f"moved the earlier {out} to {previous}" in "\n".join(log.lines)
    assert _metrics(tmp_path / "metrics.json")["run"]["previous_submission"] == str(previous)
    # The next good run removes the stale partial zip, and says so.
    (root / "test.csv").write_text((root / "test.csv").read_text().replace("4242,1\n", ""))
    log = _Lines()
    predict(root, out, _options(tiny_model), log=log)
    assert out.exists() and not partial_path(out).exists()
    assert f"removed {partial_path(out)}, left by an earlier run" in log.lines


def _read_only_folder_reason() -> str | None:
    import shutil

    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if probe.returncode == 0 else f"no mount namespaces here: {probe.stderr.strip()}"


@pytest.mark.filterwarnings("ignore:`torch.jit.script.*deprecated:DeprecationWarning")
@pytest.mark.slow
def test_unwritable_outputs_and_a_failing_warm_up_are_one_line_errors(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.__main__ import main

    def last_error(*args: str) -> str:
        assert main(["predict", *args, "--no-progress"]) == 2
        return capsys.readouterr().err.splitlines()[-1]  # a traceback would end otherwise

    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=15)
    (tmp_path / "a-file").write_text("x")
    assert last_error(str(root), "--model", str(tiny_model), "-o", f"{tmp_path}/a-file/s.zip") == (
        f"error: -o {tmp_path}/a-file/s.zip: cannot be written, {tmp_path}/a-file is a file, "
        "not a folder"
    )
    torch.jit.script(_RaisesInForward()).save(str(tmp_path / "raises.ts"))
    last = last_error(str(root), "--model", str(tmp_path / "raises.ts"), "-o", f"{tmp_path}/s.zip")
    assert last.startswith("error: model raises: its warm-up forward of a 2-window batch of")
    assert "failed on cpu" in last and "the network is broken" in last

    reason = _read_only_folder_reason()
    if reason is not None:
        pytest.skip(f"a read-only folder needs a mount namespace: {reason}")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    code = (
        "import sys; from runtime.__main__ import main; "
        f"common = ['predict', {str(root)!r}, '--model', {str(tiny_model)!r}]; "
        f"main([*common, '-o', '{read_only}/s.zip']); "
        f"main([*common, '-o', '{tmp_path}/s.zip', '--workdir', '{read_only}/masks'])"
    )
    script = f'mount -t tmpfs -o ro tmpfs {read_only} && {sys.executable} -c "{code}"'
    completed = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: -o {read_only}/s.zip: cannot write in {read_only} (Read-only file system); "
        "choose a writable place (on Kaggle, /kaggle/working)",
        f"error: --workdir {read_only}/masks: cannot write in {read_only}/masks (Read-only file "
        "system); choose a writable place (on Kaggle, /kaggle/working)",
    ]


class _RaisesInForward(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("the network is broken")
        return x


def test_predict_without_torch_says_what_is_missing_and_how_to_get_it(tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=1, shape=SMALL, seed=16)
    code = f"""
        import sys
        class _NoTorch:  # what a Python without torch looks like to import
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _NoTorch())
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from runtime.__main__ import main
        sys.exit(main(["predict", {str(root)!r}, "-o", {str(tmp_path / "s.zip")!r}]))
    """
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line.startswith("error: `runtime predict` needs torch, which is not installed")
    assert "Kaggle's images have it" in line and "pip install torch" in line


# --- one bad volume never costs the others, whatever goes wrong ----------------------------------
def _lying_tiff(path: Path, side: int = 1 << 20) -> None:
    """A small LZW stack whose header claims pages of side x side (3 TiB at the default)."""
    data = (np.random.default_rng(0).random((3, 16, 16)) * 255).astype(np.uint8)
    tifffile.imwrite(path, data, compression="lzw", photometric="minisblack", metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
                page.tags[tag].overwrite(side)


@pytest.mark.slow
def test_a_header_that_lies_about_its_size_costs_only_its_own_volume(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=17)
    good = _csv_ids(root)
    _lying_tiff(root / "test_images" / "666.tif")
    with open(root / "test.csv", "a") as handle:
        handle.write("666,1\n")
    out = tmp_path / "submission.zip"
    with pytest.raises(SubmissionError, match=r"no mask for 1 id\(s\): 666"):
        predict(root, out, _options(tiny_model), log=_Lines())
    assert validate_submission(partial_path(out), dict.fromkeys(good, SMALL)) == []
    by_id = {v["id"]: v for v in _metrics(tmp_path / "metrics.json")["volumes"]}
    assert by_id["666"]["status"] == "no-mask" and by_id["666"]["shape"] is None
    (error,) = by_id["666"]["errors"]
    assert "corrupt header: it claims 3x1048576x1048576 uint8 voxels (3.0 TiB" in error
    assert "at LZW's best ratio" in error


@pytest.mark.slow
def test_memory_and_other_errors_while_reading_or_writing_stay_with_their_volume(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_sample(tmp_path / "data", n=4, shape=SMALL, seed=18)
    short, odd, unwritable, fine = _csv_ids(root)
    real_read, real_write = (
        runtime.volumes.tiff.read_volume_with_header,
        runtime.volumes.tiff.write_mask,
    )

    def read(source, *, name=None):  # type: ignore[no-untyped-def]
        if isinstance(source, Path) and source.stem == short:
            raise MemoryError("simulated")
        if isinstance(source, Path) and source.stem == odd:
            raise RuntimeError("simulated: a bug in a decoder")
        return real_read(source, name=name)

    def write(path, mask):  # type: ignore[no-untyped-def]
        if Path(path).stem == unwritable:
            raise MemoryError("simulated")
        real_write(path, mask)

    monkeypatch.setattr(runtime.volumes.tiff, "read_volume_with_header", read)
    monkeypatch.setattr(runtime.volumes.tiff, "write_mask", write)
    out = tmp_path / "submission.zip"
    with pytest.raises(SubmissionError, match=rf"no mask for 1 id\(s\): {unwritable}"):
        predict(root, out, _options(tiny_model), log=_Lines())
    by_id = {v["id"]: v for v in _metrics(tmp_path / "metrics.json")["volumes"]}
    # A MemoryError while reading keeps the promised all-zero stand-in (the header is cheap).
    assert by_id[short]["status"] == "zero-mask" and by_id[short]["shape"] == list(SMALL)
    assert by_id[short]["errors"] == [
        f"{root / 'test_images' / short}.tif: cannot read it: out of host memory"
    ]
    assert by_id[odd]["status"] == "zero-mask"
    assert "cannot read it: RuntimeError: simulated: a bug in a decoder" in by_id[odd]["errors"][0]
    assert by_id[unwritable]["status"] == "no-mask"
    assert by_id[unwritable]["errors"] == [f"{unwritable}: no mask written: out of host memory"]
    assert by_id[fine]["status"] == "ok"
    shapes = {short: SMALL, odd: SMALL, fine: SMALL}
    assert validate_submission(partial_path(out), shapes) == []


@pytest.mark.slow
def test_bool_and_complex_volumes_get_masks(tiny_model: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(19)
    tifffile.imwrite(images / "1.tif", rng.random(SMALL) > 0.5, photometric="minisblack")
    tifffile.imwrite(images / "2.tif", rng.random(SMALL).astype(np.complex64))
    out = tmp_path / "submission.zip"
    report = predict(images, out, _options(tiny_model), log=_Lines())
    assert validate_submission(out, {"1": SMALL, "2": SMALL}) == []
    statuses = {record.id: record.status for record in report.volumes}
    assert statuses == {"1": "ok", "2": "zero-mask"}  # bool voxels are segmented
    (problem,) = report.volumes[1].errors
    assert "unsupported voxel type complex64" in problem


@pytest.mark.slow
def test_an_id_that_cannot_name_a_zip_member_costs_only_its_volume(
    tiny_model: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    volume = (np.random.default_rng(20).random(SMALL) * 255).astype(np.uint8)
    for name in ("1.tif", "odd\\name.tif"):
        tifffile.imwrite(images / name, volume, photometric="minisblack")
    out = tmp_path / "submission.zip"
    with pytest.raises(SubmissionError, match=r"no mask for 1 id\(s\): odd\\name"):
        predict(images, out, _options(tiny_model), log=_Lines())
    assert validate_submission(partial_path(out), {"1": SMALL}) == []  # the zip's check holds
    report = predict(images, out, _options(tiny_model, allow_missing=True), log=_Lines())
    (failed,) = report.failed
    assert failed.status == "no-mask" and "holds a path separator" in failed.errors[0]
    assert validate_submission(out, {"1": SMALL}) == []


@pytest.mark.slow
def test_nan_voxels_are_warned_and_recorded_and_never_erase_the_mask(
    tiny_model: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    clean = np.random.default_rng(21).normal(127, 40, SMALL).astype(np.float32)
    dirty = clean.copy()
    dirty[8, 12, 12] = np.nan
    tifffile.imwrite(images / "1.tif", dirty, photometric="minisblack")
    filled = clean.copy()
    filled[8, 12, 12] = 127.5  # the tiny model's normalization mean
    log = _Lines()
    predict(
        images, tmp_path / "submission.zip", _options(tiny_model, workdir=tmp_path / "m"), log=log
    )
    engine = Segmenter(load_model(tiny_model), InferenceOptions(device="cpu"), log=_Lines())
    np.testing.assert_array_equal(
        read_volume(tmp_path / "m" / "1.tif"), engine.segment(filled).mask
    )
    (volume,) = _metrics(tmp_path / "metrics.json")["volumes"]
    assert volume["status"] == "ok" and volume["nonfinite_voxels"] == 1
    assert any("replaced by 127.5" in note for note in volume["notes"])
    assert f"warning: {images / '1.tif'}: 1 NaN or inf voxel(s) replaced" in "\n".join(log.lines)


@pytest.mark.slow
def test_a_time_budget_counts_from_the_start_of_predict_and_warns_without_tta(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.inference.models

    real_load = runtime.inference.models.load_model

    def slow_load(spec, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(2.0)  # a big model takes a while to load: the budget counts it
        return real_load(spec, **kwargs)

    monkeypatch.setattr(runtime.inference.models, "load_model", slow_load)
    root = write_sample(tmp_path / "data", n=2, shape=SMALL, seed=22)
    options = _options(tiny_model, time_budget=0.5)
    log = _Lines()
    predict(root, tmp_path / "submission.zip", options, log=log)
    warnings = [line for line in log.lines if line.startswith("warning: time budget: ")]
    assert len(warnings) == 1 and "there is no TTA to cut" in warnings[0]
    used = float(warnings[0].split("time budget: ")[1].split(" s used")[0])
    assert used >= 2  # the 2 s of loading (and the warm-ups) are in the count
    decisions = _metrics(tmp_path / "metrics.json")["run"]["decisions"]
    assert {"name": "time_budget", "value": "0.5 s, warning only"}.items() <= next(
        d for d in decisions if d["name"] == "time_budget"
    ).items()
