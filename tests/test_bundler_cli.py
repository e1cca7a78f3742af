"""The CLI (``python -m bundler``) and the built-in target profiles."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bundler
from bundler.errors import BundlerError, ResolutionError
from bundler.profiles import builtin_profiles, get_profile, unconfirmed_reason
from runtime.contract.profile import MARKER_KEYS
from runtime.installer.capture import capture_current_profile
from tests.support.bundler_fixtures import make_fixture_index

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True, text=True, cwd=cwd, check=False,
    )  # fmt: skip


def test_builtin_profiles_describe_the_kaggle_kernels() -> None:
    py312, py311 = get_profile("kaggle-py312"), get_profile("kaggle-py311")
    for profile, abi in ((py312, "cp312"), (py311, "cp311")):
        assert set(profile.markers) == set(MARKER_KEYS)
        assert profile.markers["python_version"] == profile.python_version
        assert profile.abi == abi
        assert profile.tags[0] == f"{abi}-{abi}-linux_x86_64"  # as sys_tags() orders them
        for tag in (
            f"{abi}-{abi}-manylinux_2_35_x86_64",
            f"{abi}-abi3-manylinux_2_28_x86_64",
            f"{abi}-{abi}-manylinux2014_x86_64",
            f"{abi}-{abi}-manylinux1_x86_64",
            "cp32-abi3-manylinux_2_17_x86_64",
            "py3-none-any",
        ):
            assert tag in profile.tag_set
        assert f"{abi}-{abi}-manylinux_2_36_x86_64" not in profile.tag_set
        assert profile.preinstalled["numpy"] == "2.4.6"
        assert profile.preinstalled["torch"] == "2.10.0+cu128", "the GPU image's torch"
        assert len(profile.preinstalled) > 800
    assert "cp312-abi3-manylinux_2_28_x86_64" not in py311.tag_set
    assert unconfirmed_reason(py312) is None
    reason = unconfirmed_reason(py311)
    assert reason is not None and "python -m runtime profile" in reason


def test_a_captured_profile_file_is_a_target(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    capture_current_profile("my-kernel").dump(path)
    assert get_profile(str(path)).name == "my-kernel"


def test_profiles_command_lists_the_builtins() -> None:
    completed = _cli("profiles")
    assert completed.returncode == 0
    names = [line.split(":")[0] for line in completed.stdout.splitlines()]
    assert names == [profile.name for profile in builtin_profiles()]


def test_build_then_verify_then_tamper(tmp_path: Path, project_wheel: Path) -> None:
    index = make_fixture_index(tmp_path)
    house = tmp_path / "house"
    completed = _cli(
        "build", "ko-app", "tifffile>=2026.11", "--target", "kaggle-py312", "-o", str(house),
        "--index-url", index, "--cache-dir", str(tmp_path / "cache"),
        "--self-wheel", str(project_wheel), "--dataset-id", "tester/ko-wheels",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "vendored  5:" in out and "kaggle-offline==" in out
    assert "upgrades  tifffile 2026.3.3 -> 2026.11.1" in out
    assert "already in the kernel: numpy==2.4.6" in out
    assert f"next: kaggle datasets create -p {house} --dir-mode zip" in out
    manifest = json.loads((house / "manifest.json").read_text())
    assert manifest["self_wheel"] == project_wheel.name
    assert (house / "wheels" / project_wheel.name).is_file()
    metadata = json.loads((house / "dataset-metadata.json").read_text())
    assert metadata["id"] == "tester/ko-wheels"

    assert _cli("verify", str(house)).returncode == 0

    (house / "wheels" / "ko_lib-2.0-py3-none-any.whl").write_bytes(b"not a wheel")
    completed = _cli("verify", str(house))
    assert completed.returncode == 1
    assert completed.stdout.splitlines() == [
        line for line in completed.stdout.splitlines() if "ko_lib-2.0" in line
    ]
    assert len(completed.stdout.splitlines()) == 1


def test_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    completed = _cli(
        "build", "anything", "--target", "kaggle-py27", "-o", str(tmp_path), "--no-self"
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: unknown target profile 'kaggle-py27'")
    assert len(completed.stderr.strip().splitlines()) == 1
    completed = _cli("verify", str(tmp_path / "nothing"))
    assert completed.returncode == 1
    assert "manifest not found" in completed.stdout


def test_requirement_files_are_read_and_options_in_them_refused(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    (tmp_path / "base.txt").write_text("ko-lib>=1  # the library\n")
    (tmp_path / "reqs.txt").write_text("# tools\n-r base.txt\nko-backport \\\n  ==1.0\n")
    result = bundler.build(
        [], tmp_path / "house", requirement_files=[tmp_path / "reqs.txt"], index_url=index,
        cache_dir=tmp_path / "cache", include_self=False, dataset_id="tester/ko-wheels",
    )  # fmt: skip
    assert result.manifest.requested == ("ko-lib>=1", "ko-backport ==1.0")
    assert {e.name for e in result.manifest.wheels} == {"ko-lib", "ko-backport"}
    (tmp_path / "bad.txt").write_text("ko-lib\n--index-url http://example.invalid/simple\n")
    with pytest.raises(BundlerError, match=r"bad.txt:2: option --index-url"):
        bundler.build([], tmp_path / "house", requirement_files=[tmp_path / "bad.txt"])


@pytest.mark.parametrize(
    ("dataset_id", "title", "message"),
    [
        ("tester/x", None, "slug 'x' must be 3-50 lower-case letters"),
        ("no-owner", None, "id 'no-owner' must be OWNER/SLUG"),
        ("tester/ko-wheels", "abc", "title 'abc' must be 6-50 characters (--title)"),
    ],
)
def test_a_bad_dataset_id_or_title_is_refused_before_resolving(
    tmp_path: Path, dataset_id: str, title: str | None, message: str
) -> None:
    # An index that does not exist: resolving first would fail with a ResolutionError instead.
    with pytest.raises(BundlerError, match=re.escape(message)) as caught:
        bundler.build(
            ["ko-lib"], tmp_path / "house", index_url=(tmp_path / "no-index").as_uri(),
            cache_dir=tmp_path / "cache", include_self=False, dataset_id=dataset_id, title=title,
        )  # fmt: skip
    assert not isinstance(caught.value, ResolutionError)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "house").exists()


def test_the_cli_refuses_a_bad_dataset_id_in_one_line_before_resolving(tmp_path: Path) -> None:
    completed = _cli(
        "build", "ko-lib", "-o", str(tmp_path / "house"), "--no-self",
        "--index-url", (tmp_path / "no-index").as_uri(), "--cache-dir", str(tmp_path / "cache"),
        "--dataset-id", "tester/x",
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "error: slug 'x' must be 3-50 lower-case letters, digits and hyphens (--dataset-id)"
    ]
    assert not (tmp_path / "cache").exists()
