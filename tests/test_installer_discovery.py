"""Discovery of wheelhouses under an input root, in every layout Kaggle mounts inputs with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.contract.errors import ManifestError, WheelhouseError
from runtime.installer.discovery import (
    INPUT_ROOT_VARIABLE,
    MAX_OTHER_FILES,
    default_input_root,
    find_wheelhouses,
    open_wheelhouse,
)
from tests.support.packages import make_wheel
from tests.support.wheelhouses import kernel_profile, write_wheelhouse


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("discovery-wheels")
    return [make_wheel(folder, "alpha", "1.0"), make_wheel(folder, "beta", "2.0")]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, wheels: list[Path]) -> Path:
    """One wheelhouse as the bundler lays it out (wheels/ folder), copied into each layout."""
    folder = tmp_path_factory.mktemp("discovery-house") / "house"
    write_wheelhouse(folder, wheels, target=kernel_profile())
    return folder


def _place(wheelhouse: Path, destination: Path, *, flat: bool = False) -> Path:
    if flat:  # `kaggle datasets create` without --dir-mode: every file at the top level
        destination.mkdir(parents=True)
        for path in wheelhouse.rglob("*"):
            if path.is_file():
                shutil.copyfile(path, destination / path.name)
    else:
        shutil.copytree(wheelhouse, destination)
    return destination


def _found(root: Path) -> list[tuple[Path, bool]]:
    discovery = find_wheelhouses(root)
    assert not discovery.problems, discovery.problems
    return [(w.path.relative_to(root), w.verified) for w in discovery.wheelhouses]


@pytest.mark.parametrize(
    "layout",
    [
        "my-wheels",  # old dataset mount
        "datasets/someone/my-wheels",  # new dataset mount
        "my-model/pytorch/default/1",  # old model mount
        "models/someone/my-model/pytorch/default/3",  # new model mount
        "notebooks/someone/make-wheels",  # notebook output
        "competitions/vesuvius-challenge/extras",  # inside a competition mount
    ],
)
@pytest.mark.parametrize("flat", [False, True], ids=["wheels-folder", "flat"])
def test_every_mount_layout_is_found(
    tmp_path: Path, wheelhouse: Path, layout: str, flat: bool
) -> None:
    _place(wheelhouse, tmp_path / layout, flat=flat)

    discovery = find_wheelhouses(tmp_path)

    assert [(w.path, w.verified) for w in discovery.wheelhouses] == [(tmp_path / layout, True)]
    (found,) = discovery.wheelhouses
    assert found.manifest is not None
    assert all(found.wheel_path(entry) is not None for entry in found.manifest.wheels)


def test_several_wheelhouses_in_one_dataset_and_a_plain_folder(
    tmp_path: Path, wheelhouse: Path, wheels: list[Path]
) -> None:
    _place(wheelhouse, tmp_path / "datasets/me/wheels/py311")
    _place(wheelhouse, tmp_path / "datasets/me/wheels/py311-extra", flat=True)
    plain = tmp_path / "some-wheels"
    plain.mkdir()
    shutil.copyfile(wheels[0], plain / wheels[0].name)

    assert _found(tmp_path) == [
        (Path("some-wheels"), False),
        (Path("datasets/me/wheels/py311"), True),
        (Path("datasets/me/wheels/py311-extra"), True),
    ]
    plain_house = find_wheelhouses(tmp_path).wheelhouses[0]
    assert plain_house.plain_wheels == (plain / wheels[0].name,)


def _spy_on_scandir(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Entries read per folder, by wrapping the real os.scandir."""
    read: dict[str, int] = {}
    real_scandir = os.scandir

    class _Counting:
        def __init__(self, path: str) -> None:
            self._inner = real_scandir(path)
            self._path = os.fspath(path)
            read.setdefault(self._path, 0)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return self

        def __exit__(self, *exc: object) -> None:
            self._inner.close()

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            for entry in self._inner:
                read[self._path] += 1
                yield entry

    monkeypatch.setattr(os, "scandir", _Counting)
    return read


def test_big_data_trees_are_not_listed(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    competition = tmp_path / "competitions" / "vesuvius-challenge-surface-detection"
    for tree in ("train_images", "train_labels"):
        (competition / tree).mkdir(parents=True)
        for index in range(300):
            (competition / tree / f"{index}.tif").write_bytes(b"II*\x00")
    (competition / "test.csv").write_text("id,scroll_id\n1,1\n")
    # The same amount of data under a name no rule knows: read only until it is clearly data.
    scans = tmp_path / "datasets" / "someone" / "scans"
    scans.mkdir(parents=True)
    for index in range(500):
        (scans / f"{index:04}.tif").write_bytes(b"II*\x00")
    (scans / "nested").mkdir()
    _place(wheelhouse, scans / "nested" / "wheels-inside-data")
    _place(wheelhouse, tmp_path / "datasets" / "me" / "wheels")

    read = _spy_on_scandir(monkeypatch)
    found = _found(tmp_path)

    assert found == [(Path("datasets/me/wheels"), True)]
    assert str(competition / "train_images") not in read
    assert str(competition / "train_labels") not in read
    assert read[str(scans)] <= MAX_OTHER_FILES + 2
    assert str(scans / "nested") not in read  # a data folder's subfolders are not searched
    assert sum(read.values()) < 100


def test_a_symlinked_layout_counts_once(tmp_path: Path, wheelhouse: Path) -> None:
    _place(wheelhouse, tmp_path / "datasets" / "me" / "wheels")
    (tmp_path / "wheels").symlink_to(tmp_path / "datasets" / "me" / "wheels")
    (tmp_path / "loop").symlink_to(tmp_path)  # a cycle must not hang the walk

    assert len(find_wheelhouses(tmp_path).wheelhouses) == 1


def test_depth_is_bounded(tmp_path: Path, wheelhouse: Path) -> None:
    deep = tmp_path.joinpath(*[f"level{index}" for index in range(12)])
    _place(wheelhouse, deep)

    assert find_wheelhouses(tmp_path).wheelhouses == ()
    assert len(find_wheelhouses(tmp_path, max_depth=12).wheelhouses) == 1


def test_other_projects_manifest_json_is_ignored(tmp_path: Path, wheelhouse: Path) -> None:
    model = tmp_path / "models" / "someone" / "unet" / "pytorch" / "default" / "1"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text('{"model": "unet", "files": ["weights.pt"]}')
    (model / "weights.pt").write_bytes(b"\x00" * 10)
    (tmp_path / "not-json").mkdir()
    (tmp_path / "not-json" / "manifest.json").write_text("CACHE MANIFEST\n")
    _place(wheelhouse, tmp_path / "wheels")

    assert _found(tmp_path) == [(Path("wheels"), True)]


def test_a_corrupt_manifest_beside_wheels_is_a_problem(tmp_path: Path, wheelhouse: Path) -> None:
    broken = _place(wheelhouse, tmp_path / "broken")
    (broken / "manifest.json").write_text('{"format": "kaggle-offline-wheelhouse", "wheels": [')
    _place(wheelhouse, tmp_path / "fine")

    discovery = find_wheelhouses(tmp_path)

    assert [w.path for w in discovery.wheelhouses] == [tmp_path / "fine"]
    (problem,) = discovery.problems
    assert problem.path == broken and isinstance(problem.error, ManifestError)
    assert str(broken / "manifest.json") in str(problem) and "corrupt" in str(problem)
    with pytest.raises(ManifestError, match="corrupt manifest"):
        discovery.raise_problems()


def test_a_missing_root_finds_nothing(tmp_path: Path) -> None:
    discovery = find_wheelhouses(tmp_path / "absent")
    assert discovery.wheelhouses == () and discovery.problems == ()


def test_input_root_comes_from_the_environment(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _place(wheelhouse, tmp_path / "w")
    monkeypatch.setenv(INPUT_ROOT_VARIABLE, str(tmp_path))

    assert default_input_root() == tmp_path
    assert [w.path for w in find_wheelhouses().wheelhouses] == [tmp_path / "w"]
    monkeypatch.delenv(INPUT_ROOT_VARIABLE)
    assert default_input_root() == Path("/kaggle/input")


def test_open_wheelhouse_accepts_folder_or_manifest(tmp_path: Path, wheelhouse: Path) -> None:
    placed = _place(wheelhouse, tmp_path / "w")
    assert open_wheelhouse(placed).verified
    assert open_wheelhouse(placed / "manifest.json").path == placed
    plain = open_wheelhouse(placed / "wheels")
    assert not plain.verified and len(plain.plain_wheels) == 2


def test_open_wheelhouse_refuses_what_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(WheelhouseError, match="no such wheelhouse folder"):
        open_wheelhouse(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WheelhouseError, match=r"neither a manifest\.json nor any \.whl"):
        open_wheelhouse(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("[1, 2")
    with pytest.raises(ManifestError, match="bad/manifest.json: corrupt manifest"):
        open_wheelhouse(tmp_path / "bad")
