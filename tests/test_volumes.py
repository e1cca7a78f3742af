"""Reading 3D TIFFs with and without imagecodecs, writing masks, and finding the inputs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from runtime.contract.errors import InputError, VolumeError
from runtime.volumes.inputs import find_volumes
from runtime.volumes.tiff import (
    read_volume,
    read_volume_header,
    read_volume_with_header,
    write_mask,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHAPE = (5, 24, 20)


# --- helpers -------------------------------------------------------------------------------------
def run_with_hidden_modules(hidden: set[str], code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter where ``hidden`` top-level modules cannot be imported.

    Returns its stdout. A meta-path finder that raises ImportError is what a kernel without the
    package looks like to ``import`` (and to tifffile's own ``try: import imagecodecs``).
    """
    prelude = textwrap.dedent(
        f"""
        import sys
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(hidden)!r}:
                    raise ImportError(f"{{name}} is hidden for this test")
                return None
        sys.meta_path.insert(0, _Hide())
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def volume_of(dtype: str, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.normal(100, 30, shape).astype(np.float32)
    high = np.iinfo(dtype).max
    # Smooth-ish data so LZW and PackBits have runs to compress, plus noise.
    ramp = np.linspace(0, high // 2, shape[-1], dtype=np.float64)[None, None, :]
    data = ramp + rng.integers(0, high // 4, shape)
    return data.astype(dtype)


def save_with_pillow(path: Path, volume: np.ndarray, compression: str | None) -> Path:
    pages = [Image.fromarray(plane) for plane in volume]
    extra = {"compression": compression} if compression else {}
    pages[0].save(path, save_all=True, append_images=pages[1:], **extra)
    return path


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- writing masks -------------------------------------------------------------------------------
def test_mask_round_trip_reads_identically_with_tifffile_and_pillow(tmp_path: Path) -> None:
    mask = (np.random.default_rng(1).random((7, 33, 29)) > 0.7).astype(np.uint8)
    path = tmp_path / "123.tif"
    write_mask(path, mask)

    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 7  # one page per z slice
        assert all(page.compression == 1 for page in tif.pages)  # uncompressed
        assert np.array_equal(tif.asarray(), mask)
    with Image.open(path) as image:
        assert image.n_frames == 7
        pages = []
        for z in range(7):
            image.seek(z)
            assert image.mode == "L"
            pages.append(np.asarray(image))
    assert np.array_equal(np.stack(pages), mask)
    assert np.array_equal(read_volume(path), mask)
    assert [p.name for p in tmp_path.iterdir()] == ["123.tif"]  # no temporary left behind


def test_mask_of_one_slice_stays_3d_and_bool_masks_are_accepted(tmp_path: Path) -> None:
    mask = np.zeros((1, 8, 9), dtype=bool)
    mask[0, 2:4, 3:7] = True
    write_mask(tmp_path / "a.tif", mask)
    back = read_volume(tmp_path / "a.tif")
    assert back.shape == (1, 8, 9) and back.dtype == np.uint8
    assert np.array_equal(back, mask.astype(np.uint8))


@pytest.mark.parametrize(
    ("mask", "complaint"),
    [
        (np.full((2, 4, 4), 2, dtype=np.uint8), "only 0 and 1"),
        (np.zeros((2, 4, 4), dtype=np.float32), "dtype float32"),
        (np.zeros((4, 4), dtype=np.uint8), "3D"),
        (np.zeros((0, 4, 4), dtype=np.uint8), "3D"),
    ],
)
def test_bad_masks_are_refused_and_the_old_file_survives(
    tmp_path: Path, mask: np.ndarray, complaint: str
) -> None:
    path = tmp_path / "1.tif"
    good = np.ones((2, 4, 4), dtype=np.uint8)
    write_mask(path, good)
    with pytest.raises(VolumeError) as error:
        write_mask(path, mask)
    assert complaint in one_line(error) and str(path) in str(error.value)
    assert np.array_equal(read_volume(path), good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.tif"]


# --- reading, with imagecodecs -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw", "packbits", "tiff_adobe_deflate"])
def test_reads_pillow_written_stacks(tmp_path: Path, dtype: str, compression: str | None) -> None:
    volume = volume_of(dtype)
    path = save_with_pillow(tmp_path / "v.tif", volume, compression)
    header, data = read_volume_with_header(path)
    assert header.shape == SHAPE and header.pages == SHAPE[0] and header.dtype == dtype
    assert data.dtype == volume.dtype
    assert np.array_equal(data, volume)


@pytest.mark.parametrize("compression", [None, "lzw", "zlib"])
def test_reads_a_single_volumetric_page_and_big_endian_stacks(
    tmp_path: Path, compression: str | None
) -> None:
    volume = volume_of("uint16")
    tifffile.imwrite(
        tmp_path / "3d.tif", volume, compression=compression, volumetric=True, tile=(5, 16, 16)
    )
    header, data = read_volume_with_header(tmp_path / "3d.tif")
    assert header.pages == 1 and header.shape == SHAPE
    assert np.array_equal(data, volume)

    tifffile.imwrite(tmp_path / "be.tif", volume, byteorder=">", compression=compression)
    data = read_volume(tmp_path / "be.tif")
    assert data.dtype == np.dtype("uint16") and data.dtype.isnative
    assert np.array_equal(data, volume)


def test_reads_from_a_binary_stream(tmp_path: Path) -> None:
    volume = volume_of("uint8")
    data = save_with_pillow(tmp_path / "v.tif", volume, "tiff_lzw").read_bytes()
    assert np.array_equal(read_volume(io.BytesIO(data), name="member.tif"), volume)


# --- reading, without imagecodecs ----------------------------------------------------------------
def test_without_imagecodecs_lzw_and_packbits_are_read_by_pillow_identically(
    tmp_path: Path,
) -> None:
    cases: dict[str, np.ndarray] = {}
    for dtype in ("uint8", "uint16", "float32"):
        for compression in ("tiff_lzw", "packbits"):
            name = f"pil-{dtype}-{compression}.tif"
            cases[name] = volume_of(dtype, seed=len(cases))
            save_with_pillow(tmp_path / name, cases[name], compression)
    cases["tifffile-lzw-predictor.tif"] = volume_of("uint8", seed=9)
    tifffile.imwrite(
        tmp_path / "tifffile-lzw-predictor.tif",
        cases["tifffile-lzw-predictor.tif"],
        compression="lzw",
        predictor=True,
    )
    cases["raw.tif"] = volume_of("uint16", seed=10)
    tifffile.imwrite(tmp_path / "raw.tif", cases["raw.tif"])
    # tifffile finds out only while decoding that zstd needs a module (before Python 3.14).
    cases["zstd.tif"] = volume_of("uint8", seed=11)
    tifffile.imwrite(tmp_path / "zstd.tif", cases["zstd.tif"], compression="zstd")

    output = run_with_hidden_modules(
        {"imagecodecs"},
        f"""
        import json, numpy as np
        from runtime.volumes.tiff import imagecodecs_available, read_volume_with_header
        assert not imagecodecs_available()
        decoders = {{}}
        for name in {sorted(cases)!r}:
            header, data = read_volume_with_header(name)
            np.save(name + ".npy", data)
            decoders[name] = header.decoder
        print(json.dumps(decoders))
        """,
        tmp_path,
    )
    decoders = json.loads(output)
    for name, volume in cases.items():
        back = np.load(tmp_path / f"{name}.npy")
        assert back.dtype == volume.dtype and np.array_equal(back, volume), name
        native = name == "raw.tif" or (name == "zstd.tif" and sys.version_info >= (3, 14))
        expected = "tifffile" if native else "pillow"
        assert decoders[name] == expected, name


def test_without_imagecodecs_an_undecodable_codec_names_file_and_codec(tmp_path: Path) -> None:
    # A single volumetric LZW page: tifffile needs imagecodecs and Pillow reads no 3D pages.
    tifffile.imwrite(
        tmp_path / "vol.tif",
        volume_of("uint8"),
        compression="lzw",
        volumetric=True,
        tile=(5, 16, 16),
    )
    output = run_with_hidden_modules(
        {"imagecodecs"},
        """
        from runtime.contract.errors import VolumeError
        from runtime.volumes.tiff import read_volume
        try:
            read_volume("vol.tif")
        except VolumeError as error:
            print(error)
        """,
        tmp_path,
    )
    message = output.strip()
    assert "\n" not in message
    assert message.startswith("vol.tif: ")
    assert "LZW" in message and "imagecodecs" in message


def test_without_imagecodecs_masks_round_trip(tmp_path: Path) -> None:
    mask = (np.random.default_rng(3).random((4, 10, 12)) > 0.5).astype(np.uint8)
    np.save(tmp_path / "mask.npy", mask)
    run_with_hidden_modules(
        {"imagecodecs"},
        """
        import numpy as np
        from runtime.volumes.tiff import read_volume, write_mask
        mask = np.load("mask.npy")
        write_mask("m.tif", mask)
        assert np.array_equal(read_volume("m.tif"), mask)
        """,
        tmp_path,
    )
    assert np.array_equal(tifffile.imread(tmp_path / "m.tif"), mask)


# --- bad inputs: one clear line each -------------------------------------------------------------
def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "text.tif").write_text("id,scroll_id\n1,2\n")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(
        tmp_path / "four.tif", np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack"
    )
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((3, 8, 8, 3), np.uint8))
    mixed = [Image.fromarray(np.zeros(shape, np.uint8)) for shape in ((8, 8), (9, 9))]
    mixed[0].save(tmp_path / "mixed.tif", save_all=True, append_images=mixed[1:])
    chain = _cut(save_with_pillow(tmp_path / "chain.tif", volume_of("uint8"), "tiff_lzw"), 0.5)

    expected = {
        "empty.tif": "empty file",
        "text.tif": "not a TIFF",
        "flat.tif": "a 2D image of shape (8, 8)",
        "four.tif": "4D",
        "rgb.tif": "4D",
        "mixed.tif": "pages differ",
        "chain.tif": "truncated or corrupt",
        "missing.tif": "no such file",
    }
    for name, complaint in expected.items():
        for reader in (read_volume, read_volume_header):
            with pytest.raises(VolumeError) as error:
                reader(tmp_path / name)
            message = one_line(error)
            assert message.startswith(f"{tmp_path / name}: "), message
            assert complaint in message, message
    assert chain.exists()


def test_cut_pixel_data_keeps_a_usable_header(tmp_path: Path) -> None:
    """Pages intact but the last strip cut off: the shape is known, the data is not."""
    path = _cut(save_with_pillow(tmp_path / "cut.tif", volume_of("uint8"), None), 0.97)
    assert read_volume_header(path).shape == SHAPE
    with pytest.raises(VolumeError) as error:
        read_volume(path)
    assert "truncated" in one_line(error) and str(path) in str(error.value)


# --- finding the inputs --------------------------------------------------------------------------
def _touch_volume(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros((2, 4, 4), np.uint8))
    return path


def test_find_a_single_file_and_a_plain_folder(tmp_path: Path) -> None:
    file = _touch_volume(tmp_path / "solo" / "77.tif")
    inputs = find_volumes(file)
    assert [(s.id, s.path) for s in inputs.sources] == [("77", file)]

    folder = tmp_path / "vols"
    for name in ("10.tif", "9.TIFF", "b.ome.tif"):
        _touch_volume(folder / name)
    (folder / "notes.txt").write_text("ignored")
    (folder / ".10.tif.123.tmp").write_text("a half-written temp file")
    inputs = find_volumes(folder)
    assert [s.id for s in inputs.sources] == ["9", "10", "b"]  # numeric ids in numeric order
    assert inputs.csv_path is None and not inputs.missing


def test_competition_root_follows_test_csv(tmp_path: Path) -> None:
    root = tmp_path / "vesuvius"
    for volume_id in ("300", "100", "999"):
        _touch_volume(root / "test_images" / f"{volume_id}.tif")
    (root / "test.csv").write_text("id,scroll_id\n300,1\n100,1\n200,2\n")
    inputs = find_volumes(root)
    assert [s.id for s in inputs.sources] == ["300", "100", "200"]  # the CSV's order
    assert inputs.missing == ["200"]
    assert inputs.csv_path == root / "test.csv"
    assert any("999" in note for note in inputs.notes)  # not in the CSV: ignored, and said so

    # test_images/ itself finds the CSV one level up
    assert find_volumes(root / "test_images").missing == ["200"]


def test_competition_root_is_searched_for_below_a_mount_point(tmp_path: Path) -> None:
    _touch_volume(tmp_path / "input" / "competitions" / "vesuvius" / "test_images" / "5.tif")
    inputs = find_volumes(tmp_path / "input")
    assert [s.id for s in inputs.sources] == ["5"]

    _touch_volume(tmp_path / "input" / "datasets" / "me" / "copy" / "test_images" / "5.tif")
    _touch_volume(tmp_path / "input" / "datasets" / "me" / "copy2" / "test_images" / "5.tif")
    _touch_volume(tmp_path / "input" / "other" / "deep" / "test_images" / "5.tif")
    with pytest.raises(InputError) as error:
        find_volumes(tmp_path / "input" / "datasets")
    assert "several test_images" in one_line(error)


@pytest.mark.parametrize(
    ("layout", "complaint"),
    [
        ({"test_images/1.tif": "tif", "test_images/1.tiff": "tif"}, "two files for id 1"),
        ({"test_images/1.tif": "tif", "test.csv": "name,scroll_id\n1,2\n"}, "no 'id' column"),
        ({"test_images/1.tif": "tif", "test.csv": "id,scroll_id\n"}, "lists no ids"),
        ({"readme.txt": "nothing here"}, "no .tif volumes"),
    ],
)
def test_unusable_inputs_raise_input_errors(
    tmp_path: Path, layout: dict[str, str], complaint: str
) -> None:
    for name, content in layout.items():
        path = tmp_path / name
        if content == "tif":
            _touch_volume(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    with pytest.raises(InputError) as error:
        find_volumes(tmp_path)
    assert complaint in one_line(error)


def test_a_missing_input_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        find_volumes(tmp_path / "nope")
    assert "no such file or folder" in one_line(error)
