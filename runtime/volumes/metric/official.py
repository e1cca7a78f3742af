"""The organizers' own metric, when their ``topometrics`` package is importable.

``topometrics`` is not on the package registry (the organizers shipped it as a Kaggle dataset,
with Betti-Matching-3D compiled); whoever has it installed gets the official TopoScore, about a
minute per 320^3 volume. It is called with the competition's parameters, exactly as the
competition's metric notebook does.

Two layouts load: the organizers' checkout (``topometrics`` finds the compiled ``betti_matching``
in ``external/Betti-Matching-3D/build`` beside its sources) and an installed one (both in
site-packages, e.g. wheels from ``bundler compiled``), where their loader finds no build folder:
then a plain ``import betti_matching`` stands in for it. Either way the matcher is checked on a
tiny pair before it counts as available: Betti-Matching-3D builds older than August 2024 name
their result fields differently, and ``topometrics`` reads missing fields as empty lists, which
silently scores every TopoScore 1.0.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import sys
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.volumes.metric.leaderboard import COMPETITION, MetricParameters, VolumeScore

if TYPE_CHECKING:
    import numpy as np

__all__ = ["official_score", "official_version", "topometrics_available", "unavailable_reason"]

_RESULT_FIELD = "input1_matched_birth_coordinates"  # read by topometrics, absent before 2024-08


@functools.cache
def _load() -> tuple[Any, str] | str:
    """(topometrics.leaderboard, how the matcher was found), or why it cannot be used."""
    try:
        leaderboard = importlib.import_module("topometrics.leaderboard")
        how = "topometrics' loader (build folder beside its sources)"
    except ImportError as error:
        if not _plain_betti_matching():
            return f"topometrics is not importable ({error})"
        for name in [n for n in sys.modules if n == "topometrics" or n.startswith("topometrics.")]:
            del sys.modules[name]  # a half-imported package from the failed first try
        shim = types.ModuleType("topometrics._bm_loader")
        shim.load_betti_matching = lambda: importlib.import_module("betti_matching")  # type: ignore[attr-defined]
        sys.modules["topometrics._bm_loader"] = shim
        try:
            leaderboard = importlib.import_module("topometrics.leaderboard")
        except Exception as second:  # its other imports (surface_distance, skimage, cc3d)
            return f"topometrics is not importable ({second})"
        how = "plain import of betti_matching (installed package)"
    except Exception as error:  # the compiled matcher failing to load, a broken install
        return f"topometrics failed to load ({type(error).__name__}: {error})"
    problem = _check_matcher()
    return problem if problem else (leaderboard, how)


def _plain_betti_matching() -> bool:
    try:
        importlib.import_module("betti_matching")
    except Exception:
        return False
    return True


def _check_matcher() -> str | None:
    import numpy as np

    matcher = sys.modules.get("betti_matching")
    if matcher is None:
        return "topometrics loaded no betti_matching module"
    one = np.ones((4, 4, 4), dtype=np.float64)
    one[1:3, 1:3, 1:3] = 0.0
    try:
        result = matcher.compute_matching(one, one)
    except Exception as error:
        return f"betti_matching.compute_matching failed on a 4^3 pair ({error})"
    if not hasattr(result, _RESULT_FIELD):
        return (
            f"betti_matching at {getattr(matcher, '__file__', '?')} has no {_RESULT_FIELD}: "
            "a Betti-Matching-3D older than 2024-08, whose results topometrics reads as "
            "TopoScore 1.0; build a newer commit"
        )
    return None


def topometrics_available() -> bool:
    return not isinstance(_load(), str)


def unavailable_reason() -> str | None:
    """Why the official scorer cannot run here, or None when it can."""
    loaded = _load()
    return loaded if isinstance(loaded, str) else None


@functools.cache
def official_version() -> dict[str, Any]:
    """What identifies the official code that runs: its files' digests and how it was loaded."""
    loaded = _load()
    if isinstance(loaded, str):
        return {"available": False, "reason": loaded}
    leaderboard, how = loaded
    package = Path(leaderboard.__file__).parent
    matcher = sys.modules["betti_matching"]
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    binary = Path(getattr(matcher, "__file__", "") or "")
    return {
        "available": True,
        "topometrics": str(package),
        "topometrics_sources_sha256": digest.hexdigest(),
        "betti_matching": str(binary),
        "betti_matching_sha256": (
            hashlib.sha256(binary.read_bytes()).hexdigest() if binary.is_file() else None
        ),
        "loaded_by": how,
    }


def official_score(
    prediction: np.ndarray,
    labels: np.ndarray,
    parameters: MetricParameters = COMPETITION,
    volume_id: str = "",
) -> VolumeScore:
    import numpy as np

    loaded = _load()
    if isinstance(loaded, str):
        raise RuntimeError(f"the official scorer cannot run: {loaded}")
    compute_leaderboard_score = loaded[0].compute_leaderboard_score
    started = time.perf_counter()
    report = compute_leaderboard_score(
        predictions=prediction,
        labels=labels,
        dims=(0, 1, 2),
        spacing=(1.0, 1.0, 1.0),
        surface_tolerance=parameters.tolerance,
        voi_connectivity=parameters.voi_connectivity,
        voi_transform="one_over_one_plus",
        voi_alpha=parameters.voi_alpha,
        combine_weights=parameters.combine_weights,
        fg_threshold=None,
        ignore_label=parameters.ignore_label,
        ignore_mask=None,
    )
    topo = report.topo
    f1 = {int(k): float(v) for k, v in dict(topo.topoF1_by_dim).items()}
    counts = {int(k): tuple(int(c) for c in v) for k, v in dict(topo.counts_by_dim).items()}
    ignored = (
        0
        if parameters.ignore_label is None
        else int(np.count_nonzero(np.asarray(labels) == parameters.ignore_label))
    )
    return VolumeScore(
        id=volume_id,
        score=min(max(float(report.score), 0.0), 1.0),
        surface_dice=float(report.surface_dice),
        voi_score=float(report.voi.voi_score),
        voi_split=float(report.voi.voi_split),
        voi_merge=float(report.voi.voi_merge),
        topo_score=float(topo.toposcore),
        topo_f1=f1,
        topo_counts=counts,  # type: ignore[arg-type]
        topo_kind="official",
        ignored_voxels=ignored,
        seconds=time.perf_counter() - started,
    )
