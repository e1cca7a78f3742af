"""What the installer reads from files is bounded: sizes, counts and file kinds cannot cost more.

A manifest that is a named pipe or a sparse file of gigabytes, a wheel swapped for a giant file,
a METADATA whose headers never end: each is refused in one line after reading a bounded amount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.contract.errors import HashMismatchError, ManifestError, WheelhouseError
from runtime.contract.wheel_archive import MAX_HEADER_BYTES, read_wheel_archive
from runtime.installer.discovery import find_wheelhouses, open_wheelhouse
from runtime.installer.plan import PlannedWheel
from runtime.installer.staging import stage_wheel

ROOT = Path(__file__).resolve().parent.parent


def _search_in_a_child(root: Path) -> subprocess.CompletedProcess[str]:
    """A search of ``root`` in another process, so that a hang is a failed test, not a stuck run."""
    code = (
        "import sys; from runtime.installer.discovery import find_wheelhouses as f; "
        "d = f(sys.argv[1]); print(len(d.wheelhouses)); [print(p) for p in d.problems]"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_named_pipe_called_manifest_json_never_hangs_the_search(tmp_path: Path) -> None:
    ours = tmp_path / "input" / "datasets" / "me" / "wheels"
    ours.mkdir(parents=True)
    os.mkfifo(ours / "manifest.json")
    (ours / "bootstrap.py").write_text("# a wheelhouse marker\n")
    other = tmp_path / "input" / "datasets" / "someone" / "data"
    other.mkdir(parents=True)
    os.mkfifo(other / "manifest.json")  # not a wheelhouse: skipped

    result = _search_in_a_child(tmp_path / "input")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "0",
        f"{ours / 'manifest.json'}: unreadable manifest (not a regular file)",
    ]


def test_a_manifest_of_gigabytes_is_refused_without_reading_it(tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    folder.mkdir()
    with (folder / "manifest.json").open("wb") as stream:
        stream.truncate(4 << 30)  # sparse: 4 GiB that cost nothing on disk, nor to refuse

    with pytest.raises(ManifestError, match="larger than 64 MiB") as refused:
        open_wheelhouse(folder)
    assert str(refused.value).startswith(f"{folder / 'manifest.json'}: unreadable manifest")
    # Found by the search: skipped unread where nothing says it is ours, refused where it is.
    assert find_wheelhouses(tmp_path).problems == ()
    (folder / "bootstrap.py").write_text("# a wheelhouse marker\n")
    (problem,) = find_wheelhouses(tmp_path).problems
    assert str(problem) == str(refused.value)


def test_a_wheel_swapped_for_a_giant_file_is_not_copied_whole(tmp_path: Path) -> None:
    giant = tmp_path / "house" / "alpha-1.0-py3-none-any.whl"
    giant.parent.mkdir()
    with giant.open("wb") as stream:
        stream.truncate(8 << 30)  # sparse 8 GiB where the manifest says 1000 bytes
    wheel = PlannedWheel(
        name="alpha", version="1.0", filename=giant.name, source=giant,
        wheelhouse=giant.parent, sha256="0" * 64, size=1000,
    )  # fmt: skip
    stage = tmp_path / "stage"
    stage.mkdir()

    with pytest.raises(HashMismatchError, match=r"\(more than 1000 bytes\)"):
        stage_wheel(wheel, stage)
    assert (stage / giant.name).stat().st_size == 1001


def _wheel_with_metadata(path: Path, metadata: bytes) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("alpha-1.0.dist-info/METADATA", metadata)
        archive.writestr("alpha/__init__.py", "")
    return path


def test_metadata_is_read_up_to_its_headers_only(tmp_path: Path) -> None:
    headers = b"Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n"
    # A description of 32 MiB after the headers is never read (it compresses to ~32 KiB).
    body = b"\n" + b"x" * (32 << 20)
    wheel = _wheel_with_metadata(tmp_path / "alpha-1.0-py3-none-any.whl", headers + body)
    archive = read_wheel_archive(wheel)
    assert (archive.name, archive.version) == ("alpha", "1.0")

    endless = headers + b"X-Filler: " + b"y" * 1000 + b"\n"
    endless *= MAX_HEADER_BYTES // len(endless) + 2  # headers that run past the bound
    (tmp_path / "liar").mkdir()
    liar = _wheel_with_metadata(tmp_path / "liar" / wheel.name, endless)
    with pytest.raises(WheelhouseError, match="METADATA's headers run past 1 MiB"):
        read_wheel_archive(liar)
