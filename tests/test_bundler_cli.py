"""The CLI (``python -m bundler``) and the built-in target profiles."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import bundler
from bundler.errors import BundlerError, ResolutionError
from bundler.resolution.profiles import builtin_profiles, get_profile, unconfirmed_reason
from runtime.contract.profile import MARKER_KEYS
from runtime.installer.capture import capture_current_profile
from tests.support.bundler_fixtures import make_fixture_index
from tests.support.packages import make_wheel

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
    for profile in (py312, py311):
        # The GPU image's CUDA stack, as torch 2.10.0+cu128's own metadata pins it.
        assert profile.preinstalled["triton"] == "3.6.0"
        assert profile.preinstalled["nvidia-cudnn-cu12"] == "9.10.2.21"
        assert profile.preinstalled["nvidia-nccl-cu12"] == "2.27.5"  # the CPU list has 2.29.7
        assert "the CPU image list has 2.29.7" in profile.provenance["nvidia-nccl-cu12"]
        source = profile.provenance["triton"]
        assert "torch 2.10.0+cu128's Requires-Dist" in source
        assert "torch-2.10.0-3-cp312-cp312-manylinux_2_28_x86_64.whl (sha256 98c01b8b" in source
        # Declared requirements of the kernel's packages, each with the wheel it was read from.
        assert any(
            line.startswith("numpy>=2") for line in profile.preinstalled_requires["opencv-python"]
        )
        assert "opencv_python-4.13.0.92" in profile.provenance["opencv-python"]
        assert len(profile.preinstalled_requires) > 200
    assert unconfirmed_reason(py312) is None
    reason = unconfirmed_reason(py311)
    assert reason is not None and "python -m runtime profile" in reason


def test_a_captured_profile_file_is_a_target(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    capture_current_profile("my-kernel").dump(path)
    profile = get_profile(str(path))
    assert profile.name == "my-kernel"
    # Every installed distribution's declared requirements come along, for replacement checks.
    assert set(profile.preinstalled_requires) == set(profile.preinstalled)
    assert any(line.startswith("pluggy") for line in profile.preinstalled_requires["pytest"])


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
    assert "upgrades  tifffile 2026.3.3 -> 2026.11.1 (requested)" in out
    assert re.search(
        r"checked   replacements against the declared requirements of 2\d\d kernel", out
    )
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
    ],
)
def test_crafted_dataset_metadata_is_one_verify_line_and_a_fresh_build(
    tmp_path: Path, project_wheel: Path, text: str, expected: str
) -> None:
    index = make_fixture_index(tmp_path)
    house = tmp_path / "house"
    build = (
        "build", "ko-app", "--target", "kaggle-py312", "-o", str(house), "--index-url", index,
        "--cache-dir", str(tmp_path / "cache"), "--self-wheel", str(project_wheel),
        "--dataset-id", "tester/ko-wheels",
    )  # fmt: skip
    assert _cli(*build).returncode == 0
    (house / "dataset-metadata.json").write_text(text, encoding="utf-8")
    completed = _cli("verify", str(house))
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    [line] = [line for line in completed.stdout.splitlines() if "dataset-metadata.json" in line]
    assert expected in line
    # A rebuild over it is not taken for an update of a readable earlier build.
    rebuilt = _cli(*build)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "kaggle datasets create" in rebuilt.stdout


def test_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    completed = _cli(
        "build", "anything", "--target", "kaggle-py27", "-o", str(tmp_path), "--no-self"
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: unknown target profile 'kaggle-py27'")
    assert len(completed.stderr.strip().splitlines()) == 1
    completed = _cli("verify", str(tmp_path / "nothing"))
    assert completed.returncode == 2
    assert completed.stderr == (
        f"error: {tmp_path / 'nothing'} does not exist: give the wheelhouse folder that "
        "python -m bundler build -o DIR wrote\n"
    )
    (tmp_path / "empty").mkdir()
    completed = _cli("verify", str(tmp_path / "empty"))
    assert completed.returncode == 1
    assert "manifest not found" in completed.stdout


def test_requirement_files_are_read_with_comments_continuations_and_nesting(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    (tmp_path / "base.txt").write_text("ko-lib>=1  # the library\n")
    (tmp_path / "reqs.txt").write_text("# tools\n-r base.txt\nko-backport \\\n  ==1.0\n")
    result = bundler.build(
        [], tmp_path / "house", requirement_files=[tmp_path / "reqs.txt"], index_url=index,
        cache_dir=tmp_path / "cache", include_self=False, dataset_id="tester/ko-wheels",
    )  # fmt: skip
    assert result.manifest.requested == ("ko-lib>=1", "ko-backport ==1.0")
    assert {e.name for e in result.manifest.wheels} == {"ko-lib", "ko-backport"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_lock_file_with_hashes_an_index_find_links_and_constraints(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    lib = _sha256(tmp_path / "index" / "simple" / "ko-lib" / "ko_lib-2.0-py3-none-any.whl")
    beta = _sha256(make_wheel(tmp_path / "lock" / "local", "ko-beta", "2.0b1"))
    (tmp_path / "lock" / "constraints.txt").write_text("ko-lib<3\n")
    lock = tmp_path / "lock" / "requirements.txt"
    lock.write_text(  # as `uv pip compile --generate-hashes` writes them
        f"--index-url {index}\n--find-links local\n-c constraints.txt\n"
        f"ko-lib==2.0 \\\n    --hash=sha256:{lib} \\\n    --hash=sha256:{'0' * 64}\n"
        f"ko-beta==2.0b1 \\\n    --hash=sha256:{beta}\n"
    )
    result = bundler.build(
        [], tmp_path / "house", requirement_files=[lock], cache_dir=tmp_path / "cache",
        include_self=False, dataset_id="tester/ko-wheels",
    )  # fmt: skip
    assert {e.name: e.sha256 for e in result.manifest.wheels} == {"ko-lib": lib, "ko-beta": beta}
    assert result.problems == ()

    lock.write_text(f"--index-url {index}\nko-lib==2.0 --hash=sha256:{'1' * 64}\n")
    with pytest.raises(ResolutionError) as caught:
        bundler.build(
            [], tmp_path / "house2", requirement_files=[lock], cache_dir=tmp_path / "cache",
            include_self=False, dataset_id="tester/ko-wheels",
        )  # fmt: skip
    message = str(caught.value)
    assert "\n" not in message, repr(message)
    assert message.startswith("ko-lib==2.0: the file's sha256 ") and "1111" in message


def test_pre_releases_only_with_pre(tmp_path: Path) -> None:
    local = tmp_path / "local"
    make_wheel(local, "ko-beta", "2.0b1")
    make_wheel(local, "ko-beta", "1.0")
    (tmp_path / "pre.txt").write_text("--pre\nko-beta\n")
    common = {"cache_dir": tmp_path / "cache", "include_self": False,
              "dataset_id": "tester/ko-wheels", "index_url": (tmp_path / "none").as_uri(),
              "find_links": [str(local)]}  # fmt: skip
    stable = bundler.build(["ko-beta"], tmp_path / "a", **common)
    assert stable.manifest.wheel("ko-beta").version == "1.0"
    for kwargs in ({"pre": True}, {"requirement_files": [tmp_path / "pre.txt"]}):
        requirements = [] if "requirement_files" in kwargs else ["ko-beta"]
        result = bundler.build(requirements, tmp_path / "b", **common, **kwargs)
        assert result.manifest.wheel("ko-beta").version == "2.0b1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-e .", "an editable requirement cannot go into a wheelhouse"),
        ("ko-lib --config-settings=a=b", "--config-settings is not supported here"),
        ("--frobnicate", "unknown option --frobnicate"),
        ("ko-lib --hash=md5:abc", "is not ALGORITHM:HEXDIGEST"),
    ],
)
def test_requirement_file_lines_the_bundler_cannot_honour(
    tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "bad.txt").write_text(f"ko-lib\n{line}\n")
    with pytest.raises(BundlerError, match=re.escape(message)) as caught:
        bundler.build([], tmp_path / "house", requirement_files=[tmp_path / "bad.txt"])
    assert str(caught.value).startswith(f"{tmp_path / 'bad.txt'}:2: ")


def test_options_and_requirements_may_be_intermixed(tmp_path: Path) -> None:
    index = make_fixture_index(tmp_path)
    house = tmp_path / "house"
    completed = _cli(
        "build", "ko-lib", "--optional", "ko-codecs312", "ko-backport", "--target", "kaggle-py311",
        "-o", str(house), "ko-codecs312", "--index-url", index, "--no-self",
        "--cache-dir", str(tmp_path / "cache"), "--dataset-id", "tester/ko-wheels",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    manifest = json.loads((house / "manifest.json").read_text())
    assert manifest["requested"] == ["ko-lib", "ko-backport", "ko-codecs312"]
    assert [m["name"] for m in manifest["missing_optional"]] == ["ko-codecs312"]


def test_a_bad_output_path_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    for output in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        completed = _cli("build", "ko-lib", "-o", str(output), "--no-self")
        assert completed.returncode == 2
        (line,) = completed.stderr.splitlines()
        assert line.startswith(f"error: {output}: ") and "Traceback" not in completed.stderr


def test_build_refuses_a_folder_that_would_exceed_fifty_top_level_files(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    # A folder a build wrote (any other non-empty folder is refused before counting).
    (house / "manifest.json").write_text('{"wheels": []}')
    (house / "dataset-metadata.json").write_text('{"id": "tester/ko-wheels"}')
    for number in range(46):
        (house / f"note-{number}.txt").write_text("x")
    with pytest.raises(BundlerError, match=r"holds 46 other top-level files, 51 with"):
        bundler.build(["ko-lib"], house, index_url=(tmp_path / "no-index").as_uri(),
                      include_self=False, dataset_id="tester/ko-wheels")  # fmt: skip


def test_build_prints_every_problem_verify_finds_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = make_fixture_index(tmp_path)
    env_without_user = {k: v for k, v in os.environ.items() if k != "KAGGLE_USERNAME"}
    completed = subprocess.run(
        [sys.executable, "-m", "bundler", "build", "ko-lib", "-o", str(tmp_path / "house"),
         "--index-url", index, "--no-self", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=ROOT, env=env_without_user, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    problems = [line for line in completed.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and "placeholder owner INSERT_OWNER" in problems[0]
    assert completed.stdout.index("vendored") < completed.stdout.index("problem: ")
    assert "next: kaggle datasets create" not in completed.stdout


def test_a_resolution_leaves_no_temporary_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = make_fixture_index(tmp_path)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    bundler.build(
        ["ko-app"], tmp_path / "house", index_url=index, cache_dir=tmp_path / "cache",
        include_self=False, dataset_id="tester/ko-wheels",
    )  # fmt: skip
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(
    ("dataset_id", "title", "message"),
    [
        ("tester/x", None, "slug 'x' must be 6-50 lower-case letters"),
        ("tester/abcde", None, "slug 'abcde' must be 6-50 lower-case letters"),
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
        "error: slug 'x' must be 6-50 lower-case letters, digits and hyphens, as the kaggle CLI "
        "requires (--dataset-id)"
    ]
    assert not (tmp_path / "cache").exists()
