"""``python DIR/bootstrap.py``: the first cell of a kernel where nothing of ours is installed yet."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns import offline, require_netns
from tests.support.venvs import Venv, copy_venv, run_checked, session_template
from tests.support.wheelhouses import bundle, kernel_profile, session_index

pytestmark = pytest.mark.netns
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """alpha, beta and gamma, plus kaggle-offline's own wheel, for a kernel with nothing."""
    url, _ = session_index(tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("bootstrap-house") / "wheels"
    bundle(
        folder,
        ["alpha", "gamma"],
        url,
        target=kernel_profile(),
        self_wheel=project_wheel,
        cache_dir=tmp_path_factory.getbasetemp() / "bundler-cache",
    )
    return folder


@pytest.fixture
def venv(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    require_netns()
    return copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")


def _bootstrap(
    venv: Venv, script: Path, input_root: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["KAGGLE_OFFLINE_INPUT_ROOT"] = str(input_root)
    # Run from an unrelated folder, as a kernel does: nothing of the checkout is importable.
    return run_checked(
        offline([str(venv.python), str(script), *args]), check=False, env=env, cwd=input_root.parent
    )


def test_bootstrap_installs_everything_including_itself(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "input" / "datasets" / "me" / "my-wheels"
    shutil.copytree(house, mounted)

    first = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [first.stdout.strip()]  # one line
    assert first.stdout.startswith(
        "kaggle-offline: installed 4 (alpha 1.0, beta 2.0, gamma 1.0, kaggle-offline 0.1.0)"
    )
    assert {"alpha", "beta", "gamma", "kaggle-offline"} <= set(venv.distributions())
    # The installed copy works on its own, from site-packages rather than the bootstrap's zip.
    where = venv.run(
        "-c", "import runtime.installer.core as i; print(i.__file__)", cwd=tmp_path
    ).stdout
    assert where.strip().startswith(str(venv.site_packages))

    (venv.site_packages / "pip" / "__main__.py").unlink()  # a second run must not need pip
    second = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("kaggle-offline: nothing to install, 4 already satisfied")


def test_bootstrap_of_a_flat_upload_outside_the_input_root(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    flat = tmp_path / "uploaded-flat"
    flat.mkdir()
    for path in house.rglob("*"):
        if path.is_file():
            shutil.copyfile(path, flat / path.name)
    (tmp_path / "input").mkdir()

    result = _bootstrap(venv, flat / "bootstrap.py", tmp_path / "input", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("kaggle-offline: would install 4 (alpha 1.0, beta 2.0")
    assert "kaggle-offline" not in venv.distributions()


def test_a_tampered_self_wheel_is_never_imported(venv: Venv, house: Path, tmp_path: Path) -> None:
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)
    (own,) = (mounted / "wheels").glob("kaggle_offline-*.whl")
    with own.open("ab") as stream:
        stream.write(b"\x00")
    before = venv.distributions()

    result = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {own}: sha256 ")
    assert "nothing was installed" in result.stderr and result.stderr.count("\n") == 1
    assert venv.distributions() == before


def test_bootstrap_needs_its_manifest(venv: Venv, house: Path, tmp_path: Path) -> None:
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)
    (mounted / "manifest.json").unlink()

    result = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")

    assert result.returncode == 2
    assert result.stderr == (
        f"error: {mounted / 'manifest.json'}: manifest not found; "
        "bootstrap.py must stay beside its manifest.json\n"
    )


def test_bootstrap_without_our_wheel_says_how_to_fix_it(
    venv: Venv, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    url, _ = session_index(tmp_path_factory.getbasetemp())
    folder = tmp_path / "input" / "wheels"
    bundle(folder, ["gamma"], url, target=kernel_profile(), cache_dir=tmp_path / "cache")

    result = _bootstrap(venv, folder / "bootstrap.py", tmp_path / "input")

    assert result.returncode == 2
    assert "cannot import kaggle-offline's installer" in result.stderr
    assert "--no-self" in result.stderr


def test_bootstrap_imports_only_the_standard_library() -> None:
    tree = ast.parse((PROJECT_ROOT / "runtime" / "installer" / "bootstrap.py").read_text())
    top_level = {
        node.module.split(".")[0]
        if isinstance(node, ast.ImportFrom) and node.module
        else alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert top_level <= set(sys.stdlib_module_names) | {"__future__"}, top_level
