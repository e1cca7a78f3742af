"""kaggle-offline's own wheel when the bundler runs from an installed (non-editable) kaggle-offline.

A user's ``pip install ".[bundler]"`` leaves no source tree to build from: the bundler rebuilds its
wheel from the installed files. These tests install the project's real wheel into fresh venvs
(offline: ``pip --python``, and the bundler's own dependencies linked in from this venv) and run
the real CLI from a folder outside the checkout.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bundler
from bundler.errors import BundlerError
from tests.support.bundler_fixtures import make_fixture_index

ROOT = Path(__file__).resolve().parent.parent
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable))
_BUNDLER_DEPENDENCIES = ("pip", "packaging")  # what `python -m bundler build` imports or runs


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def _bare_venv(path: Path) -> Path:
    """A venv with nothing installed (no pip): its python."""
    completed = _run([BASE_PYTHON, "-m", "venv", "--without-pip", path], cwd=path.parent)
    assert completed.returncode == 0, completed.stderr
    return path / "bin" / "python"


def _pip_install(python: Path, wheel: Path) -> None:
    # This venv's pip installs into the other interpreter: no index, no network, no pip there.
    completed = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps",
         "--disable-pip-version-check", "--quiet", wheel],
        cwd=wheel.parent,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr


def _site_packages(python: Path) -> Path:
    (site,) = (python.parent.parent / "lib").glob("python3*/site-packages")
    return site


def _link_bundler_dependencies(python: Path, folder: Path) -> None:
    """Make pip and packaging importable in the venv, as `pip install ".[bundler]"` would."""
    folder.mkdir()
    for name in _BUNDLER_DEPENDENCIES:
        dist = importlib.metadata.distribution(name)
        site = Path(str(dist.locate_file("")))
        (folder / name).symlink_to(site / name)
        (dist_info,) = site.glob(f"{name}-{dist.version}.dist-info")
        (folder / dist_info.name).symlink_to(dist_info)
    (_site_packages(python) / "bundler-dependencies.pth").write_text(f"{folder}\n")


def _record_problems(wheel: Path) -> list[str]:
    """Lines of the wheel's RECORD whose hash or size does not match the member."""
    with zipfile.ZipFile(wheel) as archive:
        (record_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        rows = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
        listed = {row[0] for row in rows}
        problems = [n for n in archive.namelist() if n not in listed]
        for name, digest, size in rows:
            if name == record_name:
                continue
            data = archive.read(name)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if digest != f"sha256={b64}" or int(size) != len(data):
                problems.append(name)
    return problems


def _members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture
def installed_bundler(tmp_path: Path, project_wheel: Path) -> Path:
    """The python of a venv where kaggle-offline[bundler] is installed from its wheel."""
    python = _bare_venv(tmp_path / "user-venv")
    _pip_install(python, project_wheel)
    _link_bundler_dependencies(python, tmp_path / "bundler-dependencies")
    return python


def test_an_installed_bundler_rebuilds_its_own_wheel(
    tmp_path: Path, installed_bundler: Path, project_wheel: Path
) -> None:
    index = make_fixture_index(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def build(house: str) -> subprocess.CompletedProcess[str]:
        return _run(
            [installed_bundler, "-m", "bundler", "build", "ko-lib", "-o", house,
             "--index-url", index, "--cache-dir", tmp_path / "cache",
             "--dataset-id", "tester/ko-wheels"],
            cwd=elsewhere,
        )  # fmt: skip

    completed = build("house")
    assert completed.returncode == 0, completed.stderr
    assert "rebuilding kaggle-offline's own wheel from its installation" in completed.stderr
    house = elsewhere / "house"
    manifest = json.loads((house / "manifest.json").read_text())
    assert manifest["self_wheel"] == project_wheel.name == "kaggle_offline-0.1.0-py3-none-any.whl"
    wheel = house / "wheels" / project_wheel.name
    assert bundler.verify(house) == []

    # The same files as the wheel it was installed from (no .pyc, no installer's files), each
    # byte for byte, and a RECORD that describes them.
    rebuilt, original = _members(wheel), _members(project_wheel)
    assert sorted(rebuilt) == sorted(original)
    assert {n: d for n, d in rebuilt.items() if not n.endswith("/RECORD")} == {
        n: d for n, d in original.items() if not n.endswith("/RECORD")
    }
    assert _record_problems(wheel) == []

    # pip accepts it, and its runtime imports both installed and straight from the zip
    # (bootstrap.py's way, with no site-packages at all).
    kernel = _bare_venv(tmp_path / "kernel-venv")
    _pip_install(kernel, wheel)
    imported = _run([kernel, "-c", "import runtime.installer.core; print(runtime.installer.core.__file__)"],
                    cwd=elsewhere)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(_site_packages(kernel)))
    zipped = _run(
        [BASE_PYTHON, "-S", "-c",
         f"import sys; sys.path.insert(0, {str(wheel)!r}); import runtime.installer.core; "
         "print(runtime.installer.core.__file__)"],
        cwd=elsewhere,
    )  # fmt: skip
    assert zipped.returncode == 0, zipped.stderr
    assert zipped.stdout.startswith(str(wheel))

    # A second build takes the cached wheel: the same bytes, not rebuilt.
    again = build("house2")
    assert again.returncode == 0, again.stderr
    assert "rebuilding" not in again.stderr
    assert (elsewhere / "house2" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()


def test_an_edited_installation_is_refused_before_resolving(
    tmp_path: Path, installed_bundler: Path
) -> None:
    edited = _site_packages(installed_bundler) / "runtime" / "volumes" / "run_metrics.py"
    edited.write_text(edited.read_text() + "\n# patched by hand\n")
    missing_index = (tmp_path / "no-index").as_uri()  # resolving would fail with another error
    completed = _run(
        [installed_bundler, "-m", "bundler", "build", "ko-lib", "-o", tmp_path / "house",
         "--index-url", missing_index, "--cache-dir", tmp_path / "cache",
         "--dataset-id", "tester/ko-wheels"],
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith(f"error: {edited}: changed since kaggle-offline 0.1.0 was installed")
    assert "--self-wheel PATH" in line and "--no-self" in line and "include_self" not in line
    assert not (tmp_path / "cache" / "plans").exists()


def test_a_bundler_neither_installed_nor_in_a_checkout_says_what_to_pass(tmp_path: Path) -> None:
    # A bare copy of the packages on PYTHONPATH: no pyproject.toml beside it, no RECORD naming it.
    source = tmp_path / "copy"
    for package in ("bundler", "runtime"):
        shutil.copytree(ROOT / package, source / package)
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "build", "ko-lib", "-o", str(tmp_path / "house"),
         "--index-url", (tmp_path / "no-index").as_uri(), "--cache-dir", str(tmp_path / "cache"),
         "--dataset-id", "tester/ko-wheels"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={**os.environ, "PYTHONPATH": str(source)},
    )  # fmt: skip
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()
    assert "neither a source checkout nor part of an installed kaggle-offline" in line
    assert line.endswith("pass --self-wheel PATH (a kaggle-offline wheel) or --no-self")
    assert not (tmp_path / "cache" / "plans").exists(), "refused before resolving"


def test_a_missing_self_wheel_is_refused_before_resolving(tmp_path: Path) -> None:
    with pytest.raises(BundlerError, match=r"missing\.whl: kaggle-offline wheel not found; fix "):
        bundler.build(
            ["ko-lib"], tmp_path / "house", index_url=(tmp_path / "no-index").as_uri(),
            cache_dir=tmp_path / "cache", include_self=tmp_path / "missing.whl",
            dataset_id="tester/ko-wheels",
        )  # fmt: skip
    assert not (tmp_path / "cache" / "plans").exists()


def test_a_checkout_is_recognised_as_the_source_of_the_own_wheel() -> None:
    """From a clone (editable install or PYTHONPATH) the own wheel is built from the checkout.

    A bundler module moved one folder deeper once made this None, and a fresh clone's
    `nox -s kaggle` then failed: an editable install has no files in its RECORD to rebuild from.
    """
    from bundler.wheelhouse.self_wheel import project_root

    assert project_root() == Path(__file__).resolve().parents[1]
