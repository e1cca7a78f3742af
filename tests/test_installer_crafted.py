"""Crafted manifests against the real installer: refused by name, in one line, before anything.

Each case starts from a sound wheelhouse of real wheels and edits its manifest the way an attacker
(or a careless hand) would. Every command runs in a fresh venv with no network (``unshare -rn``),
so an install that should have been refused would really install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundler import verify
from runtime.contract.errors import ManifestError
from runtime.contract.manifest import Manifest
from runtime.installer.discovery import find_wheelhouses, open_wheelhouse
from tests.support.netns import offline, require_netns
from tests.support.venvs import Venv, copy_venv, run_checked, runtime_source_path, session_template
from tests.support.wheelhouses import kernel_profile, session_index, write_wheelhouse

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
]  # slow: every test runs the installer on real wheelhouses in a fresh venv

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha (needs beta), beta 2.0 and gamma for a kernel with nothing: a sound wheelhouse."""
    _, wheels = session_index(tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("crafted") / "house"
    write_wheelhouse(
        folder,
        [wheels["alpha-1.0"], wheels["beta-2.0"], wheels["gamma-1.0"]],
        target=kernel_profile(),
        requires_dist={"alpha": ["beta>=1"]},
    )
    return folder


@pytest.fixture
def venv(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    require_netns()
    return copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")


def _crafted(house: Path, destination: Path, edit: Edit) -> Path:
    shutil.copytree(house, destination)
    path = destination / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return destination


def _entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in data["wheels"] if entry["name"] == name)


def _install(venv: Venv, input_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(runtime_source_path()),
        "KAGGLE_OFFLINE_INPUT_ROOT": str(input_root),
        # Staging copies go here, so a write outside the stage would show up in this folder.
        "TMPDIR": str(input_root.parent / "tmp"),
    }
    (input_root.parent / "tmp").mkdir(exist_ok=True)
    return run_checked(offline([str(venv.python), "-m", "runtime", *args]), check=False, env=env)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("absolute filename", "wheel filename '{victim}' is not a plain file name"),
        ("climbing filename", "wheel filename '../escaped.whl' is not a plain file name"),
        ("climbing wheel_dir", "wheel_dir '../..' is not a plain file name"),
    ],
)
def test_every_manifest_path_stays_inside_its_wheelhouse(
    venv: Venv, house: Path, tmp_path: Path, case: str, expected: str
) -> None:
    victim = tmp_path / "victim.whl"
    victim.write_bytes(b"precious, never to be truncated\n")
    digest = __import__("hashlib").sha256(victim.read_bytes()).hexdigest()

    def edit(data: dict[str, Any]) -> None:
        gamma = _entry(data, "gamma")
        if case == "absolute filename":  # staging target == source: opened for writing
            gamma.update(filename=str(victim), sha256=digest, size=victim.stat().st_size)
        elif case == "climbing filename":  # the staged copy would land beside the stage
            gamma["filename"] = "../escaped.whl"
        else:
            data["wheel_dir"] = "../.."

    crafted = _crafted(house, tmp_path / "input" / "datasets" / "me" / "wheels", edit)
    if case == "climbing filename":
        shutil.copyfile(next((crafted / "wheels").glob("gamma-*.whl")), crafted / "escaped.whl")
    before = venv.distributions()

    error = _one_line_error(_install(venv, tmp_path / "input", "install"))

    assert f"error: {crafted / 'manifest.json'}: " in error
    assert expected.format(victim=victim) in error
    assert victim.read_bytes() == b"precious, never to be truncated\n"
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing staged, nothing written beside
    assert venv.distributions() == before
    # The bundler's own check reports the same manifest.
    assert any(expected.format(victim=victim) in problem for problem in verify(crafted))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda data: _entry(data, "gamma").update(name="zeta"),
            "wheels[2] (zeta): the entry for 'zeta' names gamma-1.0-py3-none-any.whl, a wheel of "
            "gamma: an inconsistent manifest",
        ),
        (
            lambda data: _entry(data, "gamma").update(name=None),
            "wheels[2]: 'name' must be a string, not null",
        ),
        (
            lambda data: _entry(data, "gamma").update(size="1234"),
            "wheels[2] (gamma): 'size' must be a whole number, not a string",
        ),
        (
            lambda data: _entry(data, "gamma").update(requested="yes"),
            "wheels[2] (gamma): 'requested' must be true or false, not a string",
        ),
        (
            lambda data: _entry(data, "gamma").update(version="2.0"),
            "the entry for gamma 2.0 names gamma-1.0-py3-none-any.whl, a wheel of version 1.0",
        ),
    ],
    ids=["name-mismatch", "name-null", "size-string", "requested-string", "version-mismatch"],
)
def test_an_inconsistent_manifest_installs_nothing(
    venv: Venv, house: Path, tmp_path: Path, edit: Edit, expected: str
) -> None:
    crafted = _crafted(house, tmp_path / "input" / "wheels", edit)
    before = venv.distributions()

    error = _one_line_error(_install(venv, tmp_path / "input", "install"))

    assert f"error: {crafted / 'manifest.json'}: {expected}" in error
    assert venv.distributions() == before  # refused whole, not after alpha and beta went in


def test_an_invalid_specifier_is_reported_as_one_and_names_its_own_manifest(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    shutil.copytree(house, tmp_path / "input" / "a-good")
    crafted = _crafted(
        house,
        tmp_path / "input" / "b-bad",
        lambda data: _entry(data, "gamma").update(specifier="=>1"),
    )

    result = _install(venv, tmp_path / "input", "install", "--json")

    # The broken one is left out by name; the good one is used.
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {item["name"] for item in report["installed"]} == {"alpha", "beta", "gamma"}
    (warning,) = report["warnings"]
    assert warning == (
        "left out a broken wheelhouse, the others were used: "
        f"{crafted / 'manifest.json'}: invalid version specifier '=>1' for gamma; "
        "rebuild the wheelhouse"
    )
    assert "disagree" not in result.stdout + result.stderr


def _nested_manifest(folder: Path, depth: int = 200_000) -> Path:
    folder.mkdir(parents=True)
    (folder / "requirements.lock").write_text("")  # it looks like a wheelhouse: not a shrug
    (folder / "manifest.json").write_text("[" * depth + "]" * depth)
    return folder


def test_a_manifest_nested_200000_deep_is_one_line_and_spares_the_others(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    deep = _nested_manifest(tmp_path / "input" / "datasets" / "other" / "deep")
    shutil.copytree(house, tmp_path / "input" / "datasets" / "me" / "wheels")

    installed = _install(venv, tmp_path / "input", "install", "--json")

    assert installed.returncode == 0, installed.stderr
    report = json.loads(installed.stdout)
    assert {item["name"] for item in report["installed"]} == {"alpha", "beta", "gamma"}
    (warning,) = report["warnings"]
    assert f"{deep / 'manifest.json'}: corrupt manifest, nested too deeply to be one" in warning

    doctor = _install(venv, tmp_path / "input", "doctor", "--no-gpu")
    assert doctor.returncode == 1, doctor.stderr  # it found a problem: not a clean bill
    assert "Traceback" not in doctor.stderr
    assert f"{deep}: broken: {deep / 'manifest.json'}: corrupt manifest, nested" in doctor.stdout

    # When the broken one is all there is, it is the error.
    shutil.rmtree(tmp_path / "input" / "datasets" / "me")
    alone = _one_line_error(_install(venv, tmp_path / "input", "install"))
    assert "nested too deeply" in alone


def test_every_document_reader_takes_the_deep_and_the_bom_the_same_way(
    house: Path, tmp_path: Path
) -> None:
    deep = _nested_manifest(tmp_path / "deep")
    with pytest.raises(ManifestError, match="nested too deeply"):
        Manifest.load(deep / "manifest.json")
    with pytest.raises(ManifestError, match="nested too deeply"):
        open_wheelhouse(deep)

    bom = tmp_path / "bom"
    shutil.copytree(house, bom)
    text = (bom / "manifest.json").read_text()
    (bom / "manifest.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert Manifest.load(bom / "manifest.json") == Manifest.load(house / "manifest.json")
    assert [w.path for w in find_wheelhouses(tmp_path).wheelhouses] == [bom]
