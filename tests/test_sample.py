"""``runtime sample``: a competition-like root of LZW stacks, labels and test.csv."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from runtime.samples.sample import write_sample
from runtime.volumes.inputs import find_volumes
from runtime.volumes.tiff import read_volume
from tests.test_volumes import PROJECT_ROOT, run_with_hidden_modules

SHAPE = (12, 20, 16)


def _ids(root: Path) -> list[str]:
    with open(root / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(set(row) == {"id", "scroll_id"} for row in rows)
    return [row["id"] for row in rows]


def test_sample_is_a_competition_root_of_lzw_stacks(tmp_path: Path) -> None:
    root = write_sample(tmp_path / "data", n=2, shape=SHAPE, seed=3)
    ids = _ids(root)
    assert len(ids) == 2 and len(set(ids)) == 2 and all(i.isdigit() for i in ids)
    assert sorted(p.stem for p in (root / "test_images").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (root / "train_labels").iterdir()) == sorted(ids)

    for volume_id in ids:
        image_path = root / "test_images" / f"{volume_id}.tif"
        with tifffile.TiffFile(image_path) as tif:
            assert len(tif.pages) == SHAPE[0]  # multipage: one page per z slice
            assert {page.compression for page in tif.pages} == {tifffile.COMPRESSION.LZW}
            image = tif.asarray()
        assert image.shape == SHAPE and image.dtype == np.uint8 and image.std() > 0
        with Image.open(image_path) as pil:
            assert pil.n_frames == SHAPE[0]
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        assert label.shape == SHAPE and set(np.unique(label)) <= {0, 1, 2}
        assert (label == 1).any()

    inputs = find_volumes(root)
    assert [s.id for s in inputs.sources] == ids and not inputs.missing


def test_the_same_seed_writes_the_same_sample(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", n=1, shape=SHAPE, seed=7)
    second = write_sample(tmp_path / "b", n=1, shape=SHAPE, seed=7)
    other = write_sample(tmp_path / "c", n=1, shape=SHAPE, seed=8)
    (volume_id,) = _ids(first)
    assert _ids(second) == [volume_id] and _ids(other) != [volume_id]
    a = read_volume(first / "test_images" / f"{volume_id}.tif")
    b = read_volume(second / "test_images" / f"{volume_id}.tif")
    assert np.array_equal(a, b)


def test_sample_reads_identically_without_imagecodecs(tmp_path: Path) -> None:
    root = write_sample(tmp_path, n=1, shape=SHAPE, seed=1)
    (volume_id,) = _ids(root)
    path = root / "test_images" / f"{volume_id}.tif"
    output = run_with_hidden_modules(
        {"imagecodecs"},
        f"""
        import numpy as np
        from runtime.volumes.tiff import read_volume_with_header
        header, data = read_volume_with_header({str(path)!r})
        np.save("image.npy", data)
        print(header.decoder)
        """,
        tmp_path,
    )
    assert output.strip() == "pillow"
    assert np.array_equal(np.load(tmp_path / "image.npy"), read_volume(path))


def test_sample_command_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "sample",
            "-o",
            str(tmp_path / "s"),
            "--n",
            "2",
            "--shape",
            "8",
            "16",
            "16",
            "--seed",
            "5",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "wrote 2 volume(s) of shape 8x16x16" in completed.stdout
    assert len(_ids(tmp_path / "s")) == 2

    bad = subprocess.run(
        [sys.executable, "-m", "runtime", "sample", "-o", str(tmp_path / "t"), "--n", "0"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


@pytest.mark.parametrize(("n", "shape"), [(0, SHAPE), (1, (0, 4, 4)), (1, (4, 4))])
def test_bad_arguments_are_refused(tmp_path: Path, n: int, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        write_sample(tmp_path, n=n, shape=shape)  # type: ignore[arg-type]


def test_sample_without_numpy_says_which_extra_it_needs(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The README's bundler-only environment has no numpy: one line naming the fix, no traceback."""
    import os

    from tests.support.venvs import copy_venv, run_checked, runtime_source_path, session_template

    bare = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}

    result = run_checked(
        [str(bare.python), "-m", "runtime", "sample", "-o", str(tmp_path / "out")],
        env=env,
        check=False,
    )

    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: `runtime sample` needs numpy, which is not installed in this environment: "
        "python -m pip install 'numpy>=1.26'; in a Kaggle kernel the image has it: run the "
        "attached wheelhouse's bootstrap.py first, then python -m runtime doctor\n"
    )
