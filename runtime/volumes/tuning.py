"""``runtime tune``: which threshold and post-processing score best on labelled volumes.

Each setting (:class:`~runtime.volumes.mask_settings.MaskSettings`) turns every volume's saved
probability into a mask exactly as ``predict --postprocess`` will, and the mask is scored with
the competition's metric (the truth's half of the metric is prepared once per volume and worker).
Work is spread over processes by volume and batch of settings.

Without a grid file the search is staged, to stay affordable (about 55 settings):

1. plain thresholds 0.05, 0.10, ..., 0.95;
2. at the best of them: minimum component sizes 0/2,000/20,000, closing radius 0/1/3, hole
   filling off/on;
3. the two best clean-ups again at thresholds within 0.15 of the best;
4. hysteresis (low, high) around the best threshold, with the best clean-up;
5. the per-volume threshold rule at 0.75, 1 and 1.25 times the labels' mean foreground share.

A grid file (JSON) lists values per axis instead, and every combination is scored::

    {"thresholds": [0.3, 0.4, 0.5], "min_component_voxels": [0, 20000], "closing_radius": [0, 3],
     "fill_holes": [false, true], "hysteresis": [[0.3, 0.6]], "foreground_fraction": [0.08]}

The recommendation is the best setting if it beats the best plain threshold on these volumes,
else that plain threshold; ``postprocess.json`` holds it for ``predict --postprocess``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime.contract.errors import InputError
from runtime.volumes.mask_settings import POSTPROCESS_FORMAT, MaskSettings
from runtime.volumes.postprocess import PostprocessOptions, check_closing_cost

__all__ = ["SettingResult", "TuneReport", "grid_from_file", "tune"]

DEFAULT_THRESHOLDS = tuple(round(0.05 * n, 2) for n in range(1, 20))
_STAGE_MIN_VOXELS = (0, 2_000, 20_000)
_STAGE_CLOSING = (0, 1, 3)
_STAGE_FILL = (False, True)
_GRID_KEYS = {
    "thresholds",
    "min_component_voxels",
    "closing_radius",
    "fill_holes",
    "hysteresis",
    "foreground_fraction",
}
_GAIN_EPSILON = 1e-9  # a "gain" below this is rounding noise, not a better setting


@dataclasses.dataclass
class SettingResult:
    settings: MaskSettings
    scores: dict[str, Any]  # volume id -> VolumeScore
    thresholds: dict[str, float]  # volume id -> the threshold it got

    def mean(self, field: str) -> float:
        return statistics.fmean(getattr(s, field) for s in self.scores.values())

    @property
    def score(self) -> float:
        return self.mean("score")

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "description": self.settings.describe(),
            "score": self.score,
            "surface_dice": self.mean("surface_dice"),
            "voi_score": self.mean("voi_score"),
            "topo_score": self.mean("topo_score"),
            "volumes": {
                volume_id: {
                    "score": s.score,
                    "surface_dice": s.surface_dice,
                    "voi_score": s.voi_score,
                    "topo_score": s.topo_score,
                    "threshold": self.thresholds[volume_id],
                }
                for volume_id, s in self.scores.items()
            },
        }


@dataclasses.dataclass
class TuneReport:
    results: list[SettingResult]  # best first
    encoding: str
    scorer: str
    volume_ids: list[str]
    seconds: float

    @property
    def best_plain(self) -> SettingResult:
        return next(r for r in self.results if r.settings.is_plain_threshold)

    @property
    def recommended(self) -> SettingResult:
        best, plain = self.results[0], self.best_plain
        return best if best.score > plain.score + _GAIN_EPSILON else plain

    @property
    def gain(self) -> float:
        return self.recommended.score - self.best_plain.score

    @property
    def topo_kind(self) -> str:
        return "official" if self.scorer == "official" else "approximate"

    def table(self, rows: int = 15) -> str:
        plain = self.best_plain
        shown = self.results[:rows]
        if plain not in shown:
            shown.append(plain)
        header = (
            "rank",
            "setting",
            "score",
            "vs plain",
            "SurfaceDice",
            "VOI score",
            f"TopoScore ({self.topo_kind})",
        )
        lines = [header]
        for result in shown:
            rank = self.results.index(result) + 1
            delta = result.score - plain.score
            lines.append(
                (
                    str(rank),
                    result.settings.describe(),
                    f"{result.score:.4f}",
                    f"{delta:+.4f}",
                    f"{result.mean('surface_dice'):.4f}",
                    f"{result.mean('voi_score'):.4f}",
                    f"{result.mean('topo_score'):.4f}",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(
                c.ljust(w) if i == 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        ]
        text.insert(1, "-" * len(text[0]))
        recommended = self.recommended
        if recommended is plain:
            verdict = f"recommended: {plain.settings.describe()} (score {plain.score:.4f}); no post-processing beat the plain threshold on these {len(self.volume_ids)} volume(s)"
        else:
            verdict = f"recommended: {recommended.settings.describe()} (score {recommended.score:.4f}), {self.gain:+.4f} over the best plain threshold {plain.settings.threshold:g} ({plain.score:.4f}) on these {len(self.volume_ids)} volume(s)"
        text.append(verdict)
        if self.topo_kind == "approximate":
            text.append("scores use the approximate TopoScore (feature counts, no Betti matching)")
        return "\n".join(text)

    def postprocess_document(self) -> dict[str, Any]:
        recommended, plain = self.recommended, self.best_plain
        return {
            "format": POSTPROCESS_FORMAT,
            "format_version": 1,
            "settings": recommended.settings.to_dict(),
            "description": recommended.settings.describe(),
            "probability_encoding": self.encoding,
            "score": recommended.score,
            "plain_threshold": {"threshold": plain.settings.threshold, "score": plain.score},
            "gain_over_plain_threshold": self.gain,
            "scorer": self.scorer,
            "topo_score": self.topo_kind,
            "volumes": self.volume_ids,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "kaggle-offline-tune",
            "format_version": 1,
            "recommended": self.postprocess_document(),
            "seconds": round(self.seconds, 3),
            "results": [result.to_dict() for result in self.results],
        }

    def plot_series(self, families: int = 3) -> list[tuple[str, list[tuple[float, float]]]]:
        """Score against threshold for the plain threshold and the best few clean-ups."""
        groups: dict[PostprocessOptions, list[SettingResult]] = {}
        for result in self.results:
            if result.settings.rule == "threshold":
                groups.setdefault(result.settings.postprocess, []).append(result)
        plain = PostprocessOptions()
        ranked = sorted(
            (key for key in groups if key != plain and len(groups[key]) > 1),
            key=lambda key: -max(r.score for r in groups[key]),
        )
        chosen = ([plain] if plain in groups else []) + ranked[:families]
        return [
            (
                ", ".join(key.steps) or "plain threshold",
                [(r.settings.threshold, r.score) for r in groups[key]],
            )
            for key in chosen
        ]


MAX_GRID_SETTINGS = 5_000  # each setting is scored on every volume: minutes each, at most


def grid_from_file(path: Path | str) -> list[MaskSettings]:
    """Every combination of the axes a grid file lists (plain thresholds always included).

    Every value is checked for type and range, and the number of settings against
    ``MAX_GRID_SETTINGS``, before any is built or scored: one line names the file and field.
    """
    from runtime.contract.files import load_json
    from runtime.contract.values import Values
    from runtime.volumes.mask_settings import postprocess_from_dict

    path = Path(path)
    data = load_json(path, kind="tuning grid", error=InputError)
    if not isinstance(data, dict) or not data:
        raise InputError(
            f"{path}: a grid is a JSON object of lists, keys {', '.join(sorted(_GRID_KEYS))}"
        )
    unknown = sorted(set(data) - _GRID_KEYS)
    if unknown:
        raise InputError(
            f"{path}: unknown grid key(s) {', '.join(unknown)}; known: {', '.join(sorted(_GRID_KEYS))}"
        )
    values = Values(path, InputError)

    def axis(key: str, default: list[Any]) -> list[Any]:
        listed = values.listing(data.get(key, default), key)
        if not listed and key in (
            "thresholds",
            "min_component_voxels",
            "closing_radius",
            "fill_holes",
        ):
            # no plain threshold, or no clean-up to combine with: nothing to recommend
            values.fail(
                key, "lists no value, so no setting could be recommended; give at least one"
            )
        return listed

    thresholds = [
        values.number(t, f"thresholds[{i}]", low=0.0, high=1.0, open_high=True)
        for i, t in enumerate(axis("thresholds", [0.5]))
    ]
    sizes = [
        values.whole(m, f"min_component_voxels[{i}]")
        for i, m in enumerate(axis("min_component_voxels", [0]))
    ]
    radii = [
        values.whole(c, f"closing_radius[{i}]") for i, c in enumerate(axis("closing_radius", [0]))
    ]
    for i, radius in enumerate(radii):
        try:
            check_closing_cost(radius)
        except ValueError as error:  # before any volume is scored with it
            values.fail(f"closing_radius[{i}]", f"is refused: {error}")
    fills = [
        values.boolean(f, f"fill_holes[{i}]") for i, f in enumerate(axis("fill_holes", [False]))
    ]
    pairs = []
    for i, pair in enumerate(axis("hysteresis", [])):
        low, high = values.numbers(pair, f"hysteresis[{i}]", length=2, low=0.0, high=1.0)
        if not low < high < 1.0:
            values.fail(f"hysteresis[{i}]", f"must be [low, high] with low < high < 1, got {pair}")
        pairs.append((low, high))
    fractions = [
        values.number(
            f, f"foreground_fraction[{i}]", low=0.0, high=1.0, open_low=True, open_high=True
        )
        for i, f in enumerate(axis("foreground_fraction", []))
    ]
    per_cleanup = len(thresholds) + len(pairs) + len(fractions)
    count = len(thresholds) + per_cleanup * len(sizes) * len(radii) * len(fills)
    if count > MAX_GRID_SETTINGS:
        raise InputError(
            f"{path}: the grid makes {count} settings, each scored on every volume; at most "
            f"{MAX_GRID_SETTINGS}: list fewer values"
        )
    cleanups = [
        postprocess_from_dict(
            {"min_component_voxels": m, "closing_radius": c, "fill_holes": f}, values, "grid"
        )
        for m, c, f in itertools.product(sizes, radii, fills)
    ]
    settings = [MaskSettings(threshold=t) for t in thresholds]
    settings += [MaskSettings(threshold=t, postprocess=p) for t in thresholds for p in cleanups]
    settings += [
        MaskSettings(threshold=low, hysteresis_high=high, postprocess=p)
        for (low, high) in pairs
        for p in cleanups
    ]
    settings += [
        MaskSettings(foreground_fraction=f, postprocess=p) for f in fractions for p in cleanups
    ]
    return list(dict.fromkeys(settings))


def tune(
    probabilities: Path | str,
    labels: Path | str,
    *,
    grid: Sequence[MaskSettings] | None = None,
    scorer: str = "local",
    jobs: int | None = None,
    log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
) -> TuneReport:
    """Score settings on saved probabilities against labels; the grid's, or the staged search."""
    from runtime.volumes.evaluation import choose_scorer, find_labels
    from runtime.volumes.metric.official import topometrics_available
    from runtime.volumes.parallel import default_jobs
    from runtime.volumes.probability import find_probabilities, load_probability

    log = log or (lambda message: None)
    started = time.perf_counter()
    chosen = choose_scorer(scorer, topometrics_available())
    found = find_probabilities(probabilities)
    for note in found.notes:
        log(note)
    label_files = find_labels(labels)
    unlabelled = sorted(set(found.files) - set(label_files))
    if unlabelled:
        raise InputError(f"no labels in {labels} for {', '.join(unlabelled[:10])}")
    volumes = []
    for volume_id in sorted(found.files):
        shape = load_probability(found.files[volume_id]).shape
        label_shape = label_files[volume_id].shape()
        if tuple(shape) != tuple(label_shape):
            raise InputError(
                f"{found.files[volume_id]}: shape {tuple(shape)}, its labels {label_files[volume_id]} are {tuple(label_shape)}"
            )
        volumes.append(
            _Volume(
                volume_id,
                str(found.files[volume_id]),
                found.encoding,
                str(label_files[volume_id].path),
            )
        )
    voxels = math.prod(shape)
    workers = jobs or default_jobs(len(volumes) * 4, voxels)
    search = _Search(volumes, chosen, workers, log, progress_bar)
    try:
        if grid is not None:
            search.run("grid", list(grid))
        else:
            _staged(search)
    finally:
        # With one job the workers' cache is this process's: it must neither keep a volume's
        # arrays alive after tune nor serve them to a later tune of rewritten files (same paths).
        _CACHE.clear()
    ranked = sorted(
        search.results.values(),
        key=lambda r: (
            -r.score,
            len(r.settings.postprocess.steps),
            r.settings.rule != "threshold",
            r.settings.threshold,
        ),
    )
    return TuneReport(
        ranked, found.encoding, chosen, [v.id for v in volumes], time.perf_counter() - started
    )


def _staged(search: _Search) -> None:
    search.run("thresholds", [MaskSettings(threshold=t) for t in DEFAULT_THRESHOLDS])
    best = search.best().settings.threshold
    cleanups = [
        PostprocessOptions(min_component_voxels=m, closing_radius=c, fill_holes=f)
        for m, c, f in itertools.product(_STAGE_MIN_VOXELS, _STAGE_CLOSING, _STAGE_FILL)
    ]
    search.run("clean-up", [MaskSettings(threshold=best, postprocess=p) for p in cleanups])
    top = [
        r.settings.postprocess
        for r in search.ranked()
        if r.settings.rule == "threshold" and r.settings.postprocess.steps
    ]
    top = list(dict.fromkeys(top))[:2]
    near = [
        round(best + d, 2) for d in (-0.15, -0.1, -0.05, 0.05, 0.1, 0.15) if 0.0 < best + d < 1.0
    ]
    search.run(
        "thresholds again", [MaskSettings(threshold=t, postprocess=p) for p in top for t in near]
    )
    leader = search.best().settings
    clean = leader.postprocess
    centre = leader.threshold
    pairs = [(round(centre - a, 2), round(centre + b, 2)) for a in (0.1, 0.2) for b in (0.1, 0.2)]
    search.run(
        "hysteresis",
        [
            MaskSettings(threshold=low, hysteresis_high=high, postprocess=clean)
            for low, high in pairs
            if low > 0.0 and high < 1.0
        ],
    )
    share = statistics.fmean(search.truth_fractions.values())
    fractions = sorted({round(share * f, 4) for f in (0.75, 1.0, 1.25) if 0.0 < share * f < 1.0})
    search.run(
        "per-volume threshold",
        [MaskSettings(foreground_fraction=f, postprocess=clean) for f in fractions],
    )


@dataclasses.dataclass(frozen=True)
class _Volume:
    id: str
    probability: str
    encoding: str
    labels: str


class _Search:
    """Scores settings stage by stage, remembering every result."""

    def __init__(
        self,
        volumes: list[_Volume],
        scorer: str,
        jobs: int,
        log: Callable[[str], None],
        progress_bar: bool | None,
    ) -> None:
        self.volumes, self.scorer, self.jobs, self.log, self.progress_bar = (
            volumes,
            scorer,
            jobs,
            log,
            progress_bar,
        )
        self.results: dict[MaskSettings, SettingResult] = {}
        self.truth_fractions: dict[str, float] = {}

    def ranked(self) -> list[SettingResult]:
        return sorted(self.results.values(), key=lambda r: -r.score)

    def best(self) -> SettingResult:
        return self.ranked()[0]

    def run(self, stage: str, settings: list[MaskSettings]) -> None:
        from runtime.volumes.parallel import run_tasks
        from runtime.volumes.progress import TaskProgress

        fresh = [s for s in dict.fromkeys(settings) if s not in self.results]
        if not fresh:
            return
        per_volume = max(1, math.ceil(2 * self.jobs / len(self.volumes))) if self.jobs > 1 else 1
        size = math.ceil(len(fresh) / per_volume)
        tasks = [
            (volume, fresh[i : i + size], self.scorer)
            for volume in self.volumes
            for i in range(0, len(fresh), size)
        ]
        progress = TaskProgress(
            len(fresh) * len(self.volumes),
            unit="score",
            log=self.log,
            bar=self.progress_bar,
            label=stage,
        )
        gathered: dict[MaskSettings, SettingResult] = {s: SettingResult(s, {}, {}) for s in fresh}

        def done(index: int, outcome: tuple[str, float, list[tuple[Any, float]]]) -> None:
            volume_id, fraction, scored = outcome
            self.truth_fractions[volume_id] = fraction
            for setting, (score, threshold) in zip(tasks[index][1], scored, strict=True):
                gathered[setting].scores[volume_id] = score
                gathered[setting].thresholds[volume_id] = threshold
            progress.advance(len(scored))

        try:
            run_tasks(_score_settings, tasks, jobs=self.jobs, on_result=done)
        finally:
            progress.close()
        self.results.update(gathered)
        best = max(gathered.values(), key=lambda r: r.score)
        self.log(
            f"{stage}: {len(fresh)} setting(s), best {best.settings.describe()} at {best.score:.4f}"
        )


_CACHE: dict[str, Any] = {}  # per worker process: the last volume's probability and prepared truth


def _score_settings(
    task: tuple[_Volume, list[MaskSettings], str],
) -> tuple[str, float, list[tuple[Any, float]]]:
    """Worker: one volume, several settings -> (id, truth foreground share, [(score, threshold)])."""
    import numpy as np

    from runtime.volumes.mask_settings import apply_settings
    from runtime.volumes.metric.leaderboard import PreparedTruth
    from runtime.volumes.probability import load_probability
    from runtime.volumes.tiff import read_volume

    volume, settings, scorer = task
    if _CACHE.get("key") != volume:
        _CACHE.clear()
        labels = read_volume(volume.labels)
        stored = np.asarray(load_probability(volume.probability))
        truth = PreparedTruth(labels) if scorer == "local" else None
        scored_voxels = labels.size - (0 if truth is None else truth.ignored_voxels)
        share = float(np.count_nonzero(labels == 1)) / max(scored_voxels, 1)
        _CACHE.update(key=volume, labels=labels, stored=stored, truth=truth, share=share)
    results = []
    for setting in settings:
        mask, threshold = apply_settings(_CACHE["stored"], volume.encoding, setting)
        if scorer == "official":
            from runtime.volumes.metric.official import official_score

            score = official_score(mask, _CACHE["labels"], volume_id=volume.id)
        else:
            score = _CACHE["truth"].score(mask, volume.id)
        results.append((score, threshold))
    return volume.id, _CACHE["share"], results
