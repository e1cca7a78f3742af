"""``python -m runtime profile``: capture this kernel's profile for the bundler, stdlib only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from runtime.contract.profile import TargetProfile
from tests.support.venvs import copy_venv, run_checked, runtime_source_path, session_template


def _profile_cli(python: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}
    result = run_checked([str(python), "-m", "runtime", "profile", *args], check=False, env=env)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_profile_of_a_bare_kernel_round_trips_through_the_bundler(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A venv with nothing but pip and setuptools: capturing needs the standard library only.
    venv = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    output = tmp_path / "profiles" / "kernel.json"

    code, stdout, stderr = _profile_cli(venv.python, "-o", str(output), "--name", "my-kernel")

    assert code == 0, stderr
    assert f"to {output}" in stdout and "--target " in stdout
    profile = TargetProfile.load(output)
    assert profile.name == "my-kernel"
    assert profile.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert profile.abi == f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert profile.tags[0].startswith(profile.abi) and len(profile.tags) > 100
    assert profile.markers["python_full_version"] == ".".join(map(str, sys.version_info[:3]))
    assert set(profile.preinstalled) == {"pip", "setuptools"}
    assert profile.site_packages.startswith(str(venv.path))

    from bundler import get_profile

    assert get_profile(str(output)) == profile


def test_profile_to_stdout_has_a_default_name() -> None:
    code, stdout, stderr = _profile_cli(Path(sys.executable))

    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["format"] == "kaggle-offline-profile"
    assert data["name"] == f"kernel-py{sys.version_info.major}{sys.version_info.minor}"
    assert "numpy" in data["preinstalled"]


def test_an_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    code, stdout, stderr = _profile_cli(Path(sys.executable), "-o", str(blocker / "kernel.json"))

    assert code == 2 and stdout == ""
    assert stderr.startswith(f"error: {blocker / 'kernel.json'}: cannot write the profile")
    assert stderr.count("\n") == 1


@pytest.mark.slow
def test_packages_installed_from_attached_wheelhouses_are_not_preinstalled(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A profile captured after bootstrap.py must not claim the wheelhouse's packages as image."""
    from runtime.installer.capture import capture_current_profile
    from tests.support.packages import make_wheel
    from tests.support.wheelhouses import write_wheelhouse

    venv = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    codec = make_wheel(tmp_path / "dist", "fancycodecs", "1.0")
    run_checked(
        [str(venv.python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(codec)]
    )
    input_root = tmp_path / "input"
    write_wheelhouse(
        input_root / "datasets" / "me" / "wheels", [codec], target=capture_current_profile("t")
    )

    output = tmp_path / "kernel.json"
    code, _, stderr = _profile_cli(venv.python, "-o", str(output), "--input-root", str(input_root))
    assert code == 0, stderr
    assert "fancycodecs==1.0" in stderr
    assert set(TargetProfile.load(output).preinstalled) == {"pip", "setuptools"}

    code, _, stderr = _profile_cli(
        venv.python,
        "-o",
        str(output),
        "--input-root",
        str(input_root),
        "--keep-wheelhouse-packages",
    )
    assert code == 0, stderr
    assert TargetProfile.load(output).preinstalled["fancycodecs"] == "1.0"


@pytest.mark.slow
def test_a_profile_taken_after_an_upgrade_restores_the_image_version_so_a_rebuild_installs(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """README step 1: capture after bootstrap.py upgraded beta, rebuild, install in a fresh kernel."""
    from runtime.installer.capture import capture_current_profile
    from runtime.installer.discovery import open_wheelhouse
    from runtime.installer.interpreter import Interpreter
    from runtime.installer.plan import make_plan
    from tests.support.wheelhouses import bundle, session_index, write_wheelhouse

    url, wheels = session_index(tmp_path_factory.getbasetemp())
    venv = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    # The kernel after bootstrap.py: its image's beta 1.0 upgraded to the wheelhouse's 2.0.
    run_checked(
        [str(venv.python), "-m", "pip", "install", "-q", "--no-index", str(wheels["beta-2.0"])]
    )
    input_root = tmp_path / "input"
    write_wheelhouse(
        input_root / "datasets" / "me" / "wheels",
        [wheels["beta-2.0"]],
        target=capture_current_profile("t"),
        specifiers={"beta": ">=2"},
        upgrade_of={"beta": "1.0"},
    )

    output = tmp_path / "kernel.json"
    code, _, stderr = _profile_cli(venv.python, "-o", str(output), "--input-root", str(input_root))

    assert code == 0, stderr
    assert "restored the image's versions of packages the wheelhouses upgraded: beta==1.0" in stderr
    profile = TargetProfile.load(output)
    assert profile.preinstalled["beta"] == "1.0"

    # The rebuild for that profile vendors beta as the upgrade it is, so a fresh kernel (the
    # image's beta 1.0) installs it instead of refusing to replace its own beta.
    house = tmp_path / "rebuilt"
    manifest = bundle(house, ["beta>=2"], url, target=profile, cache_dir=tmp_path / "cache")
    assert manifest.wheel("beta").upgrade_of == "1.0"  # type: ignore[union-attr]
    (planned,) = make_plan([open_wheelhouse(house)], Interpreter(versions={"beta": "1.0"})).install
    assert (planned.name, planned.version, planned.replaces) == ("beta", "2.0", "1.0")
