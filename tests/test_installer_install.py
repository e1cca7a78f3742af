"""Real installs: bundler-made wheelhouses, fresh virtual environments, real pip, no network.

Every command that could install runs inside a network namespace with no network
(``unshare -rn``), so a stray index access fails instead of passing quietly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.installer.core import install
from runtime.installer.interpreter import Interpreter, installed_versions
from runtime.installer.lock import LOCK_FILENAME
from tests.support.netns import offline, require_netns
from tests.support.packages import make_wheel
from tests.support.venvs import Venv, copy_venv, run_checked, runtime_source_path, session_template
from tests.support.wheelhouses import bundle, kernel_profile, session_index, write_wheelhouse

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
]  # slow: every test installs wheels with real pip in a fresh venv


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Path]]:
    return session_index(tmp_path_factory.getbasetemp())


def _bundle(
    factory: pytest.TempPathFactory,
    packages: tuple[str, dict[str, Path]],
    requirements: list[str],
    **options: object,
) -> Path:
    folder = factory.mktemp("house") / "wheels"
    options.setdefault("target", kernel_profile())
    bundle(
        folder,
        requirements,
        packages[0],
        cache_dir=factory.getbasetemp() / "bundler-cache",
        **options,  # type: ignore[arg-type]
    )
    return folder


@pytest.fixture(scope="module")
def kernel_house(
    tmp_path_factory: pytest.TempPathFactory, packages: tuple[str, dict[str, Path]]
) -> Path:
    """Built for a kernel that has beta 1.0: alpha, gamma and the optional fancycodecs."""
    return _bundle(
        tmp_path_factory,
        packages,
        ["alpha", "gamma"],
        optional=["fancycodecs"],
        target=kernel_profile({"beta": "1.0"}),
    )


@pytest.fixture(scope="module")
def bare_house(
    tmp_path_factory: pytest.TempPathFactory, packages: tuple[str, dict[str, Path]]
) -> Path:
    """Built for a kernel with nothing: alpha, beta 2.0 and gamma."""
    return _bundle(tmp_path_factory, packages, ["alpha", "gamma"])


@pytest.fixture
def venv(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    require_netns()
    return copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")


@pytest.fixture
def kernel(venv: Venv, packages: tuple[str, dict[str, Path]]) -> Venv:
    """A venv standing in for a kernel image: beta 1.0 is preinstalled."""
    wheel = packages[1]["beta-1.0"]
    run_checked(offline([str(venv.python), "-m", "pip", "install", "-q", "--no-index", str(wheel)]))
    return venv


def _attach(house: Path, input_root: Path, mount: str = "datasets/me/wheels") -> Path:
    shutil.copytree(house, input_root / mount)
    return input_root / mount


def _runtime(venv: Venv, *args: str, input_root: Path) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ...`` of the working tree, in ``venv``, with no network."""
    env = {
        **os.environ,
        "PYTHONPATH": str(runtime_source_path()),
        "KAGGLE_OFFLINE_INPUT_ROOT": str(input_root),
    }
    return run_checked(offline([str(venv.python), "-m", "runtime", *args]), check=False, env=env)


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _versions(report: dict[str, object], key: str = "installed") -> dict[str, str]:
    return {item["name"]: item["version"] for item in report[key]}  # type: ignore[index, union-attr]


def _disable_pip(venv: Venv) -> None:
    """After this, `python -m pip` fails; the packaging that pip vendors still imports."""
    (venv.site_packages / "pip" / "__main__.py").unlink()
    assert venv.run("-m", "pip", "--version", check=False).returncode != 0


def test_a_kernel_gets_what_it_lacks_and_keeps_what_it_has(
    kernel: Venv, kernel_house: Path, tmp_path: Path
) -> None:
    _attach(kernel_house, tmp_path / "input")

    report = _report(_runtime(kernel, "install", "--json", input_root=tmp_path / "input"))

    assert report["pip_ran"] is True
    assert _versions(report) == {"alpha": "1.0", "fancycodecs": "1.0", "gamma": "1.0"}
    assert kernel.distributions()["beta"] == "1.0"  # preinstalled, never replaced by 2.0
    imported = kernel.run("-c", "import alpha, beta, gamma; print(beta.__version__)").stdout
    assert imported.strip() == "1.0"

    # Everything present now: the second run must not even start pip.
    _disable_pip(kernel)
    again = _report(_runtime(kernel, "install", "--json", input_root=tmp_path / "input"))
    assert again["pip_ran"] is False and again["installed"] == []
    assert set(_versions(again, "skipped")) == {"alpha", "fancycodecs", "gamma"}


def test_a_kernel_without_what_the_wheelhouse_assumed_is_refused(
    venv: Venv, kernel_house: Path, tmp_path: Path
) -> None:
    _attach(kernel_house, tmp_path / "input")
    before = venv.distributions()

    result = _runtime(venv, "install", input_root=tmp_path / "input")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert (
        "expects this kernel to have beta >=1 preinstalled, but it does not have it"
        in result.stderr
    )
    assert venv.distributions() == before


def test_a_tampered_wheel_is_refused_and_nothing_is_installed(
    venv: Venv, bare_house: Path, tmp_path: Path
) -> None:
    house = _attach(bare_house, tmp_path / "input")
    (gamma,) = (house / "wheels").glob("gamma-*.whl")
    data = bytearray(gamma.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gamma.write_bytes(bytes(data))
    before = venv.distributions()

    result = _runtime(venv, "install", input_root=tmp_path / "input")

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {gamma}: sha256 ")
    assert "nothing was installed" in result.stderr and result.stderr.count("\n") == 1
    assert venv.distributions() == before


def test_a_pip_failure_half_way_is_reported_and_a_rerun_completes(
    venv: Venv, bare_house: Path, tmp_path: Path
) -> None:
    _attach(bare_house, tmp_path / "input")
    # A file where alpha's package folder must go: pip installs beta (alpha's dependency) first,
    # then fails on alpha for real.
    blocker = venv.site_packages / "alpha"
    blocker.write_text("in the way\n")

    failed = _runtime(venv, "install", input_root=tmp_path / "input")

    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert "error: pip failed: ERROR: Could not install packages" in failed.stderr
    landed = {name for name in ("beta", "gamma") if name in venv.distributions()}
    assert "beta" in landed and "alpha" not in venv.distributions()
    assert f"installed before the failure: {', '.join(sorted(landed))};" in failed.stderr
    assert "still missing: alpha" in failed.stderr
    assert "run the install again" in failed.stderr

    blocker.unlink()
    code = "import runtime, json; report = runtime.install(); print(json.dumps(report.to_dict()))"
    env = {
        **os.environ,
        "PYTHONPATH": str(runtime_source_path()),
        "KAGGLE_OFFLINE_INPUT_ROOT": str(tmp_path / "input"),
    }
    rerun = json.loads(run_checked(offline([str(venv.python), "-c", code]), env=env).stdout)
    assert set(_versions(rerun)) == {"alpha"} | ({"beta", "gamma"} - landed)
    assert {"alpha", "beta", "gamma"} <= set(venv.distributions())


def test_an_optional_package_that_fails_is_only_a_warning(
    kernel: Venv, kernel_house: Path, tmp_path: Path
) -> None:
    _attach(kernel_house, tmp_path / "input")
    (kernel.site_packages / "fancycodecs").write_text("in the way\n")

    report = _report(_runtime(kernel, "install", "--json", input_root=tmp_path / "input"))

    assert _versions(report) == {"alpha": "1.0", "gamma": "1.0"}
    (warning,) = report["warnings"]  # type: ignore[misc]
    assert warning.startswith("optional fancycodecs 1.0 could not be installed: ERROR:")
    assert "fancycodecs" not in kernel.distributions()


def test_dry_run_prints_the_plan_and_installs_nothing(
    venv: Venv, bare_house: Path, tmp_path: Path
) -> None:
    _attach(bare_house, tmp_path / "input")
    before = venv.distributions()

    result = _runtime(venv, "install", "--dry-run", input_root=tmp_path / "input")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "kaggle-offline: would install 3 (alpha 1.0, beta 2.0, gamma 1.0)"
    )
    assert "  would install gamma 1.0 from " in result.stdout
    assert venv.distributions() == before


def test_a_requested_upgrade_replaces_the_kernel_version(
    kernel: Venv,
    tmp_path_factory: pytest.TempPathFactory,
    packages: tuple[str, dict[str, Path]],
    tmp_path: Path,
) -> None:
    house = _bundle(tmp_path_factory, packages, ["beta>=2"], target=kernel_profile({"beta": "1.0"}))

    planned = _runtime(
        kernel, "install", "--dry-run", "--wheelhouse", str(house), input_root=tmp_path / "none"
    )
    assert planned.returncode == 0, planned.stderr
    assert "replacing beta 1.0 -> 2.0" in planned.stdout.splitlines()[0]
    result = _runtime(kernel, "install", "--wheelhouse", str(house), input_root=tmp_path / "none")

    assert result.returncode == 0, result.stderr
    assert "installed beta 2.0 from" in result.stdout and "(replaces 1.0)" in result.stdout
    assert "replacing beta 1.0 -> 2.0" in result.stdout.splitlines()[0]
    assert kernel.distributions()["beta"] == "2.0"


def test_wheelhouses_merge_and_a_plain_folder_is_installed_only_when_allowed(
    venv: Venv,
    bare_house: Path,
    tmp_path_factory: pytest.TempPathFactory,
    packages: tuple[str, dict[str, Path]],
    tmp_path: Path,
) -> None:
    second = _bundle(tmp_path_factory, packages, ["gamma", "beta>=2"])
    _attach(bare_house, tmp_path / "input", "datasets/me/all-wheels/part1")
    _attach(second, tmp_path / "input", "datasets/me/all-wheels/part2")
    plain = tmp_path / "input" / "loose-wheels"
    plain.mkdir()
    shutil.copyfile(packages[1]["delta-1.0"], plain / packages[1]["delta-1.0"].name)

    report = _report(_runtime(venv, "install", "--json", input_root=tmp_path / "input"))

    installed = {item["name"]: item for item in report["installed"]}  # type: ignore[union-attr]
    assert set(installed) == {"alpha", "beta", "gamma"}
    assert all(item["verified"] for item in installed.values())
    assert len(report["wheelhouses"]) == 2  # type: ignore[arg-type]
    (warning,) = report["warnings"]  # type: ignore[misc]
    assert warning.startswith(f"{plain}: 1 wheel(s) without a manifest.json")
    assert "pass --allow-unverified to install them anyway" in warning
    assert "delta" not in venv.distributions()

    allowed = _runtime(venv, "install", "--allow-unverified", input_root=tmp_path / "input")

    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith(
        "kaggle-offline: installed 1 (delta 1.0), 1 of them UNVERIFIED (no manifest, no hash check)"
    )
    assert "installed delta 1.0 from " in allowed.stdout and "UNVERIFIED" in allowed.stdout
    assert venv.distributions()["delta"] == "1.0"


def test_a_named_folder_of_unhashed_wheels_needs_the_flag(
    venv: Venv, packages: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    plain = tmp_path / "loose"
    plain.mkdir()
    shutil.copyfile(packages[1]["delta-1.0"], plain / packages[1]["delta-1.0"].name)

    result = _runtime(venv, "install", "--wheelhouse", str(plain), input_root=tmp_path / "none")

    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {plain}: 1 wheel(s) without a manifest.json")
    assert "pass --allow-unverified" in result.stderr
    assert "delta" not in venv.distributions()


def test_conflicting_wheelhouses_install_nothing(
    venv: Venv,
    tmp_path_factory: pytest.TempPathFactory,
    packages: tuple[str, dict[str, Path]],
    tmp_path: Path,
) -> None:
    _attach(_bundle(tmp_path_factory, packages, ["beta==1.0"]), tmp_path / "input", "old-wheels")
    _attach(
        _bundle(tmp_path_factory, packages, ["beta==2.0", "gamma"]),
        tmp_path / "input",
        "new-wheels",
    )
    before = venv.distributions()

    result = _runtime(venv, "install", input_root=tmp_path / "input")

    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: beta: the wheelhouses disagree")
    assert venv.distributions() == before


def test_a_wheelhouse_for_another_python_names_the_profile_to_rebuild_with(
    venv: Venv,
    tmp_path_factory: pytest.TempPathFactory,
    packages: tuple[str, dict[str, Path]],
    tmp_path: Path,
) -> None:
    _attach(
        _bundle(tmp_path_factory, packages, ["gamma"], target="kaggle-py312"), tmp_path / "input"
    )

    result = _runtime(venv, "install", input_root=tmp_path / "input")

    assert result.returncode == 2
    assert "wheelhouse built for Python 3.12 (target profile 'kaggle-py312')" in result.stderr
    assert "rebuild it with `python -m bundler build --target kaggle-py311`" in result.stderr


def test_a_corrupt_manifest_or_a_missing_wheel_is_one_line(
    venv: Venv, bare_house: Path, tmp_path: Path
) -> None:
    house = _attach(bare_house, tmp_path / "input")
    (next((house / "wheels").glob("beta-*.whl"))).unlink()

    missing = _runtime(venv, "install", input_root=tmp_path / "input")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert (
        "beta-2.0-py3-none-any.whl is listed in manifest.json but missing from disk"
        in missing.stderr
    )

    (house / "manifest.json").write_text((house / "manifest.json").read_text()[:-40])
    corrupt = _runtime(venv, "install", input_root=tmp_path / "input")
    assert corrupt.returncode == 2 and corrupt.stderr.count("\n") == 1
    assert f"error: {house / 'manifest.json'}: corrupt manifest, not valid JSON" in corrupt.stderr


def test_the_fast_path_starts_no_process_among_a_thousand_distributions(
    bare_house: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    for index in range(1000):
        (site / f"filler_{index}-1.{index}.dist-info").mkdir(parents=True)
    for name, version in (("alpha", "1.0"), ("beta", "2.5"), ("gamma", "1.0")):
        (site / f"{name}-{version}.dist-info").mkdir()
    interpreter = Interpreter(versions=installed_versions([str(site)]))

    def _no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", _no_process)
    monkeypatch.setattr(subprocess, "Popen", _no_process)
    report = install([bare_house], interpreter=interpreter)

    assert not report.pip_ran and report.installed == ()
    assert {skip.name for skip in report.skipped} == {"alpha", "beta", "gamma"}
    assert report.summary().startswith("kaggle-offline: nothing to install, 3 already satisfied")


@pytest.fixture
def upgrade_house(
    tmp_path_factory: pytest.TempPathFactory, packages: tuple[str, dict[str, Path]]
) -> Path:
    """beta 2.0 as a requested upgrade of the kernel's beta 1.0."""
    return _bundle(tmp_path_factory, packages, ["beta>=2"], target=kernel_profile({"beta": "1.0"}))


@contextlib.contextmanager
def _holding_the_install_lock(venv: Venv) -> Iterator[None]:
    """What another install does while it runs: hold the environment's lock (and say who)."""
    with (venv.site_packages / LOCK_FILENAME).open("a+") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        stream.seek(0)
        stream.truncate()
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def test_an_install_waits_for_another_then_plans_again_and_reports_the_truth(
    kernel: Venv, upgrade_house: Path, packages: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}
    argv = [str(kernel.python), "-m", "runtime", "install", "--json", "--wheelhouse",
            str(upgrade_house)]  # fmt: skip
    with _holding_the_install_lock(kernel):
        waiting = subprocess.Popen(
            offline(argv), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert waiting.stderr is not None
        notice = waiting.stderr.readline()  # blocks until the install says it waits
        assert notice.startswith(
            f"waiting for another kaggle-offline install (pid {os.getpid()}) into this environment"
        ), notice
        # Meanwhile the other install does the upgrade.
        run_checked(offline([str(kernel.python), "-m", "pip", "install", "-q", "--no-index",
                             str(packages[1]["beta-2.0"])]))  # fmt: skip
    stdout, stderr = waiting.communicate(timeout=120)

    assert waiting.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["pip_ran"] is False and report["installed"] == []
    assert _versions(report, "skipped") == {"beta": "2.0"}
    assert any(w.startswith("waited ") for w in report["warnings"])


def test_an_install_that_cannot_get_the_lock_in_time_installs_nothing(
    kernel: Venv, upgrade_house: Path, tmp_path: Path
) -> None:
    with _holding_the_install_lock(kernel):
        result = _runtime(kernel, "install", "--wheelhouse", str(upgrade_house),
                          "--lock-timeout", "0.5", input_root=tmp_path / "none")  # fmt: skip

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: another kaggle-offline install (pid {os.getpid()}) into this environment still "
        f"holds {kernel.site_packages / LOCK_FILENAME} after 0 s; nothing was installed: let it "
        "finish, then run this again"
    )
    assert kernel.distributions()["beta"] == "1.0"


def test_pip_debris_of_a_killed_upgrade_is_reported_then_removed(
    kernel: Venv, upgrade_house: Path, packages: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    # What a pip killed during an upgrade leaves: the old version stashed under "~" names.
    site = kernel.site_packages
    shutil.copytree(site / "beta", site / "~eta")
    shutil.copytree(site / "beta-1.0.dist-info", site / "~eta-1.0.dist-info")
    assert "Ignoring invalid distribution ~eta" in kernel.run("-m", "pip", "list").stderr
    debris = f"{site / '~eta'}, {site / '~eta-1.0.dist-info'}"
    satisfied = tmp_path / "satisfied"
    write_wheelhouse(satisfied, [packages[1]["beta-1.0"]], target=kernel_profile())

    # Nothing to install (or a dry run): the run stays read-only and says how to remove it.
    for args in (
        ["--wheelhouse", str(satisfied)],
        ["--wheelhouse", str(upgrade_house), "--dry-run"],
    ):
        report = _report(_runtime(kernel, "install", "--json", *args, input_root=tmp_path / "none"))
        (warning,) = report["warnings"]  # type: ignore[misc]
        assert warning.startswith(
            f"pip's leftovers of an interrupted install, which make every pip run warn: {debris}; "
            "remove them with: rm -rf "
        )
        assert (site / "~eta").is_dir()

    # An install with something to do removes it, under the install lock.
    report = _report(_runtime(kernel, "install", "--json", "--wheelhouse", str(upgrade_house),
                              input_root=tmp_path / "none"))  # fmt: skip
    assert _versions(report) == {"beta": "2.0"}
    assert report["warnings"] == [f"removed pip's leftovers of an interrupted install: {debris}"]
    assert not (site / "~eta").exists() and not (site / "~eta-1.0.dist-info").exists()
    assert "Ignoring invalid distribution" not in kernel.run("-m", "pip", "list").stderr


def test_an_optional_wheel_that_fails_is_not_dropped_under_a_required_one_that_needs_it(
    venv: Venv, tmp_path: Path
) -> None:
    made = [
        make_wheel(tmp_path / "dist", "fancycodecs", "1.0"),
        make_wheel(tmp_path / "dist", "needy", "1.0", requires=["fancycodecs"]),
    ]
    house = tmp_path / "house"
    write_wheelhouse(house, made, target=kernel_profile(), optional=["fancycodecs"],
                     requires_dist={"needy": ["fancycodecs"]})  # fmt: skip
    (venv.site_packages / "fancycodecs").write_text("in the way\n")

    result = _runtime(venv, "install", "--wheelhouse", str(house), input_root=tmp_path / "none")

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    # Not a warning and a broken needy: an error that says why and what is in place.
    assert "(optional fancycodecs failed, and needy need(s) it)" in result.stderr
    assert "installed before the failure: " in result.stderr
    assert "fancycodecs" not in venv.distributions()
