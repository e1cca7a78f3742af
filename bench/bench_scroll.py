"""Whole scrolls: block runs against the whole-volume path, in one run, as ratios.

    PYTHONPATH=. python bench/bench_scroll.py [--side 96] [--block 48] [--patch 32]

Reports, on the demo model at a ``patch`` window on the CPU (fp32, one torch thread per worker):

1. blocks / whole volume, against the halo recompute factor ((B + P - s) / B)^3 (target: within
   1.1x of it); the block time is the sum of the blocks' own seconds on workers that already
   hold the model (a first run warms them), as the whole-volume side is timed after a warm-up;
2. 1 worker / 2 workers, wall time of a run (target >= 1.8x with free cores);
3. a resume after a kill at 50%: the later half of the done markers removed, as a kill at 50%
   leaves them, then the same command again (target <= 55% of a full run);
4. skipping: a volume 60% air (never-written chunks) against the same volume all papyrus;
5. peak memory per worker (VmHWM) for two volume sizes with the same block (target: the same).

Small on purpose: a volume of ``side``^3 on a shared 2-core machine. Timings there are noisy;
the ratios, not the seconds, are the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from runtime.contract.settings import RunRequest
from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.sliding_window import plan_windows
from runtime.pipeline.models import load_model
from runtime.samples.synthetic import synthetic_volume
from runtime.scroll.grid import halo_factor
from runtime.scroll.run import ScrollConfig, run_scroll


def _write(path: Path, volume: np.ndarray, chunks: int, air_from: int | None = None) -> str:
    array = zarr.create_array(
        store=str(path), shape=volume.shape, chunks=(chunks,) * 3, dtype="uint8", zarr_format=2
    )
    if air_from is None:
        array[:] = volume
    else:
        array[:air_from] = volume[:air_from]  # beyond: chunks never written (air)
    return str(path)


def _run(source: str, output: Path, patch: int, block: int, scheduler: str, **extra: object):
    predict = RunRequest(patch_size=(patch,) * 3)
    config = ScrollConfig(
        source, str(output), predict, block=block, scheduler=scheduler, kinds=("mask",), **extra
    )
    start = time.perf_counter()
    report = run_scroll(config, log=lambda _: None)
    return report, time.perf_counter() - start


def _warm_cluster(workers: int, source: str, work: Path, patch: int, block: int):
    """A LocalCluster whose workers already hold the model (a first run loads it)."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    _run(source, work / "warm.zarr", patch, block, cluster.scheduler_address, overwrite=True)
    return cluster


def _close(cluster) -> None:
    """On a loaded machine a worker can outlive the close's timeout: not a result."""
    try:
        cluster.close(timeout=60)
    except TimeoutError:
        print("(a cluster took over 60 s to close)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--block", type=int, default=48)
    parser.add_argument("--patch", type=int, default=32)
    args = parser.parse_args()
    side, block, patch = args.side, args.block, args.patch
    chunks = block // 2 if block % 2 == 0 else block
    work = Path(tempfile.mkdtemp(prefix="bench-scroll-"))
    results: dict[str, object] = {"volume": [side] * 3, "block": block, "patch": patch}
    try:
        volume = synthetic_volume((side,) * 3, 0).image
        source = _write(work / "in.zarr", volume, chunks)

        torch.set_num_threads(1)
        options = InferenceOptions(
            patch_size=(patch,) * 3,
            exact=True,
            keep_probability=False,
            compile=False,
            channels_last=False,
        )
        segmenter = Segmenter(load_model("demo"), options, log=lambda _: None)
        segmenter.segment(volume[:patch, :patch, :patch])  # warm
        start = time.perf_counter()
        segmenter.segment(volume)
        whole = time.perf_counter() - start

        one_cluster = _warm_cluster(1, source, work, patch, block)
        address = one_cluster.scheduler_address
        one, one_wall = _run(source, work / "one.zarr", patch, block, address)
        blocks = sum(record["seconds"] for record in one.records)
        # the grid's windows overlap by half: s = P / 2
        factor = halo_factor((block,) * 3, (patch,) * 3, 0.5)
        results["whole_volume_s"] = round(whole, 2)
        results["blocks_s"] = round(blocks, 2)
        results["blocks_over_whole"] = round(blocks / whole, 3)
        results["halo_factor"] = round(factor, 3)
        results["overhead_over_halo_factor"] = round(blocks / whole / factor, 3)
        # The windows the blocks ran against the whole volume's: what the halo really costs
        # here (the formula is an upper estimate for blocks that are multiples of the step).
        windows = sum(record.get("windows", 0) for record in one.records)
        whole_windows = plan_windows(volume.shape, (patch,) * 3, 0.5).n_windows
        results["windows_blocks_over_whole"] = round(windows / whole_windows, 3)
        results["time_over_window_ratio"] = round(blocks / whole / (windows / whole_windows), 3)

        two_cluster = _warm_cluster(2, source, work, patch, block)
        _, two_wall = _run(source, work / "two.zarr", patch, block, two_cluster.scheduler_address)
        _close(two_cluster)
        results["wall_1_worker_s"] = round(one_wall, 2)
        results["wall_2_workers_s"] = round(two_wall, 2)
        results["speedup_2_over_1"] = round(one_wall / two_wall, 3)

        done = work / "one.zarr" / "_scroll" / "done"
        markers = sorted(done.glob("*.json"))
        for marker in markers[len(markers) // 2 :]:
            marker.unlink()
        resumed, resumed_wall = _run(source, work / "one.zarr", patch, block, address)
        results["resume_blocks"] = f"{resumed.ran} of {resumed.blocks}"
        results["resume_over_full"] = round(resumed_wall / one_wall, 3)

        air = _write(work / "air.zarr", volume, chunks, air_from=int(side * 0.4) // chunks * chunks)
        skipped, skipped_wall = _run(air, work / "air-out.zarr", patch, block, address)
        results["air_skipped_blocks"] = f"{skipped.skipped} of {skipped.blocks}"
        results["air_60_over_full"] = round(skipped_wall / one_wall, 3)

        tall = np.concatenate([volume, volume[::-1]], axis=0)
        tall_source = _write(work / "tall.zarr", tall, chunks)
        tall_report, _ = _run(tall_source, work / "tall-out.zarr", patch, block, address)
        _close(one_cluster)
        peak_small = max(r["peak_rss_bytes"] for r in one.records)
        peak_tall = max(r["peak_rss_bytes"] for r in tall_report.records)
        results["peak_worker_MiB"] = {
            str(list(volume.shape)): round(peak_small / 2**20),
            str(list(tall.shape)): round(peak_tall / 2**20),
        }
        results["peak_ratio_2x_volume"] = round(peak_tall / peak_small, 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
