"""What the installer refuses before pip runs, and installs pip did not finish: real pip, real disks.

Each case is one that pip would otherwise start on and fail (or succeed wrongly) half-way: a wheel
whose METADATA contradicts its file name, a wheel that does not fit the free space of
site-packages or of the temporary folder (on a real tmpfs of a few megabytes), and a pip run that
stopped half-way, which must never leave a package that the next run counts as installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.installer.bootstrap import MANIFEST_FILENAME
from runtime.installer.lock import LOCK_FILENAME
from tests.support.netns import offline, require_netns
from tests.support.packages import make_wheel
from tests.support.tmpfs import on_small_tmpfs, require_tmpfs
from tests.support.venvs import Venv, copy_venv, run_checked, runtime_source_path, session_template
from tests.support.wheelhouses import bundle, kernel_profile, session_index, write_wheelhouse

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def venv(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    require_netns()
    return copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(runtime_source_path()), **extra}


def _install(venv: Venv, house: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [str(venv.python), "-m", "runtime", "install", "--wheelhouse", str(house)]
    return run_checked(offline(argv), check=False, env=_env(**env))


def _house(tmp_path: Path, wheel: Path) -> Path:
    house = tmp_path / "house"
    write_wheelhouse(house, [wheel], target=kernel_profile())
    return house


def test_a_wheel_whose_metadata_contradicts_its_name_is_refused_before_pip(
    venv: Venv, tmp_path: Path
) -> None:
    # Named alpha 1.0 (file and .dist-info folder), but METADATA says 9.9: pip installs 9.9.
    wheel = make_wheel(tmp_path / "dist", "alpha", "1.0", metadata_version="9.9")
    before = venv.distributions()

    result = _install(venv, _house(tmp_path, wheel))

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "the file name says alpha 1.0 but its METADATA says alpha 9.9" in result.stderr
    assert "nothing was installed" in result.stderr
    assert venv.distributions() == before


@pytest.mark.parametrize("short_of", ["bytes", "inodes"])
def test_a_wheel_larger_than_the_free_space_of_site_packages_is_refused_before_pip(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, short_of: str
) -> None:
    require_netns()
    require_tmpfs()
    template = session_template(tmp_path_factory.getbasetemp())
    files_in_venv = sum(1 for _ in template.path.rglob("*"))
    if short_of == "bytes":
        # 24 MB of zeros unpack from a wheel of a few kilobytes; the venv's copy leaves ~14 MB.
        members = {"big/data.bin": bytes(24 << 20)}
        options, expected = "size=40m", "unpacking 1 wheel(s) needs about 24.0 MB"
    else:
        # Room for every byte, not for 300 more files: tmpfs counts inodes too.
        members = {f"big/part{i}.txt": b"x" for i in range(300)}
        options = f"size=200m,nr_inodes={files_in_venv + 100}"
        expected = "unpacking 1 wheel(s) needs 304 files, only "
    wheel = make_wheel(tmp_path / "dist", "big", "1.0", extra_files=members)
    house = _house(tmp_path, wheel)
    small = tmp_path / "small"
    small.mkdir()
    script = (
        f'cp -a "{template.path}" "$0/venv" && "$0/venv/bin/python" -m runtime install '
        f'--wheelhouse "{house}"; echo "rc=$?"; ls "$0"/venv/lib/python3*/site-packages'
    )
    result = run_checked(
        on_small_tmpfs({small: options}, ["sh", "-c", script, str(small)]), env=_env()
    )

    assert "rc=2" in result.stdout, result.stdout + result.stderr
    error = result.stderr.strip()
    assert error.count("\n") == 0, error
    assert error.startswith(f"error: no space left on {small}/venv/lib/python3.")
    assert expected in error and "nothing was installed" in error
    installed = result.stdout.split()
    assert not [name for name in installed if name.startswith("big")]  # pip never started


def test_a_temporary_folder_too_small_for_the_copies_is_one_line_before_any_copy(
    venv: Venv, tmp_path: Path
) -> None:
    require_tmpfs()
    # Random bytes do not compress: the wheel itself is 2 MB, the temporary folder 1 MB.
    wheel = make_wheel(
        tmp_path / "dist", "noisy", "1.0", extra_files={"noisy/x.bin": os.urandom(2 << 20)}
    )
    house = _house(tmp_path, wheel)
    small = tmp_path / "tmp"
    small.mkdir()
    argv = [str(venv.python), "-m", "runtime", "install", "--wheelhouse", str(house)]
    result = run_checked(
        on_small_tmpfs({small: "size=1m"}, argv), check=False, env=_env(TMPDIR=str(small))
    )

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: no space left on {small}: the wheels' copies need")
    assert "noisy" not in venv.distributions()


def _half_installable(tmp_path: Path) -> Path:
    """alpha 1.0 with its .dist-info first in the archive: pip writes it before the module."""
    return make_wheel(tmp_path / "dist", "alpha", "1.0", dist_info_first=True)


def test_a_pip_failure_half_way_leaves_nothing_the_next_run_counts_as_installed(
    venv: Venv, tmp_path: Path
) -> None:
    house = _house(tmp_path, _half_installable(tmp_path))
    blocker = venv.site_packages / "alpha"
    blocker.write_text("in the way\n")  # pip fails on alpha/__init__.py, after its .dist-info

    failed = _install(venv, house)

    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert "installed before the failure: nothing; still missing: alpha" in failed.stderr
    assert not list(venv.site_packages.glob("alpha-*.dist-info"))
    assert "alpha" not in venv.distributions()

    blocker.unlink()
    rerun = _install(venv, house)
    assert rerun.returncode == 0, rerun.stderr
    assert "installed 1 (alpha 1.0)" in rerun.stdout
    assert venv.run("-c", "import alpha; print(alpha.__version__)").stdout.strip() == "1.0"


def test_a_killed_install_is_finished_by_the_next_run(venv: Venv, tmp_path: Path) -> None:
    wheel = _half_installable(tmp_path)
    house = _house(tmp_path, wheel)
    # What a kill during pip leaves: the journal the installer wrote before starting pip, and
    # pip's half-unpacked alpha (real pip, stopped by a file in the way of its module).
    pending = (venv.site_packages / LOCK_FILENAME).with_suffix(".pending")
    pending.write_text(json.dumps({"installing": [{"name": "alpha", "version": "1.0"}]}))
    blocker = venv.site_packages / "alpha"
    blocker.write_text("in the way\n")
    pip = [str(venv.python), "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)]
    assert run_checked(offline(pip), check=False).returncode != 0
    assert (venv.site_packages / "alpha-1.0.dist-info" / "METADATA").is_file()
    blocker.unlink()
    assert venv.distributions().get("alpha") == "1.0"  # what a scan of folder names sees

    rerun = _install(venv, house)

    assert rerun.returncode == 0, rerun.stderr
    assert "installed 1 (alpha 1.0)" in rerun.stdout
    assert "an earlier install did not finish alpha 1.0 (no RECORD" in rerun.stdout
    assert venv.run("-c", "import alpha; print(alpha.__version__)").stdout.strip() == "1.0"
    assert not pending.exists()


@pytest.fixture(scope="module")
def built_house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    url, _ = session_index(tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("recorded") / "wheels"
    bundle(
        folder,
        ["gamma"],
        url,
        target=kernel_profile(),
        cache_dir=tmp_path_factory.getbasetemp() / "bundler-cache",
    )
    return folder


@pytest.mark.parametrize("name", ["bootstrap.py", "requirements.lock", "dataset-metadata.json"])
def test_a_file_edited_after_the_build_makes_the_wheelhouse_refused(
    venv: Venv, built_house: Path, tmp_path: Path, name: str
) -> None:
    house = tmp_path / "house"
    shutil.copytree(built_house, house)
    recorded = json.loads((house / MANIFEST_FILENAME).read_text())["files"]
    assert {entry["name"] for entry in recorded} == {
        "bootstrap.py",
        "requirements.lock",
        "dataset-metadata.json",
    }
    with (house / name).open("a") as stream:
        stream.write("\nimport os  # anything at all\n")

    result = _install(venv, house)

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"error: {house / name}: not the file the build wrote" in result.stderr
    assert "gamma" not in venv.distributions()
    # A file that is left out (an upload without it) is no problem: the installer never reads it.
    (house / name).unlink()
    assert _install(venv, house).returncode == 0
