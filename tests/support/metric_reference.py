"""The metric's reference set: small (prediction, label) pairs rebuilt from their parameters.

The official values of every pair (``metric_reference.json`` beside this file) were computed once
with the organizers' own scorer by ``bench/make_metric_reference.py``; only the parameters are
stored, and :func:`build_pair` regenerates the arrays deterministically (numpy's PCG64 from a
recorded seed, scipy's filters), each checked against the SHA-256 recorded with its values, so a
generator that drifts fails loudly instead of comparing the wrong arrays.

The pairs cover what the metric meets in practice at small sizes (<= 48^3): identical masks,
dilations, erosions, shifts, punched holes, splits, merges, speckle noise, empty and full
predictions, ignored regions (label 2), and threshold sweeps of a blurred, noisy probability map
as ``tune`` makes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "REFERENCE_FILE",
    "build_pair",
    "cases",
    "load_reference",
    "mask_digest",
]

GENERATOR_VERSION = 1
REFERENCE_FILE = Path(__file__).with_name("metric_reference.json")
# The project's sample data (runtime.samples, labels with an unlabelled slab) and predictions made
# from it, stored as arrays: they must not change when the sample generator does.
SAMPLE_FILE = Path(__file__).with_name("metric_reference_sample.npz")
_SAMPLE_OPERATIONS = ("identical", "shift", "noise", "dilate")
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

_TRUTHS: dict[str, dict[str, Any]] = {
    # wavy sheets like papyrus surfaces, 2 voxels thick, some with holes (tunnels)
    "sheets-a": {"kind": "sheets", "seed": 11, "shape": (40, 40, 40), "layers": 3, "holes": 0},
    "sheets-b": {"kind": "sheets", "seed": 12, "shape": (48, 40, 36), "layers": 2, "holes": 3},
    "sheets-c": {"kind": "sheets", "seed": 13, "shape": (32, 48, 48), "layers": 4, "holes": 2},
    # overlapping balls and shells: components, tunnels and cavities
    "blobs-a": {"kind": "blobs", "seed": 21, "shape": (36, 36, 36), "count": 7},
    "shells-a": {"kind": "shells", "seed": 31, "shape": (40, 40, 40), "count": 3},
}

_OPERATIONS: list[dict[str, Any]] = [
    {"op": "identical"},
    {"op": "dilate", "iterations": 1},
    {"op": "dilate", "iterations": 2},
    {"op": "erode", "iterations": 1},
    {"op": "shift", "axis": 0, "by": 1},
    {"op": "shift", "axis": 2, "by": 3},
    {"op": "holes", "seed": 5, "count": 4, "radius": 2},
    {"op": "split", "axis": 1},
    {"op": "merge", "seed": 6, "count": 3},
    {"op": "noise", "seed": 7, "rate": 0.01},
    {"op": "noise", "seed": 8, "rate": 0.05},
    {"op": "empty"},
    {"op": "full"},
    {"op": "ignore", "seed": 9},
]

_SWEEPS: list[dict[str, Any]] = [
    {"truth": "sheets-a", "seed": 41, "sigma": 1.2, "noise": 0.25, "smooth_noise": 1.0},
    {"truth": "sheets-b", "seed": 42, "sigma": 1.5, "noise": 0.35, "smooth_noise": 1.5},
    {"truth": "sheets-c", "seed": 43, "sigma": 1.0, "noise": 0.30, "smooth_noise": 1.0},
    {"truth": "blobs-a", "seed": 44, "sigma": 1.5, "noise": 0.30, "smooth_noise": 1.2},
    {"truth": "shells-a", "seed": 45, "sigma": 1.2, "noise": 0.30, "smooth_noise": 1.0},
]


def cases() -> list[dict[str, Any]]:
    """Every pair's parameters, each with a unique ``name``; sweeps carry ``sweep`` and ``threshold``."""
    out = []
    for truth in _TRUTHS:
        for operation in _OPERATIONS:
            name = f"{truth}/{operation['op']}" + "".join(
                f"-{k}{v}" for k, v in operation.items() if k != "op"
            )
            out.append({"name": name, "truth": truth, "prediction": operation})
    for op in _SAMPLE_OPERATIONS:
        out.append({"name": f"sample/{op}", "truth": "sample", "prediction": {"op": op}})
    for index, sweep in enumerate(_SWEEPS):
        for threshold in SWEEP_THRESHOLDS:
            out.append(
                {
                    "name": f"sweep{index}/{sweep['truth']}/t{threshold:g}",
                    "truth": sweep["truth"],
                    "prediction": {"op": "threshold", **sweep, "threshold": threshold},
                    "sweep": index,
                    "threshold": threshold,
                }
            )
    return out


def build_pair(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(prediction uint8 0/1, labels uint8 0/1/2) of one case."""
    if case["truth"] == "sample":
        with np.load(SAMPLE_FILE) as stored:
            return stored[case["prediction"]["op"]], stored["labels"]
    truth = _truth(case["truth"])
    operation = dict(case["prediction"])
    labels = truth.astype(np.uint8)
    if operation["op"] == "ignore":
        prediction = _noise(truth, np.random.default_rng(operation["seed"]), 0.02)
        labels = _with_ignored(labels, np.random.default_rng(operation["seed"] + 1))
    else:
        prediction = _predict(truth, operation)
    return prediction.astype(np.uint8), labels


def write_sample_arrays(path: Path = SAMPLE_FILE) -> None:
    """Store one volume of the project's sample data and predictions made from it."""
    import tempfile

    from runtime.samples.sample import write_sample
    from runtime.volumes.tiff import read_volume

    with tempfile.TemporaryDirectory() as folder:
        root = write_sample(folder, n=1, shape=(40, 56, 56), seed=5)
        (label_file,) = (root / "train_labels").glob("*.tif")
        labels = read_volume(label_file).astype(np.uint8)
    truth = labels == 1
    arrays = {"labels": labels}
    for op in _SAMPLE_OPERATIONS:
        operation = {
            "identical": {"op": "identical"},
            "shift": {"op": "shift", "axis": 1, "by": 1},
            "noise": {"op": "noise", "seed": 3, "rate": 0.01},
            "dilate": {"op": "dilate", "iterations": 1},
        }[op]
        arrays[op] = _predict(truth, operation).astype(np.uint8)
    np.savez_compressed(path, **arrays)


def mask_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's shape and bytes (uint8), to notice a drifting generator."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return hashlib.sha256(repr(data.shape).encode() + data.tobytes()).hexdigest()


def load_reference() -> dict[str, Any]:
    return json.loads(REFERENCE_FILE.read_text())


def _truth(name: str) -> np.ndarray:
    spec = _TRUTHS[name]
    rng = np.random.default_rng(spec["seed"])
    shape = tuple(spec["shape"])
    if spec["kind"] == "sheets":
        return _sheets(rng, shape, spec["layers"], spec["holes"])
    if spec["kind"] == "blobs":
        return _balls(rng, shape, spec["count"], hollow=False)
    return _balls(rng, shape, spec["count"], hollow=True)


def _sheets(
    rng: np.random.Generator, shape: tuple[int, ...], layers: int, holes: int
) -> np.ndarray:
    depth, height, width = shape
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    zz = np.arange(depth)[:, None, None]
    mask = np.zeros(shape, dtype=bool)
    spacing = depth / (layers + 1)
    for layer in range(layers):
        base = spacing * (layer + 1)
        a, b = rng.uniform(0.5, 2.0, 2)
        fy, fx = rng.uniform(0.08, 0.25, 2)
        py, px = rng.uniform(0, 2 * np.pi, 2)
        surface = base + a * np.sin(fy * yy + py) + b * np.cos(fx * xx + px)
        sheet = np.abs(zz - surface[None]) < 1.0
        # sheets stop short of the borders on a random side, so some octants see their edges
        y0, x0 = rng.integers(0, 6, 2)
        sheet[:, :y0] = False
        sheet[:, :, width - x0 :] = False
        mask |= sheet
    for _ in range(holes):
        centre = rng.uniform(6, np.array(shape) - 6)
        radius = rng.uniform(2.0, 4.0)
        mask &= ~_ball(shape, centre, radius)
    return mask


def _balls(
    rng: np.random.Generator, shape: tuple[int, ...], count: int, hollow: bool
) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        centre = rng.uniform(6, np.array(shape) - 6)
        radius = rng.uniform(3.0, 7.0)
        ball = _ball(shape, centre, radius)
        if hollow:
            ball &= ~_ball(shape, centre, radius - 2.0)
        mask |= ball
    return mask


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def _predict(truth: np.ndarray, operation: dict[str, Any]) -> np.ndarray:
    from scipy import ndimage

    op = operation["op"]
    if op == "identical":
        return truth.copy()
    if op == "dilate":
        return ndimage.binary_dilation(truth, iterations=operation["iterations"])
    if op == "erode":
        return ndimage.binary_erosion(truth, iterations=operation["iterations"])
    if op == "shift":
        out = np.zeros_like(truth)
        by, axis = operation["by"], operation["axis"]
        source = [slice(None)] * 3
        target = [slice(None)] * 3
        source[axis], target[axis] = slice(0, -by), slice(by, None)
        out[tuple(target)] = truth[tuple(source)]
        return out
    if op == "holes":
        rng = np.random.default_rng(operation["seed"])
        out = truth.copy()
        points = np.argwhere(truth)
        for index in rng.choice(len(points), size=operation["count"], replace=False):
            out &= ~_ball(truth.shape, points[index], operation["radius"])
        return out
    if op == "split":
        out = truth.copy()
        index = [slice(None)] * 3
        index[operation["axis"]] = truth.shape[operation["axis"]] // 2
        out[tuple(index)] = False
        return out
    if op == "merge":
        # bridges: straight 3x3 columns along z through random foreground points
        rng = np.random.default_rng(operation["seed"])
        out = truth.copy()
        points = np.argwhere(truth)
        for index in rng.choice(len(points), size=operation["count"], replace=False):
            _, y, x = points[index]
            out[:, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
        return out
    if op == "noise":
        return _noise(truth, np.random.default_rng(operation["seed"]), operation["rate"])
    if op == "empty":
        return np.zeros_like(truth)
    if op == "full":
        return np.ones_like(truth)
    if op == "threshold":
        return probability_map(truth, operation) > operation["threshold"]
    raise ValueError(f"unknown operation {op!r}")


def probability_map(truth: np.ndarray, sweep: dict[str, Any]) -> np.ndarray:
    """A network-like probability: the blurred truth plus smooth noise, squashed to [0, 1]."""
    from scipy import ndimage

    rng = np.random.default_rng(sweep["seed"])
    blurred = ndimage.gaussian_filter(truth.astype(np.float64), sweep["sigma"])
    blurred /= max(float(blurred.max()), 1e-12)
    noise = ndimage.gaussian_filter(rng.standard_normal(truth.shape), sweep["smooth_noise"])
    noise /= max(float(noise.std()), 1e-12)
    return np.clip(blurred + sweep["noise"] * noise, 0.0, 1.0)


def _noise(truth: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    return truth ^ (rng.random(truth.shape) < rate)


def _with_ignored(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label 2 over a slab and a random box, as unlabelled parts of real label volumes."""
    out = labels.copy()
    out[: labels.shape[0] // 4] = 2
    corner = rng.integers(0, np.array(labels.shape) // 2)
    out[corner[0] :, corner[1] : corner[1] + 10, corner[2] : corner[2] + 10] = 2
    return out


def measure_approximation(method: str) -> dict[str, float]:
    """How far an approximate TopoScore ("spatial" or "counts") is from the official values.

    Over every reference pair: the mean and largest absolute TopoScore difference, the mean
    absolute difference of the final score, the pairs whose TopoScore differs at all; over each
    threshold sweep: Kendall's tau between the final scores' rankings (ours against official),
    the worst and the mean, and the official score lost by picking the sweep's best by ours.
    """
    from scipy.stats import kendalltau

    from runtime.volumes.metric.leaderboard import score_volume

    reference = load_reference()["pairs"]
    topo_errors, score_errors = [], []
    sweeps: dict[int, list[tuple[float, float]]] = {}
    for case in cases():
        prediction, labels = build_pair(case)
        expected = reference[case["name"]]
        ours = _score_with(prediction, labels, method, score_volume)
        topo_errors.append(abs(ours.topo_score - expected["topo_score"]))
        score_errors.append(abs(ours.score - expected["score"]))
        if "sweep" in case:
            sweeps.setdefault(case["sweep"], []).append((ours.score, expected["score"]))
    taus, losses = [], []
    for pairs in sweeps.values():
        ours_scores, official = zip(*pairs, strict=True)
        taus.append(float(kendalltau(ours_scores, official).statistic))
        picked = int(np.argmax(ours_scores))
        losses.append(max(official) - official[picked])
    return {
        "pairs": len(topo_errors),
        "topo_mean_abs_error": float(np.mean(topo_errors)),
        "topo_max_abs_error": float(np.max(topo_errors)),
        "topo_pairs_differing": int(np.count_nonzero(np.array(topo_errors) > 1e-12)),
        "score_mean_abs_error": float(np.mean(score_errors)),
        "sweep_kendall_tau_min": float(np.min(taus)),
        "sweep_kendall_tau_mean": float(np.mean(taus)),
        "sweep_best_pick_loss_max": float(np.max(losses)),
    }


def _score_with(prediction: np.ndarray, labels: np.ndarray, method: str, score_volume: Any) -> Any:
    from runtime.volumes.metric.leaderboard import PreparedTruth

    return PreparedTruth(labels).score(prediction, topology=method)
