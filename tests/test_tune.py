"""Saved probabilities, mask settings, ``score``, ``tune`` and ``fuse``, and the loop through
``predict --postprocess`` that must reproduce what ``tune`` reported."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from runtime.__main__ import main
from runtime.contract.errors import InputError
from runtime.contract.settings import EnsembleSettings
from runtime.samples.sample import write_sample
from runtime.volumes.evaluation import score_predictions
from runtime.volumes.mask_settings import MaskSettings, apply_settings, read_postprocess_file
from runtime.volumes.postprocess import PostprocessOptions
from runtime.volumes.probability import (
    MANIFEST_NAME,
    encode,
    find_probabilities,
    fuse,
    load_probability,
    save_probability,
    write_manifest,
)
from runtime.volumes.tuning import grid_from_file, tune

SHAPE = (20, 24, 24)


def _labels(shape=SHAPE) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[6, 2:-2, 2:-2] = 1
    labels[13, 2:-2, 2:-2] = 1
    labels[:, :, -2:] = 2  # an ignored strip
    return labels


def _write_folder(folder: Path, volumes: dict[str, np.ndarray]) -> Path:
    """Masks, or labels (with their 2s), as multipage TIFFs."""
    folder.mkdir(parents=True, exist_ok=True)
    for volume_id, volume in volumes.items():
        tifffile.imwrite(folder / f"{volume_id}.tif", volume)
    return folder


# --- mask settings ---------------------------------------------------------------------------
def test_uint8_thresholds_compare_levels_exactly() -> None:
    stored = np.array([50, 51, 52], dtype=np.uint8).reshape(1, 1, 3)  # 51 / 255 == 0.2
    mask, threshold = apply_settings(stored, "uint8", MaskSettings(threshold=0.2))
    assert threshold == 0.2 and mask.ravel().tolist() == [0, 0, 1]
    decoded = stored.astype(np.float32) / 255
    same, _ = apply_settings(decoded, "float32", MaskSettings(threshold=0.2))
    assert same.ravel().tolist() == [0, 0, 1]


def test_hysteresis_keeps_faint_parts_touching_a_seed_only() -> None:
    probability = np.zeros((1, 1, 9), dtype=np.float32)
    probability[0, 0, :4] = [0.4, 0.9, 0.4, 0.4]  # a faint stretch with a confident voxel
    probability[0, 0, 6:8] = 0.45  # faint only
    mask, _ = apply_settings(
        probability, "float32", MaskSettings(threshold=0.3, hysteresis_high=0.8)
    )
    assert mask.ravel().tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_the_per_volume_rule_picks_the_threshold_giving_the_fraction() -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, size=(10, 20, 20), dtype=np.uint8)
    settings = MaskSettings(foreground_fraction=0.1, fraction_bounds=(0.0, 0.99))
    mask, threshold = apply_settings(stored, "uint8", settings)
    assert mask.mean() == pytest.approx(0.1, abs=0.005)
    assert mask.mean() <= 0.1
    bounded, clipped = apply_settings(
        stored, "uint8", MaskSettings(foreground_fraction=0.1, fraction_bounds=(0.05, 0.5))
    )
    assert clipped == 0.5 and bounded.mean() == pytest.approx(0.5, abs=0.02)


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        MaskSettings(threshold=0.6, hysteresis_high=0.5)
    with pytest.raises(ValueError):
        MaskSettings(foreground_fraction=0.1, hysteresis_high=0.9)
    with pytest.raises(InputError, match="unknown setting"):
        MaskSettings.from_dict({"treshold": 0.4})


# --- saved probabilities and fusion ------------------------------------------------------------
def test_saved_probabilities_are_memory_mappable_npy(tmp_path: Path) -> None:
    probability = np.linspace(0, 1, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    stored = encode(probability, "uint8")
    save_probability(tmp_path / "a.npy", stored)
    loaded = load_probability(tmp_path / "a.npy")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.uint8
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), stored)
    assert np.abs(loaded / 255 - probability).max() <= 0.5 / 255 + 1e-7
    assert (tmp_path / "a.npy").stat().st_size == stored.nbytes + 128  # the .npy header
    (tmp_path / "b.npy").write_bytes(b"not numpy")
    with pytest.raises(Exception, match=r"b\.npy: not a readable \.npy"):
        load_probability(tmp_path / "b.npy")


def test_fuse_weights_models_and_checks_their_volumes(tmp_path: Path) -> None:
    for name, value in (("one", 0.2), ("two", 0.8)):
        folder = tmp_path / name
        folder.mkdir()
        save_probability(folder / "v.npy", encode(np.full(SHAPE, value, np.float32), "uint8"))
        write_manifest(folder, "uint8", {"v": SHAPE}, {})
    fused = fuse(
        [tmp_path / "one", tmp_path / "two"], tmp_path / "out", EnsembleSettings((0.75, 0.25))
    )
    value = load_probability(fused.files["v"])
    assert int(value[0, 0, 0]) == round(255 * (0.75 * 51 / 255 + 0.25 * 204 / 255))
    assert find_probabilities(tmp_path / "out").encoding == "uint8"
    save_probability(tmp_path / "two" / "w.npy", encode(np.zeros(SHAPE, np.float32), "uint8"))
    write_manifest(tmp_path / "two", "uint8", {"v": SHAPE, "w": SHAPE}, {})
    with pytest.raises(InputError, match="different volumes"):
        fuse([tmp_path / "one", tmp_path / "two"], tmp_path / "bad", EnsembleSettings((0.5, 0.5)))
    assert (
        main(
            [
                "fuse",
                str(tmp_path / "one"),
                str(tmp_path / "out"),
                "--weights",
                "1,1",
                "--mode",
                "logits",
                "-o",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )


# --- score -------------------------------------------------------------------------------------
def test_score_reads_zips_and_folders_and_labels_every_topo_score_approximate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = _write_folder(tmp_path / "root" / "train_labels", {"a": _labels(), "b": _labels()})
    truth = (_labels() == 1).astype(np.uint8)
    shifted = np.roll(truth, 1, axis=0)
    predictions = _write_folder(tmp_path / "masks", {"a": truth, "b": shifted})
    with zipfile.ZipFile(tmp_path / "submission.zip", "w") as archive:
        for volume_id in ("a", "b"):
            archive.write(predictions / f"{volume_id}.tif", f"{volume_id}.tif")
    assert (
        main(
            [
                "score",
                str(tmp_path / "submission.zip"),
                str(tmp_path / "root"),
                "--json",
                str(tmp_path / "s.json"),
                "--jobs",
                "1",
                "--scorer",
                "local",  # as without topometrics, whether or not it is importable here
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "TopoScore (approximate)" in printed and "TopoScore is approximate" in printed
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["topo_score"] == "approximate" and report["scorer"] == "local"
    scores = {v["id"]: v for v in report["volumes"]}
    assert scores["a"]["score"] == 1.0 and scores["a"]["topo_kind"] == "approximate"
    assert scores["b"]["surface_dice"] == 1.0  # one voxel off is within tolerance 2
    from_folder = score_predictions(predictions, labels, jobs=1, scorer="local")
    assert [v.score for v in from_folder.volumes] == [scores["a"]["score"], scores["b"]["score"]]


def test_score_names_missing_and_misshaped_predictions_in_one_line(tmp_path: Path) -> None:
    labels = _write_folder(tmp_path / "labels", {"a": _labels(), "b": _labels(), "c": _labels()})
    predictions = _write_folder(
        tmp_path / "masks",
        {
            "a": np.zeros(SHAPE, np.uint8),
            "b": np.zeros((20, 24, 23), np.uint8),
            "z": np.zeros(SHAPE, np.uint8),
        },
    )
    with pytest.raises(InputError) as caught:
        score_predictions(predictions, labels, jobs=1)
    message = str(caught.value)
    assert "\n" not in message
    assert "no prediction for id(s) c" in message and "no labels for predicted id(s) z" in message
    assert "b.tif: shape (20, 24, 23)" in message
    (predictions / "z.tif").unlink()
    (predictions / "b.tif").unlink()
    only = score_predictions(predictions, labels, jobs=1, only_predicted=True)
    assert [v.id for v in only.volumes] == ["a"]


@pytest.mark.slow
def test_score_runs_volumes_in_worker_processes(tmp_path: Path) -> None:
    labels = _write_folder(tmp_path / "labels", {"a": _labels(), "b": _labels()})
    predictions = _write_folder(
        tmp_path / "masks", {"a": (_labels() == 1).astype(np.uint8), "b": np.zeros(SHAPE, np.uint8)}
    )
    parallel = score_predictions(predictions, labels, jobs=2)
    serial = score_predictions(predictions, labels, jobs=1)
    assert [v.to_dict()["score"] for v in parallel.volumes] == [
        v.to_dict()["score"] for v in serial.volumes
    ]


# --- tune --------------------------------------------------------------------------------------
def _known_best_threshold(folder: Path, labels_folder: Path, volumes: int = 2) -> None:
    """True voxels at probability 0.62, false ones at 0.58 or 0.3: only 0.6 of a 0.05 grid
    gives a perfect mask."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    labels_folder.mkdir()
    shapes = {}
    for index in range(volumes):
        labels = _labels()
        probability = np.where(labels == 1, 0.62, 0.3).astype(np.float32)
        decoys = (labels == 0) & (rng.random(SHAPE) < 0.05)
        probability[decoys] = 0.58
        save_probability(folder / f"v{index}.npy", encode(probability, "uint8"))
        tifffile.imwrite(labels_folder / f"v{index}.tif", labels)
        shapes[f"v{index}"] = SHAPE
    write_manifest(folder, "uint8", shapes, {})


def test_tune_finds_the_threshold_known_by_construction(tmp_path: Path) -> None:
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels")
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps({"thresholds": [0.5, 0.55, 0.6, 0.65, 0.7], "min_component_voxels": [0, 50]})
    )
    report = tune(tmp_path / "probs", tmp_path / "labels", grid=grid_from_file(grid), jobs=1)
    assert report.best_plain.settings.threshold == 0.6 and report.best_plain.score == 1.0
    assert report.recommended is report.best_plain and report.gain == 0.0  # nothing beats perfect
    assert "no post-processing beat the plain threshold" in report.table()


def test_tune_again_on_rewritten_probabilities_scores_the_new_ones(tmp_path: Path) -> None:
    """With one job the worker's cache lives in this process: a second tune must not reuse it."""
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels", volumes=1)
    grid = [MaskSettings(threshold=0.6)]
    assert tune(tmp_path / "probs", tmp_path / "labels", grid=grid, jobs=1).results[0].score == 1.0
    empty = encode(np.zeros(SHAPE, np.float32), "uint8")
    save_probability(tmp_path / "probs" / "v0.npy", empty)  # same path, new content
    assert tune(tmp_path / "probs", tmp_path / "labels", grid=grid, jobs=1).results[0].score < 1.0


def test_tune_recommends_post_processing_only_when_it_beats_the_threshold(tmp_path: Path) -> None:
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels")
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps({"thresholds": [0.55], "min_component_voxels": [0, 50]})
    )  # decoys are specks
    report = tune(tmp_path / "probs", tmp_path / "labels", grid=grid_from_file(grid), jobs=1)
    assert report.recommended.settings == MaskSettings(
        threshold=0.55, postprocess=PostprocessOptions(min_component_voxels=50)
    )
    assert report.gain > 0
    assert f"{report.gain:+.4f} over the best plain threshold 0.55" in report.table()


def test_tune_command_writes_postprocess_json_results_and_a_plot(tmp_path: Path) -> None:
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels")
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps(
            {
                "thresholds": [0.5, 0.6],
                "closing_radius": [0, 1],
                "hysteresis": [[0.5, 0.61]],
                "foreground_fraction": [0.1],
            }
        )
    )
    assert (
        main(
            [
                "tune",
                str(tmp_path / "probs"),
                str(tmp_path / "labels"),
                "--grid",
                str(grid),
                "-o",
                str(tmp_path / "out"),
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    settings, encoding = read_postprocess_file(tmp_path / "out" / "postprocess.json")
    assert settings.threshold == 0.6 and encoding == "uint8"
    results = json.loads((tmp_path / "out" / "tune-results.json").read_text())["results"]
    assert (
        len(results) == 2 * 2 + 2 + 2
    )  # thresholds x closings, hysteresis and per-volume x closings
    from PIL import Image

    with Image.open(tmp_path / "out" / "tune-plot.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 400


def test_the_staged_search_runs_without_a_grid(tmp_path: Path) -> None:
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels", volumes=1)
    report = tune(tmp_path / "probs", tmp_path / "labels", jobs=1)
    assert report.best_plain.settings.threshold == 0.6
    rules = {r.settings.rule for r in report.results}
    assert rules == {"threshold", "hysteresis", "per-volume"}
    assert len(report.results) > 40


def test_a_folder_without_manifest_is_refused_not_guessed(tmp_path: Path) -> None:
    # predict and fuse remove the manifest when they start: its absence means a killed run,
    # whose .npy files may be an earlier run's.
    _known_best_threshold(tmp_path / "probs", tmp_path / "labels", volumes=1)
    (tmp_path / "probs" / MANIFEST_NAME).unlink()
    with pytest.raises(InputError, match="no probabilities.json .*did not finish"):
        find_probabilities(tmp_path / "probs")


# --- the loop through predict ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("sample"), n=2, shape=(24, 40, 40), seed=3)


def _predict(root: Path, out: Path, *extra: str) -> dict:
    zip_path = out / "submission.zip"
    argv = [
        "predict",
        str(root),
        "--model",
        "demo",
        "--device",
        "cpu",
        "--no-progress",
        "-o",
        str(zip_path),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_tuned_settings_reproduce_their_score_through_predict(
    sample_root: Path, tmp_path: Path
) -> None:
    first = _predict(
        sample_root, tmp_path / "first", "--save-probabilities", str(tmp_path / "probs")
    )
    assert first["run"]["options"]["save_probabilities"] == {
        "dir": str(tmp_path / "probs"),
        "encoding": "uint8",
    }
    assert all(v["probability_file"] for v in first["volumes"])
    plain = score_predictions(
        tmp_path / "first" / "submission.zip", sample_root, jobs=1, scorer="local"
    )
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps(
            {
                "thresholds": [0.3, 0.4, 0.5],
                "min_component_voxels": [0, 300],
                "closing_radius": [0, 1],
            }
        )
    )
    report = tune(
        tmp_path / "probs",
        sample_root / "train_labels",
        grid=grid_from_file(grid),
        jobs=1,
        score_all=True,  # threshold 0.5 is compared below, whether or not it could win
    )
    (tmp_path / "postprocess.json").write_text(json.dumps(report.postprocess_document()))
    second = _predict(
        sample_root, tmp_path / "second", "--postprocess", str(tmp_path / "postprocess.json")
    )
    assert second["run"]["options"]["mask_settings"]["file"] == str(tmp_path / "postprocess.json")
    again = score_predictions(
        tmp_path / "second" / "submission.zip", sample_root, jobs=1, scorer="local"
    )
    assert again.mean("score") == pytest.approx(report.recommended.score, abs=1e-12)
    # the saved masks of the first run are the engine's own: saving probabilities changed nothing
    tuned_plain = next(r for r in report.results if r.settings == MaskSettings(threshold=0.5))
    assert plain.mean("score") == pytest.approx(tuned_plain.score, abs=2e-3)


def test_predict_refuses_post_processing_flags_beside_postprocess(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pp.json").write_text(
        json.dumps(
            {
                "format": "kaggle-offline-postprocess",
                "format_version": 1,
                "settings": {"threshold": 0.4},
                "probability_encoding": "uint8",
            }
        )
    )
    argv = [
        "predict",
        str(sample_root),
        "--postprocess",
        str(tmp_path / "pp.json"),
        "--closing-radius",
        "2",
        "-o",
        str(tmp_path / "x.zip"),
    ]
    assert main(argv) == 2
    assert "drop --closing-radius" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_with_hysteresis_records_its_settings(sample_root: Path, tmp_path: Path) -> None:
    metrics = _predict(
        sample_root, tmp_path, "--hysteresis", "0.3,0.6", "--min-component-voxels", "100"
    )
    settings = metrics["run"]["options"]["mask_settings"]
    assert settings["threshold"] == 0.3 and settings["hysteresis_high"] == 0.6
    assert settings["postprocess"]["min_component_voxels"] == 100
    assert [v["threshold"] for v in metrics["volumes"]] == [0.3, 0.3]


# --- bounded scoring: the TopoScore only where it can change the choice -------------------------
def _reference_sweep_volumes(folder: Path, labels_folder: Path) -> None:
    """Two volumes of the metric's reference set: labels and their noisy probability maps."""
    from tests.support.metric_reference import _SWEEPS, _TRUTHS, _truth, probability_map

    folder.mkdir()
    labels_folder.mkdir()
    shapes = {}
    for sweep in _SWEEPS[1:3]:
        truth = _truth(sweep["truth"])
        probability = probability_map(truth, sweep).astype(np.float32)
        save_probability(folder / f"{sweep['truth']}.npy", encode(probability, "uint8"))
        tifffile.imwrite(labels_folder / f"{sweep['truth']}.tif", truth.astype(np.uint8))
        shapes[sweep["truth"]] = _TRUTHS[sweep["truth"]]["shape"]
    write_manifest(folder, "uint8", shapes, {})


def _sweep_grid(tmp_path: Path) -> list[MaskSettings]:
    grid = tmp_path / "grid.json"
    thresholds = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    grid.write_text(json.dumps({"thresholds": thresholds, "min_component_voxels": [0, 40]}))
    return grid_from_file(grid)


@pytest.mark.parametrize(
    "scorer",
    [
        "local",
        pytest.param(
            "official",
            marks=pytest.mark.skipif(
                not __import__(
                    "runtime.volumes.metric.official", fromlist=["x"]
                ).topometrics_available(),
                reason="the organizers' topometrics is not importable here",
            ),
        ),
    ],
)
@pytest.mark.slow
def test_bounded_tuning_recommends_what_scoring_every_setting_recommends(
    tmp_path: Path, scorer: str
) -> None:
    _reference_sweep_volumes(tmp_path / "probs", tmp_path / "labels")
    grid = _sweep_grid(tmp_path)
    bounded = tune(tmp_path / "probs", tmp_path / "labels", grid=grid, scorer=scorer, jobs=2)
    every = tune(
        tmp_path / "probs", tmp_path / "labels", grid=grid, scorer=scorer, jobs=2, score_all=True
    )
    assert every.scoring["scored_in_full"] == len(grid) == every.scoring["settings"]
    assert bounded.recommended.settings == every.recommended.settings
    assert bounded.recommended.score == pytest.approx(every.recommended.score, abs=1e-12)
    assert bounded.best_plain.settings == every.best_plain.settings
    # the bound did its job: fewer settings scored in full, none left out that could have won
    scoring = bounded.scoring
    assert 0 < scoring["scored_in_full"] < len(grid) and scoring["left_out_by_bound"] > 0
    full = {r.settings: r.score for r in every.results}
    for result in bounded.results:
        if not result.exact:
            assert result.bound < bounded.recommended.score
            assert full[result.settings] <= result.bound + 1e-12
    assert (
        "left out: even their TopoScore at its upper bound could not make them win"
        in bounded.table()
    )
    document = bounded.to_dict()
    assert document["scoring"]["left_out_by_bound"] == scoring["left_out_by_bound"]
    assert (document["recommended"]["official"] is not None) == (scorer == "official")


def test_identical_masks_are_scored_in_full_once(tmp_path: Path) -> None:
    """A minimum size below every speck's size changes nothing: the same mask, one TopoScore."""
    _reference_sweep_volumes(tmp_path / "probs", tmp_path / "labels")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"thresholds": [0.5], "min_component_voxels": [0, 1]}))
    report = tune(
        tmp_path / "probs", tmp_path / "labels", grid=grid_from_file(grid), jobs=1, score_all=True
    )
    assert report.scoring["scored_in_full"] == 2  # threshold 0.5, with and without min size 1
    assert report.scoring["masks_scored_in_full"] == 2  # one per volume
    assert report.scoring["masks_reused"] == 2
