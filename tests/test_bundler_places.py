"""``bundler build``'s places (``-o`` and the cache): checked before the work, named when full.

The full disks are real: a tmpfs of one megabyte in a private mount namespace (tests/support/tmpfs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.packages import make_index, make_wheel
from tests.support.tmpfs import on_small_tmpfs, require_tmpfs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def noisy_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An index with one 2 MB wheel (random bytes do not compress)."""
    root = tmp_path_factory.mktemp("noisy")
    wheel = make_wheel(
        root / "dist", "noisy", "1.0", extra_files={"noisy/x.bin": os.urandom(2 << 20)}
    )
    return make_index(root / "index", [wheel])


def _build_argv(output: Path, cache: Path, index: str) -> list[str]:
    return [
        sys.executable, "-m", "bundler", "build", "noisy", "--target", "kaggle-py312",
        "-o", str(output), "--cache-dir", str(cache), "--index-url", index, "--no-self",
        "--dataset-id", "tester/noisy-wheels",
    ]  # fmt: skip


def _error(stderr: str) -> str:
    """The error line; progress lines ("resolving ...") go to stderr too. Never a traceback."""
    assert "Traceback" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=False)


def test_an_output_folder_without_room_for_the_wheels_is_refused_before_the_copy(
    tmp_path: Path, noisy_index: str
) -> None:
    require_tmpfs()
    small = tmp_path / "small"
    small.mkdir()
    argv = _build_argv(small / "house", tmp_path / "cache", noisy_index)
    script = '"$@"; echo "rc=$?"; ls -a "$0/house/wheels" 2>/dev/null || echo "no wheels/"'

    result = _run(on_small_tmpfs({small: "size=1m"}, ["sh", "-c", script, str(small), *argv]))

    assert "rc=2" in result.stdout, result.stdout + result.stderr
    error = _error(result.stderr)
    assert error.startswith(
        f"error: no space left on {small / 'house'}: copying 1 wheel(s) needs about 2.0 MB"
    )
    assert "no wheels/" in result.stdout  # refused before a byte was copied


def test_a_cache_that_fills_up_says_no_space_left_on_the_cache(
    tmp_path: Path, noisy_index: str
) -> None:
    require_tmpfs()
    small = tmp_path / "cache"
    small.mkdir()
    argv = _build_argv(tmp_path / "house", small, noisy_index)

    result = _run(on_small_tmpfs({small: "size=1m"}, argv))

    assert result.returncode == 2, result.stderr
    # The cache itself, or the folder in it that the write failed in.
    assert _error(result.stderr).startswith(f"error: no space left on {small}")


@pytest.mark.parametrize("option", ["-o", "--cache-dir"])
def test_a_place_under_a_file_is_one_line_before_any_work(
    tmp_path: Path, noisy_index: str, option: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    output, cache = tmp_path / "house", tmp_path / "cache"
    if option == "-o":
        output = blocker / "house"
    else:
        cache = blocker / "cache"

    result = _run(_build_argv(output, cache, noisy_index))

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{blocker} is a file, so {option}" in result.stderr
    assert not (tmp_path / "house").exists() and not (tmp_path / "cache").exists()
