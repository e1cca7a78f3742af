"""Our scorer against values the organizers' own code computed (the reference set), and the
official code itself where it is importable.

The reference values were computed once by ``bench/make_metric_reference.py`` with the organizers'
``topometrics`` and Betti-Matching-3D (commit recorded in the JSON); these tests need no C++. The
tests marked ``official`` run the official scorer itself and are skipped where it is not
importable (put its ``src`` folder on PYTHONPATH, see docs/official-metric.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from runtime.volumes.metric.leaderboard import PreparedTruth
from runtime.volumes.metric.matching import MEASURED_ERROR
from runtime.volumes.metric.official import topometrics_available
from tests.support.metric_reference import (
    GENERATOR_VERSION,
    build_pair,
    cases,
    load_reference,
    mask_digest,
    measure_approximation,
)

REFERENCE = load_reference()
PAIRS = REFERENCE["pairs"]
official = pytest.mark.skipif(
    not topometrics_available(), reason="the organizers' topometrics is not importable here"
)


def test_the_reference_records_its_generator_and_the_official_code() -> None:
    assert REFERENCE["generator_version"] == GENERATOR_VERSION
    assert len(REFERENCE["official"]["betti_matching_3d_commit"]) == 40
    assert set(REFERENCE["official"]["topometrics_sha256"]) >= {
        "leaderboard.py",
        "toposcore.py",
        "voi.py",
    }
    assert sorted(PAIRS) == sorted(case["name"] for case in cases())
    # the set covers what it claims: sweeps, ignored labels, empty and full predictions
    names = " ".join(PAIRS)
    for kind in ("sweep", "ignore", "empty", "full", "split", "merge", "noise", "shift", "sample"):
        assert kind in names


def test_the_generator_rebuilds_every_recorded_pair() -> None:
    for case in cases():
        prediction, labels = build_pair(case)
        assert mask_digest(prediction) == PAIRS[case["name"]]["prediction_sha256"], case["name"]
        assert mask_digest(labels) == PAIRS[case["name"]]["labels_sha256"], case["name"]


@pytest.mark.slow
def test_surface_dice_voi_and_feature_counts_match_the_official_values() -> None:
    for case in cases():
        prediction, labels = build_pair(case)
        expected = PAIRS[case["name"]]
        ours = PreparedTruth(labels).score(prediction)
        assert ours.surface_dice == pytest.approx(expected["surface_dice"], abs=1e-9), case
        assert ours.voi_score == pytest.approx(expected["voi_score"], abs=1e-9), case
        assert ours.voi_split == pytest.approx(expected["voi_split"], abs=1e-9), case
        assert ours.voi_merge == pytest.approx(expected["voi_merge"], abs=1e-9), case
        for dimension, (_, predicted, true) in expected["topo_counts"].items():
            assert ours.topo_counts[int(dimension)][1:] == (predicted, true), case["name"]
            assert ours.topo_counts[int(dimension)][0] >= 0


@pytest.mark.slow
def test_the_spatial_approximation_errs_as_stated_and_less_than_counting() -> None:
    spatial = measure_approximation("spatial")
    counts = measure_approximation("counts")
    assert spatial["pairs"] == MEASURED_ERROR["reference_pairs"]
    # the stated figures are the measured ones, rounded
    for key in ("topo_mean_abs_error", "score_mean_abs_error"):
        assert spatial[key] == pytest.approx(MEASURED_ERROR[key], abs=1e-4), key
    assert spatial["topo_max_abs_error"] == pytest.approx(MEASURED_ERROR["topo_max_abs_error"])
    assert spatial["sweep_kendall_tau_min"] == pytest.approx(
        MEASURED_ERROR["sweep_kendall_tau_min"], abs=0.01
    )
    # and it is the better approximation: closer values, better-ranked sweeps
    assert spatial["topo_mean_abs_error"] < counts["topo_mean_abs_error"] / 2
    assert spatial["sweep_kendall_tau_mean"] > counts["sweep_kendall_tau_mean"]
    assert spatial["topo_pairs_differing"] < counts["topo_pairs_differing"]


def test_spatial_matching_is_exact_where_the_masks_agree() -> None:
    for case in cases():
        if case["prediction"]["op"] not in ("identical", "split", "empty", "full"):
            continue
        prediction, labels = build_pair(case)
        ours = PreparedTruth(labels).score(prediction)
        assert ours.topo_score == pytest.approx(PAIRS[case["name"]]["topo_score"], abs=1e-12)


@official
@pytest.mark.parametrize("index", range(0, len(cases()), 9))
def test_the_official_scorer_reproduces_the_reference(index: int) -> None:
    from runtime.volumes.metric.official import official_score

    case = cases()[index]
    prediction, labels = build_pair(case)
    expected = PAIRS[case["name"]]
    result = official_score(prediction, labels)
    assert result.topo_kind == "official"
    for field in ("score", "surface_dice", "voi_score", "topo_score"):
        assert getattr(result, field) == pytest.approx(expected[field], abs=1e-9), field
    assert {str(k): list(v) for k, v in result.topo_counts.items()} == expected["topo_counts"]


@official
def test_runtime_score_says_official_with_its_version_and_matches_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.__main__ import main

    wanted = ("sample/noise", "shells-a/noise-seed7-rate0.01", "sweep2/sheets-c/t0.5")
    chosen = [c for c in cases() if c["name"] in wanted]
    assert len(chosen) == len(wanted)
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels").mkdir()
    for number, case in enumerate(chosen):
        prediction, labels = build_pair(case)
        tifffile.imwrite(tmp_path / "masks" / f"v{number}.tif", prediction)
        tifffile.imwrite(tmp_path / "labels" / f"v{number}.tif", labels)
    report = tmp_path / "score.json"
    code = main(
        ["score", str(tmp_path / "masks"), str(tmp_path / "labels"), "--jobs", "1"]
        + ["--json", str(report)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "TopoScore (official)" in printed and "approximate" not in printed
    document = json.loads(report.read_text())
    assert document["scorer"] == "official" and document["topo_score"] == "official"
    assert document["official"]["available"] is True
    assert len(document["official"]["topometrics_sources_sha256"]) == 64
    for number, case in enumerate(chosen):
        volume = next(v for v in document["volumes"] if v["id"] == f"v{number}")
        for field in ("score", "surface_dice", "voi_score", "topo_score"):
            assert volume[field] == pytest.approx(PAIRS[case["name"]][field], abs=1e-9)


@official
def test_an_installed_layout_loads_betti_matching_by_a_plain_import(tmp_path: Path) -> None:
    """topometrics and betti_matching side by side in a site folder, no build folder."""
    import betti_matching
    import topometrics

    site = tmp_path / "site"
    shutil.copytree(Path(topometrics.__file__).parent, site / "topometrics")
    shutil.copy2(betti_matching.__file__, site / Path(betti_matching.__file__).name)
    program = (
        "import json\n"
        "from runtime.volumes.metric.official import official_version, official_score\n"
        "import numpy as np\n"
        "mask = np.zeros((12, 12, 12), np.uint8); mask[3:9, 3:9, 3:9] = 1\n"
        "print(json.dumps([official_version(), official_score(mask, mask).score]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{root}:{site}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version, score = json.loads(done.stdout)
    assert version["loaded_by"].startswith("plain import") and score == 1.0
    assert np.isfinite(score)
