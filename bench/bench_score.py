"""``runtime score`` and ``runtime tune`` timed on 320^3 volumes, beside the reference code.

    python bench/bench_score.py [--shape Z Y X] [--volumes N] [--skip-reference]

* score, one volume: this project's metric (TopoScore approximate: features matched by place, and
  the older per-octant counting) with connected-components-3d and with scipy only (Kaggle's image
  lacks cc3d), each in a fresh interpreter; beside it, the SurfaceDice and VOI halves as the
  organizers' ``topometrics`` computes them (DeepMind's ``surface-distance``, cc3d and
  scikit-image; their results are checked equal to ours), and ``topometrics`` itself when it is
  importable (build: docs/official-metric.md), with the approximation's TopoScore error;
* tune: a 20-setting grid (5 thresholds x 2 minimum sizes x 2 closing radii) over N volumes, on
  one process and on all CPUs with the local scorer, and with the official TopoScore (bounded:
  only for settings that can still win) when it is importable, with what was scored how.

The volumes are synthetic (``runtime.samples.synthetic``): one labelled papyrus-like chunk, the
others its flips; predictions are the labels shifted by one voxel with specks, probabilities a
blurred, noisy version of the labels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(320, 320, 320), metavar=("Z", "Y", "X")
    )
    parser.add_argument(
        "--volumes", type=int, default=5, help="volumes for the tune benchmark (default 5)"
    )
    parser.add_argument(
        "--skip-reference", action="store_true", help="skip the surface-distance reference (slow)"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the generated volumes here (default: a temporary folder)"
    )
    parser.add_argument(
        "--score-worker", nargs=3, metavar=("PRED", "LABELS", "BACKEND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.score_worker:
        return _score_worker(*args.score_worker)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-score-"))
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)
    print(f"volumes of {'x'.join(map(str, shape))} in {work}", flush=True)
    labels, predictions, probabilities = _data(work, shape, args.volumes)
    figures: dict[str, float | str] = {}

    for backend in ("cc3d", "scipy"):
        result = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--score-worker",
                    str(predictions[0]),
                    str(labels[0]),
                    backend,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        figures[f"score, ours ({backend})"] = result["seconds"]
        figures[f"score, ours ({backend}, counting TopoScore)"] = result["seconds_counts"]
        print(
            f"score one volume, ours with {backend}: {result['seconds']:.2f} s (score {result['score']:.4f}, SurfaceDice {result['surface_dice']:.6f}, VOI {result['voi']:.6f}, TopoScore {result['topo']:.4f} approximate); with the counting TopoScore {result['seconds_counts']:.2f} s (TopoScore {result['topo_counts']:.4f})",
            flush=True,
        )
    if not args.skip_reference:
        figures.update(_reference(predictions[0], labels[0], result))
    from runtime.volumes.metric.official import topometrics_available, unavailable_reason

    if topometrics_available():
        from runtime.volumes.metric.official import official_score
        from runtime.volumes.tiff import read_volume

        started = time.perf_counter()
        official = official_score(read_volume(predictions[0]), read_volume(labels[0]))
        figures["score, topometrics"] = time.perf_counter() - started
        figures["TopoScore, official"] = official.topo_score
        figures["TopoScore, ours - official"] = result["topo"] - official.topo_score
        print(
            f"score one volume, topometrics: {figures['score, topometrics']:.2f} s (score {official.score:.4f}, TopoScore {official.topo_score:.4f}; ours approximate {result['topo']:.4f}, counting {result['topo_counts']:.4f})",
            flush=True,
        )
    else:
        figures["score, topometrics"] = f"not available: {unavailable_reason()}"
        print(f"topometrics not timed: {unavailable_reason()}")

    from runtime.volumes.mask_settings import MaskSettings
    from runtime.volumes.parallel import default_jobs
    from runtime.volumes.postprocess import PostprocessOptions
    from runtime.volumes.tuning import tune

    grid = [
        MaskSettings(
            threshold=t, postprocess=PostprocessOptions(min_component_voxels=m, closing_radius=c)
        )
        for t in (0.3, 0.4, 0.5, 0.6, 0.7)
        for m in (0, 20_000)
        for c in (0, 2)
    ]
    cpus = default_jobs(64)
    runs = [("local", jobs) for jobs in dict.fromkeys((1, cpus))]
    if topometrics_available():
        runs.append(("official", cpus))
    for scorer, jobs in runs:
        started = time.perf_counter()
        report = tune(probabilities, labels[0].parent, grid=grid, jobs=jobs, scorer=scorer)
        seconds = time.perf_counter() - started
        figures[f"tune 20 x {args.volumes}, {scorer}, {jobs} process(es)"] = seconds
        scoring = report.scoring
        print(
            f"tune {len(grid)} settings x {args.volumes} volumes, TopoScore {scorer}, on {jobs} process(es): {seconds:.1f} s; TopoScore for {scoring['scored_in_full']} of {scoring['settings']} settings ({scoring['masks_scored_in_full']} masks, {scoring['masks_reused']} reused), {scoring['left_out_by_bound']} left out by the bound; best {report.recommended.settings.describe()} ({report.recommended.score:.4f})",
            flush=True,
        )
    print(json.dumps(figures, indent=2))
    return 0


def _data(work: Path, shape: tuple[int, ...], count: int) -> tuple[list[Path], list[Path], Path]:
    import tifffile
    from scipy import ndimage

    from runtime.samples.synthetic import synthetic_volume
    from runtime.volumes.probability import encode, save_probability, write_manifest
    from runtime.volumes.tiff import write_mask

    label_dir, prediction_dir, probability_dir = (
        work / "labels",
        work / "predictions",
        work / "probabilities",
    )
    for folder in (label_dir, prediction_dir, probability_dir):
        folder.mkdir(exist_ok=True)
    base = work / "base-label.npy"
    if not base.exists():
        started = time.perf_counter()
        np.save(base, synthetic_volume(shape, 7).label)
        print(
            f"generated the synthetic label volume in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    label = np.load(base)
    rng = np.random.default_rng(0)
    labels, predictions, shapes = [], [], {}
    for index in range(count):
        volume_id = f"v{index}"
        flipped = (
            label
            if index == 0
            else np.flip(
                label, axis=tuple(a for a in range(3) if (index >> a) & 1 or a == index % 3)
            ).copy()
        )
        path = label_dir / f"{volume_id}.tif"
        if not path.exists():
            tifffile.imwrite(path, flipped)
            truth = flipped == 1
            write_mask(
                prediction_dir / f"{volume_id}.tif",
                (np.roll(truth, 1, axis=0) | (rng.random(shape) < 2e-4)).astype(np.uint8),
            )
            probability = ndimage.gaussian_filter(truth.astype(np.float32), 1.0) + rng.normal(
                0, 0.15, shape
            ).astype(np.float32)
            save_probability(
                probability_dir / f"{volume_id}.npy", encode(np.clip(probability, 0, 1), "uint8")
            )
        labels.append(path)
        predictions.append(prediction_dir / f"{volume_id}.tif")
        shapes[volume_id] = shape
    write_manifest(probability_dir, "uint8", shapes, {"bench": True})
    return labels, predictions, probability_dir


def _score_worker(prediction: str, labels: str, backend: str) -> int:
    os.environ["KAGGLE_OFFLINE_COMPONENTS"] = backend
    from runtime.volumes.metric.leaderboard import PreparedTruth, score_volume
    from runtime.volumes.tiff import read_volume

    predicted, truth = read_volume(prediction), read_volume(labels)
    score_volume(predicted[:40, :40, :40], truth[:40, :40, :40])  # imports and tables warm
    started = time.perf_counter()
    result = score_volume(predicted, truth)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    counted = PreparedTruth(truth).score(predicted, topology="counts")
    seconds_counts = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "seconds_counts": seconds_counts,
                "score": result.score,
                "surface_dice": result.surface_dice,
                "voi": result.voi,
                "topo": result.topo_score,
                "topo_counts": counted.topo_score,
            }
        )
    )
    return 0


def _reference(prediction: Path, labels: Path, ours: dict) -> dict[str, float | str]:
    try:
        import cc3d
        import surface_distance
        from skimage.metrics import variation_of_information
    except ImportError as error:
        print(f"reference: {error.name} not installed, skipped")
        return {"reference SurfaceDice + VOI": f"{error.name} not installed"}
    from runtime.volumes.tiff import read_volume

    label = read_volume(labels)
    # as topometrics does: voxels labelled 2 are background in both masks
    truth = (label != 0) & (label != 2)
    predicted = (read_volume(prediction) != 0) & (label != 2)
    started = time.perf_counter()
    distances = surface_distance.compute_surface_distances(truth, predicted, (1.0, 1.0, 1.0))
    surface = surface_distance.compute_surface_dice_at_tolerance(distances, 2.0)
    sd_seconds = time.perf_counter() - started
    started = time.perf_counter()
    a = cc3d.connected_components(truth.astype(np.uint8), connectivity=26)
    b = cc3d.connected_components(predicted.astype(np.uint8), connectivity=26)
    union = (a > 0) | (b > 0)
    split, merge = variation_of_information(a[union], b[union])
    voi_seconds = time.perf_counter() - started
    print(
        f"reference SurfaceDice (surface-distance): {sd_seconds:.1f} s, {surface:.6f} (ours {ours['surface_dice']:.6f})"
    )
    print(
        f"reference VOI (cc3d + scikit-image): {voi_seconds:.1f} s, {split + merge:.6f} (ours {ours['voi']:.6f})",
        flush=True,
    )
    return {
        "reference SurfaceDice (surface-distance)": sd_seconds,
        "reference VOI (cc3d + scikit-image)": voi_seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
