"""The whole-scroll flow, end to end, as a user runs it (``nox -s scroll``).

A synthetic OME-Zarr 0.4 scroll several times larger than the memory every process of the run is
allowed (an address-space limit): mostly air never written, with papyrus in one corner chunk. The
predict command is killed (SIGKILL, workers included) once about half of the blocks are done,
then run again: it must resume, redo only the unfinished blocks, and leave a complete output
whose papyrus blocks equal the same box of an uninterrupted run.

    python tests/support/scroll_flow.py WORKDIR [--side 2048] [--cap-gib 1.5] [--no-papyrus]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 256


def write_scroll(
    path: Path, shape: tuple[int, int, int], papyrus: bool
) -> list[tuple[int, int, int]]:
    """Air everywhere but in one corner chunk of synthetic papyrus (if ``papyrus``: its 8
    blocks run the model); returns the papyrus corners."""
    from runtime.samples.synthetic import synthetic_volume

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=shape, chunks=(CHUNK,) * 3, dtype="uint8", fill_value=0)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "synthetic scroll",
            "axes": [{"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx"],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [7.91] * 3}]}
            ],
        }
    ]
    corners = [(0, 0, 0)] if papyrus else []
    for index, (z, y, x) in enumerate(corners):
        group["0"][z : z + CHUNK, y : y + CHUNK, x : x + CHUNK] = synthetic_volume(
            (CHUNK,) * 3, index
        ).image
    return corners


def predict(source: Path, output: Path, cap: int, *extra: str) -> subprocess.Popen[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [sys.executable, "-m", "runtime", "predict", str(source), "--model", "demo"]
    command += ["-o", str(output), "--block", str(CHUNK), "--zarr-output", "mask", *extra]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--cap-gib", type=float, default=1.5)
    parser.add_argument(
        "--no-papyrus",
        dest="papyrus",
        action="store_false",
        help="air only: no block runs the model (a smoke run on a small machine)",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    shape = (args.side // 2, args.side, args.side)
    cap = int(args.cap_gib * 2**30)
    print(
        f"volume {shape} uint8: {math.prod(shape) / 2**30:.1f} GiB; memory cap {args.cap_gib} GiB"
    )
    assert math.prod(shape) > 1.5 * cap, "the volume must be several times the cap"
    source = args.workdir / "scroll.ome.zarr"
    corners = write_scroll(source, shape, args.papyrus)
    output = args.workdir / "mask.zarr"
    first = predict(source, output, cap, "--overwrite")
    done = output / "_scroll" / "done"
    total = math.prod(math.ceil(s / CHUNK) for s in shape)
    while (
        first.poll() is None
        and len(list(done.glob("*.json")) if done.is_dir() else []) < total // 2
    ):
        time.sleep(0.5)
    if first.poll() is not None:
        print(first.communicate()[0])
        raise SystemExit("the first run ended before it could be killed")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = len(list(done.glob("*.json")))
    print(f"killed with {finished}/{total} blocks done")
    second = predict(source, output, cap)
    log = second.communicate()[0]
    print(log[-1500:])
    if second.returncode:
        raise SystemExit(f"the resumed run failed ({second.returncode})")
    metrics = json.loads((output / "_scroll" / "metrics.json").read_text())
    assert metrics["already_done"] == finished, metrics["already_done"]
    assert metrics["ran"] == total - finished
    peak = max(r["peak_rss_bytes"] for r in metrics["records"])
    assert peak < cap
    reference = args.workdir / "reference.zarr"
    for corner in corners:
        box = ",".join(f"{c}:{c + CHUNK}" for c in corner)
        ran = predict(source, reference, cap, "--region", box)
        assert ran.wait() == 0, ran.communicate()[0]
    written = zarr.open_group(str(output), mode="r")["mask/0"]
    for z, y, x in corners:
        expected = zarr.open_group(str(reference), mode="r")["mask/0"]
        box = (slice(z, z + CHUNK), slice(y, y + CHUNK), slice(x, x + CHUNK))
        assert np.array_equal(written[box], expected[box])
        assert written[box].any()
    attrs = zarr.open_group(str(output / "mask"), mode="r").attrs["multiscales"][0]
    assert attrs["datasets"][0]["coordinateTransformations"][0]["scale"] == [7.91] * 3
    print(
        f"ok: resumed {total - finished} of {total} blocks, {metrics['skipped']} skipped without a "
        f"forward, peak worker memory {peak / 2**20:.0f} MiB under a {args.cap_gib} GiB cap"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
