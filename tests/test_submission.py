"""submission.zip: written atomically, read back like a scorer would, every defect named."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from runtime.contract.errors import SubmissionError
from runtime.volumes.submission import (
    check_submission,
    partial_path,
    validate_submission,
    write_submission,
)
from runtime.volumes.tiff import write_mask

SHAPES = {"101": (4, 12, 10), "202": (3, 8, 8)}


def _masks(folder: Path) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(0)
    members = []
    for volume_id, shape in SHAPES.items():
        path = folder / f"{volume_id}.tif"
        write_mask(path, (rng.random(shape) > 0.5).astype(np.uint8))
        members.append((volume_id, path))
    return members


def _tiff_bytes(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    # minisblack: tifffile would otherwise store a 3- or 4-slice stack as RGB(A) planes
    tifffile.imwrite(buffer, array, **{"photometric": "minisblack", **options})
    return buffer.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _good_members() -> dict[str, bytes]:
    return {f"{i}.tif": _tiff_bytes(np.zeros(s, np.uint8)) for i, s in SHAPES.items()}


def test_write_submission_zips_validates_and_returns_the_hash(tmp_path: Path) -> None:
    out = tmp_path / "out" / "submission.zip"
    digest = write_submission(out, _masks(tmp_path), SHAPES)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["101.tif", "202.tif"]
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        with Image.open(io.BytesIO(archive.read("101.tif"))) as image:
            assert image.n_frames == 4
    assert validate_submission(out, SHAPES) == []
    check_submission(out, SHAPES)
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.zip"]  # no temp left


@pytest.mark.parametrize(
    ("defect", "expected"),
    [
        ("2d", "101.tif: a 2D image of shape (12, 10)"),
        ("tiff-name", "101.tiff: must be named <id>.tif"),
        ("value-2", "101.tif: values {0, 1, 2}"),
        ("wrong-shape", "101.tif: shape (4, 12, 9), its input is (4, 12, 10)"),
        ("missing-id", "missing ids (no <id>.tif in the zip): 202"),
        ("nested", "sub/101.tif: inside a folder"),
        ("uint16", "101.tif: dtype uint16, must be uint8"),
        ("extra-id", "303.tif: id 303 is not one of the inputs"),
        ("not-a-tiff", "101.tif: not a TIFF file"),
    ],
)
def test_validation_names_each_defect(tmp_path: Path, defect: str, expected: str) -> None:
    members = _good_members()
    if defect == "2d":
        members["101.tif"] = _tiff_bytes(np.zeros((12, 10), np.uint8))
    elif defect == "tiff-name":
        members["101.tiff"] = members.pop("101.tif")
    elif defect == "value-2":
        mask = np.zeros(SHAPES["101"], np.uint8)
        mask[0, 0, :3] = (0, 1, 2)
        members["101.tif"] = _tiff_bytes(mask)
    elif defect == "wrong-shape":
        members["101.tif"] = _tiff_bytes(np.zeros((4, 12, 9), np.uint8))
    elif defect == "missing-id":
        del members["202.tif"]
    elif defect == "nested":
        members["sub/101.tif"] = members.pop("101.tif")
    elif defect == "uint16":
        members["101.tif"] = _tiff_bytes(np.zeros(SHAPES["101"], np.uint16))
    elif defect == "extra-id":
        members["303.tif"] = members["202.tif"]
    elif defect == "not-a-tiff":
        members["101.tif"] = b"PK\x03\x04 not a tiff at all"
    path = _zip(tmp_path / "submission.zip", members)

    problems = validate_submission(path, SHAPES)
    assert any(problem.startswith(expected) for problem in problems), problems
    assert all("\n" not in problem for problem in problems)
    with pytest.raises(SubmissionError) as error:
        check_submission(path, SHAPES)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_every_defect_is_listed_at_once(tmp_path: Path) -> None:
    members = {
        "101.tiff": _tiff_bytes(np.zeros(SHAPES["101"], np.uint8)),
        "202.tif": _tiff_bytes(np.full(SHAPES["202"], 2, np.uint8)),
    }
    problems = validate_submission(_zip(tmp_path / "s.zip", members), SHAPES)
    assert len(problems) == 3  # the .tiff name, the 2s, and 101 therefore missing


def test_page_count_must_match_z(tmp_path: Path) -> None:
    """A volumetric single-page mask has the right array shape but one page: the scorer's
    page-by-page readers would see a 2D image."""
    mask = np.zeros(SHAPES["101"], np.uint8)
    members = _good_members()
    members["101.tif"] = _tiff_bytes(mask, volumetric=True, tile=(4, 16, 16))
    problems = validate_submission(_zip(tmp_path / "s.zip", members), SHAPES)
    assert any("1 page(s) for 4 z slices" in p for p in problems), problems


def test_unreadable_zips_are_problems_not_crashes(tmp_path: Path) -> None:
    assert "no such file" in validate_submission(tmp_path / "nope.zip", SHAPES)[0]
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    assert "not a readable zip" in validate_submission(tmp_path / "bad.zip", SHAPES)[0]


def test_an_invalid_submission_is_kept_as_partial_and_never_under_the_real_name(
    tmp_path: Path,
) -> None:
    out = tmp_path / "submission.zip"
    members = _masks(tmp_path)
    expected = {**SHAPES, "303": (2, 2, 2)}
    with pytest.raises(SubmissionError) as error:
        write_submission(out, members, expected)
    message = str(error.value)
    assert "missing ids" in message and "303" in message and "\n" not in message
    assert not out.exists()
    partial = partial_path(out)
    assert partial.name == "submission.partial.zip" and str(partial) in message
    assert validate_submission(partial, SHAPES) == []  # what was made is intact in it


def test_an_existing_submission_survives_a_failed_write(tmp_path: Path) -> None:
    out = tmp_path / "submission.zip"
    members = _masks(tmp_path)
    write_submission(out, members, SHAPES)
    before = out.read_bytes()
    with pytest.raises(FileNotFoundError):
        write_submission(out, [*members, ("303", tmp_path / "303.tif")], SHAPES)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".zip") == ["submission.zip"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_equal_masks_give_an_equal_zip_whatever_the_file_times(tmp_path: Path) -> None:
    members = _masks(tmp_path)
    first = write_submission(tmp_path / "a.zip", members, SHAPES)
    for _, path in members:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    assert write_submission(tmp_path / "b.zip", members, SHAPES) == first
