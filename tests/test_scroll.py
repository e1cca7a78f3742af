"""Whole scrolls: zarr volumes block by block on a real Dask LocalCluster, equal to the
whole-volume result bit for bit (CPU, fp32), resumable, skipping air, naming corrupt chunks.

Small volumes and the demo model at a 32^3 window keep each run to seconds; every run starts a
real cluster of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

from runtime.contract.errors import InferenceError, InputError, OutputError  # noqa: E402
from runtime.contract.settings import RunRequest  # noqa: E402
from runtime.inference.engine import InferenceOptions, Segmenter  # noqa: E402
from runtime.pipeline.models import load_model  # noqa: E402
from runtime.samples.synthetic import synthetic_volume  # noqa: E402
from runtime.scroll.run import ScrollConfig, run_scroll  # noqa: E402
from runtime.volumes.probability import encode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (48, 40, 56)
CHUNKS = (16, 16, 16)
PATCH = (32, 32, 32)


def _volume() -> np.ndarray:
    return synthetic_volume(SHAPE, 3).image


def _write(path: Path, volume: np.ndarray, zarr_format: int = 2) -> str:
    array = zarr.create_array(
        store=str(path),
        shape=volume.shape,
        chunks=CHUNKS,
        dtype=volume.dtype,
        zarr_format=zarr_format,
        fill_value=0,
    )
    array[:] = volume
    return str(path)


def _whole(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole-volume path in memory, with the run's pinned settings (one torch thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = InferenceOptions(
            patch_size=PATCH, exact=True, keep_probability=True, compile=False, channels_last=False
        )
        result = Segmenter(load_model("demo"), options, log=lambda _: None).segment(volume)
    finally:
        torch.set_num_threads(threads)
    assert result.probability is not None
    return result.mask, encode(result.probability, "uint8")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One real single-worker cluster for the tests that are not about starting one."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local.scheduler_address


def _config(source: str, output: Path, **changes: object) -> ScrollConfig:
    predict = RunRequest(patch_size=PATCH)
    settings: dict[str, object] = {"block": 16, "workers": 1}
    settings.update(changes)
    return ScrollConfig(source, str(output), predict, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scroll(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray, np.ndarray]:
    """A zarr v2 volume and its whole-volume mask and uint8 probability."""
    volume = _volume()
    source = _write(tmp_path_factory.mktemp("scroll") / "in.zarr", volume)
    mask, probability = _whole(volume)
    assert 0.02 < mask.mean() < 0.98  # a mask worth comparing
    return source, mask, probability


def _read(output: Path, kind: str) -> np.ndarray:
    return zarr.open_group(str(output), mode="r")[kind][:]


@pytest.mark.slow
@pytest.mark.parametrize(("block", "workers"), [(16, 1), (32, 2)])
def test_blocks_equal_the_whole_volume_bit_for_bit(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path, block: int, workers: int
) -> None:
    source, mask, probability = scroll
    report = run_scroll(_config(source, output=tmp_path / "out.zarr", block=block, workers=workers))
    assert report.ran == report.blocks and not report.failed
    assert np.array_equal(_read(tmp_path / "out.zarr", "mask"), mask)
    assert np.array_equal(_read(tmp_path / "out.zarr", "probability"), probability)
    if workers == 2:
        assert len({record["worker"] for record in report.records}) == 2


@pytest.mark.slow
def test_a_region_equals_the_same_box_of_a_full_run(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path, cluster: str
) -> None:
    source, mask, _ = scroll
    report = run_scroll(
        _config(
            source,
            scheduler=cluster,
            output=tmp_path / "out.zarr",
            region="17:30,5:20,33:56",
            kinds=("mask",),
        )
    )
    assert report.blocks == 1 * 2 * 2  # whole blocks of 16 around the box
    written = _read(tmp_path / "out.zarr", "mask")
    box = (slice(17, 30), slice(5, 20), slice(33, 56))
    assert np.array_equal(written[box], mask[box])
    assert not written[:16].any()  # blocks outside the region are not run


@pytest.mark.slow
def test_zarr_v3_input_gives_a_v3_output_equal_to_the_whole_volume(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path, cluster: str
) -> None:
    _, mask, probability = scroll
    source = _write(tmp_path / "in.zarr", _volume(), zarr_format=3)
    output = tmp_path / "out.zarr"
    run_scroll(_config(source, output, scheduler=cluster, region="16:32,16:32,16:48"))
    group = zarr.open_group(str(output), mode="r")
    assert group.metadata.zarr_format == 3 and group["mask"].chunks == CHUNKS
    box = (slice(16, 32), slice(16, 32), slice(16, 48))
    assert np.array_equal(group["mask"][box], mask[box])
    assert np.array_equal(group["probability"][box], probability[box])


@pytest.mark.slow
def test_other_settings_refuse_to_resume_naming_the_setting(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path, cluster: str
) -> None:
    source, _, _ = scroll
    output = tmp_path / "out.zarr"
    run_scroll(_config(source, output, scheduler=cluster, region="0:16,0:16,0:16", kinds=("mask",)))
    changed = _config(source, output, scheduler=cluster, region="0:16,0:16,0:16", kinds=("mask",))
    changed.predict = dataclasses.replace(changed.predict, threshold=0.7)
    with pytest.raises(OutputError, match=r"inference\.threshold: 0\.5 -> 0\.7"):
        run_scroll(changed)
    again = run_scroll(
        _config(source, output, scheduler=cluster, region="0:16,0:16,0:16", kinds=("mask",))
    )
    assert (again.already_done, again.ran) == (1, 0)
    changed.overwrite = True
    assert run_scroll(changed).already_done == 0


@pytest.mark.slow
def test_air_is_skipped_without_a_forward(tmp_path: Path, cluster: str) -> None:
    volume = np.zeros((64, 40, 40), dtype=np.uint8)
    volume[:20] = _volume()[:20, :40, :40]  # papyrus in the first slabs, air beyond
    source = _write(tmp_path / "in.zarr", volume)
    report = run_scroll(
        _config(source, scheduler=cluster, output=tmp_path / "out.zarr", kinds=("mask",))
    )
    skipped = [r for r in report.records if r["skipped"]]
    assert report.skipped == len(skipped) > 0
    assert all("windows" not in r for r in skipped)  # no forward ran for them
    assert all(r["box"][0][0] >= 48 for r in skipped)  # only blocks whose halo is all air
    below = run_scroll(
        _config(
            source,
            scheduler=cluster,
            output=tmp_path / "below.zarr",
            kinds=("mask",),
            skip_below=256,
        )
    )
    assert below.skipped == below.blocks
    assert not _read(tmp_path / "below.zarr", "mask").any()


@pytest.mark.slow
def test_a_corrupt_chunk_fails_its_blocks_by_name_and_the_others_finish(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path, cluster: str
) -> None:
    source, mask, _ = scroll
    broken = tmp_path / "in.zarr"
    _write(broken, _volume())
    (broken / "2.0.0").write_bytes(b"not a compressed chunk")
    with pytest.raises(InferenceError, match=r"input chunk .*in\.zarr/2\.0\.0 cannot be read"):
        run_scroll(
            _config(str(broken), scheduler=cluster, output=tmp_path / "out.zarr", kinds=("mask",))
        )
    metrics = json.loads((tmp_path / "out.zarr" / "_scroll" / "metrics.json").read_text())
    failed = {entry["block"] for entry in metrics["failed"]}
    assert "2_0_0" in failed and len(failed) < metrics["blocks"]
    finished = [r for r in metrics["records"] if r["box"][0][0] < 16]  # far from the chunk
    written = _read(tmp_path / "out.zarr", "mask")
    for record in finished:
        box = tuple(slice(a, b) for a, b in record["box"])
        assert np.array_equal(written[box], mask[box])


@pytest.mark.slow
def test_ome_zarr_level_and_metadata_carried_to_the_output(tmp_path: Path, cluster: str) -> None:
    ome_zarr_writer = pytest.importorskip("ome_zarr.writer")
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    volume = synthetic_volume((48, 64, 64), 5).image
    level1 = volume[:, ::2, ::2]
    group = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w", zarr_format=2)
    transforms = [
        [{"type": "scale", "scale": [7.91, 7.91, 7.91]}],
        [{"type": "scale", "scale": [7.91, 15.82, 15.82]}],
    ]
    ome_zarr_writer.write_multiscale(
        [volume, level1],
        group,
        axes=["z", "y", "x"],
        fmt=FormatV04(),
        coordinate_transformations=transforms,
        storage_options={"chunks": CHUNKS},
    )
    source = str(tmp_path / "in.ome.zarr")
    run_scroll(
        _config(
            source,
            scheduler=cluster,
            output=tmp_path / "out.zarr",
            level=0,
            region="0:16,0:16,0:16",
        )
    )
    report = run_scroll(_config(source, scheduler=cluster, output=tmp_path / "out1.zarr", level=1))
    assert report.ran == report.blocks
    mask1, _ = _whole(np.ascontiguousarray(level1))
    image = zarr.open_group(str(tmp_path / "out1.zarr"), mode="r")["mask"]
    assert np.array_equal(image["0"][:], mask1)
    nodes = list(Reader(parse_url(str(tmp_path / "out1.zarr" / "mask")))())
    assert nodes and nodes[0].data[0].shape == level1.shape
    multiscale = nodes[0].metadata
    assert multiscale["coordinateTransformations"][0] == transforms[1]
    assert [axis["name"] for axis in multiscale["axes"]] == ["z", "y", "x"]


def test_a_volume_smaller_than_the_window_is_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.zarr", np.zeros((16, 64, 64), dtype=np.uint8))
    with pytest.raises(InputError, match="smaller than the window"):
        run_scroll(_config(source, output=tmp_path / "out.zarr"))


def _cli(source: str, output: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "runtime", "predict", source, "--model", "demo"]
    command += ["--patch-size", "32", "-o", str(output), "--block", "16", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the workers are killed with it, as a kill -9 of a job would
    )


@pytest.mark.slow
def test_killed_run_resumes_only_its_unfinished_blocks(
    scroll: tuple[str, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    source, mask, probability = scroll
    output = tmp_path / "out.zarr"
    first = _cli(source, output)
    done = output / "_scroll" / "done"
    total = 3 * 3 * 4
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and first.poll() is None:
        if done.is_dir() and len(list(done.glob("*.json"))) >= total // 2:
            break
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = len(list(done.glob("*.json")))
    assert 0 < finished < total
    second = _cli(source, output)
    log = second.communicate(timeout=400)[0]
    assert second.returncode == 0, log
    metrics = json.loads((output / "_scroll" / "metrics.json").read_text())
    assert metrics["already_done"] == finished
    assert metrics["ran"] == total - finished  # only the unfinished blocks
    assert np.array_equal(_read(output, "mask"), mask)
    assert np.array_equal(_read(output, "probability"), probability)


@pytest.mark.slow
def test_a_volume_larger_than_the_memory_cap_is_processed_within_it(tmp_path: Path) -> None:
    """3 GiB of voxels under a 2.5 GiB address-space limit (every process of the run): mostly
    never-written air, plus stored chunks of low values that --skip-below skips after reading."""
    import resource

    shape, chunk = (1024, 1024, 3072), 256
    source = tmp_path / "in.zarr"
    array = zarr.create_array(
        store=str(source), shape=shape, chunks=(chunk,) * 3, dtype="uint8", zarr_format=2
    )
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunk):
        array[z : z + chunk, :chunk, :chunk] = rng.integers(0, 8, (chunk,) * 3, dtype=np.uint8)
    cap = int(2.5 * 2**30)
    assert math.prod(shape) > cap

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    output = tmp_path / "out.zarr"
    command = [sys.executable, "-m", "runtime", "predict", str(source), "--model", "demo"]
    command += ["--patch-size", "32", "-o", str(output), "--block", str(chunk)]
    command += ["--skip-below", "16", "--zarr-output", "mask"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = json.loads((output / "_scroll" / "metrics.json").read_text())
    assert metrics["ran"] == metrics["blocks"] == 4 * 4 * 12
    assert max(r["peak_rss_bytes"] for r in metrics["records"]) < cap
    read = [r for r in metrics["records"] if r["read_voxels"]]
    assert read and all(r["skipped"] == "below 16" for r in read)


def test_blocks_are_whole_chunks_and_their_windows_come_from_the_global_grid() -> None:
    from runtime.inference.sliding_window import plan_windows
    from runtime.scroll.grid import block_shape, blocks_in, halo_factor, hull, member_plans

    assert block_shape((16, 16, 16), 44) == (48, 48, 48)  # rounded to whole chunks
    assert block_shape((64, 16, 16), 8) == (64, 16, 16)  # at least one chunk
    blocks = blocks_in((48, 40, 56), (16, 16, 16), ((0, 48), (0, 40), (0, 56)))
    assert [b.index for b in blocks[:2]] == [(0, 0, 0), (0, 0, 1)]  # z-major
    assert blocks[-1].box == ((32, 48), (32, 40), (48, 56))  # cut by the volume's edge
    box = ((16, 32), (16, 32), (16, 32))
    around = hull((48, 40, 56), [PATCH], 0.5, box)
    (plan,) = member_plans((48, 40, 56), [PATCH], 0.5, box, around)
    whole = plan_windows((48, 40, 56), PATCH, 0.5)
    origin = tuple(a for a, _ in around)
    shifted = [tuple(s + o for s, o in zip(start, origin, strict=True)) for start in plan.starts]
    assert shifted == [s for s in whole.starts if s in shifted]  # the global grid's order
    assert len(shifted) == sum(
        all(s < b and s + p > a for s, p, (a, b) in zip(start, PATCH, box, strict=True))
        for start in whole.starts
    )
    assert halo_factor((1024,) * 3, (256,) * 3, 0.5) == pytest.approx(1.42, abs=0.01)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("1:2,3:4", "give z0:z1"), ("5:2,0:4,0:4", "empty or outside"), ("a:b,0:1,0:1", "not start")],
)
def test_a_bad_region_is_one_line_naming_it(text: str, problem: str) -> None:
    from runtime.scroll.source import parse_region

    with pytest.raises(InputError, match=problem):
        parse_region(text, (10, 10, 10))
    assert parse_region("2:,:4,3:5", (10, 10, 10)) == ((2, 10), (0, 4), (3, 5))
