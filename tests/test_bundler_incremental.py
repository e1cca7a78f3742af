"""Incremental builds (cache keyed by inputs and sha256), stale wheels, and verify's checks."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bundler
from bundler.resolution import resolve
from bundler.wheelhouse.builder import BuildResult
from runtime.contract.manifest import Manifest
from runtime.installer.capture import capture_current_profile
from tests.support.bundler_fixtures import make_fixture_index
from tests.support.packages import make_wheel


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path | str]:
    return {"index": make_fixture_index(tmp_path), "cache": tmp_path / "cache", "root": tmp_path}


def _build(
    world: dict[str, Path | str], requirements: list[str], house: str = "house", **kwargs
) -> BuildResult:
    kwargs.setdefault("include_self", False)
    kwargs.setdefault("dataset_id", "tester/ko-wheels")
    kwargs.setdefault("index_url", str(world["index"]))
    return bundler.build(
        requirements, Path(world["root"]) / house, cache_dir=Path(world["cache"]), **kwargs
    )


def _stored(world: dict[str, Path | str], result: BuildResult, filename: str) -> Path:
    """The cache's own copy of a wheel in ``result``."""
    (entry,) = [e for e in result.manifest.wheels if e.filename == filename]
    return Path(world["cache"]) / "blobs" / entry.sha256[:2] / entry.sha256


def _forbid_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip was run although the cached resolution applies")

    monkeypatch.setattr(resolve, "resolve", refuse)


def test_second_build_runs_no_pip_and_downloads_nothing(
    world: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cold = _build(world, ["ko-app"])
    assert cold.resolved
    assert set(cold.downloaded) >= {"ko_app-1.0-py3-none-any.whl", "ko_lib-2.0-py3-none-any.whl"}
    assert cold.built == ("ko_pure-0.5-py3-none-any.whl",)

    # The index disappears and pip may not run: the warm build needs neither.
    shutil.rmtree(Path(world["root"]) / "index")
    _forbid_resolution(monkeypatch)
    warm = _build(world, ["ko-app"])
    assert not warm.resolved
    assert warm.downloaded == () and warm.downloaded_bytes == 0 and warm.built == ()
    assert sorted(warm.reused) == sorted(e.filename for e in cold.manifest.wheels)
    assert warm.manifest.wheels == cold.manifest.wheels
    assert bundler.verify(warm.output_dir) == []


def test_changed_requirement_fetches_only_the_difference_and_drops_stale_wheels(
    world: dict[str, Path | str],
) -> None:
    first = _build(world, ["ko-app"], target="kaggle-py311")
    assert first.manifest.wheel("ko-backport") is not None

    added = _build(world, ["ko-app", "ko-codecs"], target="kaggle-py311")
    assert added.resolved
    assert added.downloaded == ("ko_codecs-1.0-cp311-abi3-manylinux2014_x86_64.whl",)
    assert added.built == (), "ko-pure's wheel comes from the build cache"
    assert added.removed == ()

    shrunk = _build(world, ["ko-lib"], target="kaggle-py311")
    assert shrunk.downloaded == ()
    assert sorted(shrunk.removed) == sorted(
        e.filename for e in added.manifest.wheels if e.name != "ko-lib"
    )
    assert [p.name for p in (shrunk.output_dir / "wheels").iterdir()] == [
        "ko_lib-1.0-py3-none-any.whl"
    ]
    assert bundler.verify(shrunk.output_dir) == []


def test_refresh_resolves_again_but_reuses_every_file(world: dict[str, Path | str]) -> None:
    _build(world, ["ko-lib"])
    again = _build(world, ["ko-lib"], refresh=True)
    assert again.resolved and again.downloaded == ()


def test_tampered_wheel_is_caught_by_verify_and_repaired_by_a_rebuild(
    world: dict[str, Path | str],
) -> None:
    result = _build(world, ["ko-app"])
    wheel = result.output_dir / "wheels" / "ko_lib-2.0-py3-none-any.whl"
    with open(wheel, "ab") as stream:  # in place, as an editor or a stray script would
        stream.write(b"tampered")
    problems = bundler.verify(result.output_dir)
    assert len(problems) == 1
    assert str(wheel) in problems[0] and "sha256" in problems[0]

    repaired = _build(world, ["ko-app"])
    assert repaired.downloaded == (), "the cache's copy was untouched: nothing to fetch"
    assert bundler.verify(repaired.output_dir) == []


def test_a_wheel_edited_in_place_reaches_no_other_wheelhouse(
    world: dict[str, Path | str],
) -> None:
    first = _build(world, ["ko-app"], house="first")
    second = _build(world, ["ko-app"], house="second")
    with open(first.output_dir / "wheels" / "ko_lib-2.0-py3-none-any.whl", "r+b") as stream:
        stream.write(b"PK-overwritten")  # same size, different bytes
    assert len(bundler.verify(first.output_dir)) == 1
    assert bundler.verify(second.output_dir) == []
    third = _build(world, ["ko-app"], house="third")
    assert third.downloaded == ()
    assert bundler.verify(third.output_dir) == []


@pytest.mark.parametrize("refresh", [False, True], ids=["cached-plan", "fresh-resolution"])
def test_a_damaged_cache_file_is_detected_and_fetched_again(
    world: dict[str, Path | str], refresh: bool
) -> None:
    result = _build(world, ["ko-app"])
    stored = _stored(world, result, "ko_lib-2.0-py3-none-any.whl")
    with open(stored, "r+b") as stream:
        stream.write(b"PK-damaged")
    repaired = _build(world, ["ko-app"], house="repaired", refresh=refresh)
    assert repaired.downloaded == ("ko_lib-2.0-py3-none-any.whl",)
    assert bundler.verify(repaired.output_dir) == []


def test_a_hard_link_left_by_an_older_build_becomes_a_copy(world: dict[str, Path | str]) -> None:
    result = _build(world, ["ko-lib"])
    wheel = result.output_dir / "wheels" / "ko_lib-2.0-py3-none-any.whl"
    stored = _stored(world, result, wheel.name)
    assert not wheel.samefile(stored)
    wheel.unlink()
    os.link(stored, wheel)  # how kaggle-offline 0.1.0 placed wheels
    _build(world, ["ko-lib"])
    assert not wheel.samefile(stored), "an edit of the wheelhouse would reach the cache"
    assert bundler.verify(result.output_dir) == []


def test_verify_reports_stray_wheels_two_versions_and_missing_files(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    result = _build(world, ["ko-app"])
    house = result.output_dir
    make_wheel(house / "wheels", "ko-lib", "1.0")
    shutil.copy(house / "wheels" / "ko_pure-0.5-py3-none-any.whl", tmp_path / "kept.whl")
    (house / "wheels" / "ko_pure-0.5-py3-none-any.whl").unlink()
    problems = bundler.verify(house)
    assert any("ko_lib-1.0-py3-none-any.whl" in p and "not in the manifest" in p for p in problems)
    assert any("ko-lib: 2 versions" in p for p in problems)
    assert any("ko_pure-0.5-py3-none-any.whl" in p and "missing" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_verify_reports_an_incomplete_closure(world: dict[str, Path | str]) -> None:
    result = _build(world, ["ko-app"])
    house = result.output_dir
    manifest = Manifest.load(house / "manifest.json")
    kept = tuple(entry for entry in manifest.wheels if entry.name != "ko-lib")
    dataclasses.replace(manifest, wheels=kept).dump(house / "manifest.json")
    (house / "wheels" / "ko_lib-2.0-py3-none-any.whl").unlink()
    problems = [p for p in bundler.verify(house) if p.startswith("closure:")]
    assert problems == [
        "closure: ko-app 1.0 requires ko-lib>=1, but neither the wheelhouse nor kaggle-py312 has ko-lib"
    ]


def test_verify_against_another_target_names_what_does_not_fit(
    world: dict[str, Path | str],
) -> None:
    result = _build(world, ["ko-app", "ko-codecs"], target="kaggle-py312")
    problems = bundler.verify(result.output_dir, "kaggle-py311")
    assert any(
        p.startswith("ko_lib-2.0-py3-none-any.whl: requires Python >=3.12") for p in problems
    )
    assert any(
        "ko_codecs-2.0-cp312-abi3-manylinux_2_28_x86_64.whl: its tags" in p for p in problems
    )
    assert any("requires ko-backport" in p for p in problems), "the 3.11 marker wants the backport"
    assert bundler.verify(result.output_dir, "kaggle-py312") == []


def test_verify_refuses_a_target_of_another_python(world: dict[str, Path | str]) -> None:
    # ko-lib 1.0 is pure Python: every wheel fits 3.12, yet the 3.12 runtime refuses the house.
    result = _build(world, ["ko-lib"], target="kaggle-py311")
    house = result.output_dir
    assert bundler.verify(house, "kaggle-py311") == []
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "verify", str(house), "--target", "kaggle-py312"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout.splitlines() == [
        f"{house}: built for Python 3.11 (profile kaggle-py311) but the target is Python 3.12 "
        "(kaggle-py312); the runtime will refuse it: rebuild with --target kaggle-py312"
    ]


def test_verify_flags_placeholder_dataset_id(world: dict[str, Path | str], monkeypatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    result = _build(world, ["ko-lib"], dataset_id=None)
    data = json.loads((result.output_dir / "dataset-metadata.json").read_text())
    assert data["id"] == "INSERT_OWNER/kaggle-offline-wheels-kaggle-py312"
    assert data["licenses"] == [{"name": "CC0-1.0"}] and 6 <= len(data["title"]) <= 50
    (problem,) = bundler.verify(result.output_dir)
    assert "placeholder owner" in problem and "--dataset-id" in problem


def test_lock_file_installs_with_plain_pip(world: dict[str, Path | str], tmp_path: Path) -> None:
    # A target that is this interpreter with nothing installed: plain pip must take the lock as is.
    host = dataclasses.replace(capture_current_profile("host"), preinstalled={})
    result = _build(world, ["ko-lib", "ko-pure"], target=host)
    target_dir = tmp_path / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--require-hashes",
            "--find-links", "wheels", "-r", "requirements.lock", "--target", str(target_dir),
            "--disable-pip-version-check", "--quiet",
        ],
        cwd=result.output_dir,
        check=True,
    )  # fmt: skip
    installed = sorted(path.name for path in target_dir.glob("*.dist-info"))
    assert installed == ["ko_lib-1.0.dist-info", "ko_pure-0.5.dist-info"]
