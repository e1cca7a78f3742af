"""``python DIR/bootstrap.py``: the first cell of a kernel where nothing of ours is installed yet."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import offline, require_netns
from tests.support.packages import make_wheel
from tests.support.tmpfs import on_small_tmpfs, require_tmpfs
from tests.support.venvs import Venv, copy_venv, run_checked, session_template
from tests.support.wheelhouses import bundle, kernel_profile, session_index

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
]  # slow: every test installs wheels with real pip in a fresh venv
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


@pytest.mark.parametrize("room", [0.1, 1.5], ids=["bootstraps-copy", "the-installers-copies"])
def test_a_full_temporary_folder_is_one_line_and_exit_2(
    venv: Venv, house: Path, tmp_path: Path, room: float
) -> None:
    """A real tmpfs as TMPDIR, too small for bootstrap's copy of our wheel, or for the copies
    the installer makes of every wheel after it."""
    require_tmpfs()
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)
    (own,) = (mounted / "wheels").glob("kaggle_offline-*.whl")
    options = f"size={int(own.stat().st_size * room) // 4096 * 4096 + 4096}"
    small = tmp_path / "tmp"
    small.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TMPDIR"] = str(small)
    argv = [
        str(venv.python),
        str(mounted / "bootstrap.py"),
        "--input-root",
        str(tmp_path / "input"),
    ]

    result = run_checked(on_small_tmpfs({small: options}, argv), check=False, env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: no space left on {small}")
    assert "set TMPDIR to a folder with room" in result.stderr
    assert "kaggle-offline" not in venv.distributions()


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


def _edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["absolute self_wheel", "climbing wheel_dir"])
def test_the_private_copy_of_the_own_wheel_never_leaves_its_folder(
    venv: Venv, house: Path, tmp_path: Path, case: str
) -> None:
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)
    victim = tmp_path / "victim.whl"
    victim.write_bytes(b"precious, never to be truncated\n")

    def edit(data: dict[str, Any]) -> None:
        if case == "absolute self_wheel":  # the private copy's target == its source: truncated
            own = next(w for w in data["wheels"] if w["filename"] == data["self_wheel"])
            own.update(filename=str(victim), sha256=hashlib.sha256(victim.read_bytes()).hexdigest())
            data["self_wheel"] = str(victim)
        else:
            data["wheel_dir"] = "../.."

    _edit_manifest(mounted, edit)
    before = venv.distributions()

    result = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    key = "self_wheel" if case == "absolute self_wheel" else "wheel_dir"
    assert result.stderr.startswith(f"error: {mounted / 'manifest.json'}: {key} ")
    assert "is not a plain file name" in result.stderr
    assert victim.read_bytes() == b"precious, never to be truncated\n"
    assert venv.distributions() == before


def test_bootstrap_reads_its_manifest_by_the_installers_rule(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    """A byte order mark is accepted by bootstrap.py as by discovery; a deep nesting is one line."""
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)
    manifest = mounted / "manifest.json"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())

    with_bom = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input", "--dry-run")

    assert with_bom.returncode == 0, with_bom.stderr
    assert with_bom.stdout.startswith("kaggle-offline: would install 4 (alpha 1.0, beta 2.0")

    manifest.write_text("[" * 200_000 + "]" * 200_000)
    deep = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")
    assert deep.returncode == 2
    assert deep.stderr == f"error: {manifest}: corrupt manifest, nested too deeply to be one\n"


def test_bootstrap_replaces_an_older_kaggle_offline_and_keeps_a_newer_one(
    venv: Venv, house: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "input" / "wheels"
    shutil.copytree(house, mounted)

    def pip_install(wheel: Path) -> None:
        run_checked(
            offline([str(venv.python), "-m", "pip", "install", "-q", "--no-index", str(wheel)])
        )

    pip_install(make_wheel(tmp_path / "dist", "kaggle-offline", "0.0.1"))

    upgraded = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")

    assert upgraded.returncode == 0, upgraded.stderr
    assert "kaggle-offline 0.1.0)" in upgraded.stdout.splitlines()[0]
    assert venv.distributions()["kaggle-offline"] == "0.1.0"
    where = venv.run("-c", "import runtime; print(runtime.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv.site_packages))

    pip_install(make_wheel(tmp_path / "dist", "kaggle-offline", "9.0"))
    kept = _bootstrap(venv, mounted / "bootstrap.py", tmp_path / "input")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("kaggle-offline: nothing to install")
    assert venv.distributions()["kaggle-offline"] == "9.0"


def test_two_bootstraps_upgrading_at_once_take_turns_and_both_tell_the_truth(
    venv: Venv,
    tmp_path_factory: pytest.TempPathFactory,
    project_wheel: Path,
    tmp_path: Path,
) -> None:
    url, wheels = session_index(tmp_path_factory.getbasetemp())
    run_checked(offline([str(venv.python), "-m", "pip", "install", "-q", "--no-index",
                         str(wheels["beta-1.0"])]))  # fmt: skip
    folder = tmp_path / "input" / "wheels"
    bundle(
        folder,
        ["beta>=2", "gamma"],
        url,
        target=kernel_profile({"beta": "1.0"}),
        self_wheel=project_wheel,
        cache_dir=tmp_path / "cache",
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["KAGGLE_OFFLINE_INPUT_ROOT"] = str(tmp_path / "input")
    argv = offline([str(venv.python), str(folder / "bootstrap.py")])

    runs = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = sorted(stdout.strip() for stdout, _ in outputs)
    assert summaries[0].startswith(
        "kaggle-offline: installed 3 (beta 2.0, gamma 1.0, kaggle-offline 0.1.0)"
    )
    assert summaries[1].startswith("kaggle-offline: nothing to install, 3 already satisfied")
    assert venv.distributions()["beta"] == "2.0"
