"""``runtime score``: a submission (zip or folder of mask TIFFs) against label TIFFs, by id.

Predictions are found the way the competition's scorer finds them (every ``*.tif`` at any depth,
the id being the file name up to its first dot); labels are ``<id>.tif`` files (0 background,
1 surface, 2 ignored), in a folder or in the ``train_labels/`` of a competition-like root. Every
problem with the pairing (an id without prediction, a prediction without labels, a prediction of
another shape, an unreadable file) is found before any scoring and reported in one line.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import statistics
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.contract.errors import InputError, VolumeError, first_line
from runtime.volumes.metric.leaderboard import COMPETITION, MetricParameters, VolumeScore

__all__ = [
    "ScoreReport",
    "VolumeSourcePair",
    "choose_scorer",
    "find_labels",
    "find_predictions",
    "pair_volumes",
    "score_predictions",
]

_LISTED = 10  # ids named in one error line before "and N more"
SCORE_FORMAT = "kaggle-offline-score"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a volume's TIFF is: a file, or a member of a zip."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read(self) -> Any:
        from runtime.volumes.tiff import read_volume

        if self.member is None:
            return read_volume(self.path)
        return read_volume(io.BytesIO(self._bytes()), name=str(self))

    def shape(self) -> tuple[int, ...]:
        from runtime.volumes.tiff import read_volume_header

        source: Any = self.path if self.member is None else io.BytesIO(self._bytes())
        return tuple(read_volume_header(source, name=str(self)).shape)

    def _bytes(self) -> bytes:
        try:
            with zipfile.ZipFile(self.path) as archive:
                info = archive.getinfo(self.member or "")
                _check_member_size(info.file_size, str(self))  # a zip bomb is refused unread
                return archive.read(info)
        except (zipfile.BadZipFile, OSError, KeyError) as error:
            raise VolumeError(
                f"{self}: cannot read it from the zip ({first_line(error)})"
            ) from None


def _check_member_size(declared: int, where: str) -> None:
    """A member is read whole (zipfile stops at its declared size): refuse one that cannot fit."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if declared > free:
        raise VolumeError(
            f"{where}: declares {declared / 2**30:.1f} GiB uncompressed, more than the "
            f"{free / 2**30:.1f} GiB of memory free; not read"
        )


@dataclasses.dataclass(frozen=True)
class VolumeSourcePair:
    id: str
    prediction: Source
    labels: Source


@dataclasses.dataclass
class ScoreReport:
    volumes: list[VolumeScore]
    scorer: str  # "official" or "local"
    components: str  # the connected-component labeller ("cc3d" or "scipy")
    seconds: float
    parameters: MetricParameters = COMPETITION

    @property
    def topo_kind(self) -> str:
        return "official" if self.scorer == "official" else "approximate"

    def mean(self, field: str) -> float:
        return (
            statistics.fmean(getattr(v, field) for v in self.volumes) if self.volumes else math.nan
        )

    def to_dict(self) -> dict[str, Any]:
        fields = ("score", "surface_dice", "voi_score", "voi", "topo_score")
        return {
            "format": SCORE_FORMAT,
            "format_version": 1,
            "scorer": self.scorer,
            "topo_score": self.topo_kind,
            "components": self.components,
            "parameters": dataclasses.asdict(self.parameters),
            "mean": {field: self.mean(field) for field in fields},
            "volumes": [volume.to_dict() for volume in self.volumes],
            "seconds": round(self.seconds, 3),
        }

    def table(self) -> str:
        kind = self.topo_kind
        rows: list[tuple[str, ...]] = [
            (
                "id",
                "SurfaceDice",
                "VOI score",
                "VOI",
                f"TopoScore ({kind})",
                f"score ({'official' if kind == 'official' else 'approximate topo'})",
            )
        ]
        for v in self.volumes:
            rows.append(
                (
                    v.id,
                    f"{v.surface_dice:.4f}",
                    f"{v.voi_score:.4f}",
                    f"{v.voi:.3f}",
                    f"{v.topo_score:.4f}",
                    f"{v.score:.4f}",
                )
            )
        rows.append(
            (
                "mean",
                *(f"{self.mean(f):.4f}" for f in ("surface_dice", "voi_score")),
                f"{self.mean('voi'):.3f}",
                *(f"{self.mean(f):.4f}" for f in ("topo_score", "score")),
            )
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        if kind == "approximate":
            lines.append(
                "TopoScore is approximate: topometrics is not installed, so features are counted "
                "per octant without Betti matching (matches are over-counted); SurfaceDice and "
                "VOI follow the official definitions exactly."
            )
        return "\n".join(lines)


def find_predictions(path: Path | str) -> dict[str, Source]:
    """Mask TIFFs of a submission zip or a folder, by id (name up to the first dot)."""
    path = Path(path)
    found: dict[str, list[Source]] = {}
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"{path}: not a readable zip file ({first_line(error)})") from None
        for name in names:
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            if base.endswith(".tif"):
                found.setdefault(base.split(".", 1)[0], []).append(Source(path, name))
    elif path.is_dir():
        for file in sorted(path.rglob("*.tif")):
            found.setdefault(file.name.split(".", 1)[0], []).append(Source(file))
    else:
        raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError(f"{path}: no .tif masks in it")
    doubled = sorted(volume_id for volume_id, sources in found.items() if len(sources) > 1)
    if doubled:
        raise InputError(f"{path}: several masks for id(s) {_ids(doubled)}")
    return {volume_id: sources[0] for volume_id, sources in found.items()}


def find_labels(path: Path | str) -> dict[str, Source]:
    """Label TIFFs by id: ``<id>.tif``/``.tiff`` in a folder, or in its ``train_labels/``."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder of label TIFFs")
    if not any(path.glob("*.tif*")) and (path / "train_labels").is_dir():
        path = path / "train_labels"
    labels = {
        file.name.split(".", 1)[0]: Source(file)
        for file in sorted(path.iterdir())
        if file.is_file() and file.suffix.lower() in (".tif", ".tiff")
    }
    if not labels:
        raise InputError(f"{path}: no label .tif files in it")
    return labels


def pair_volumes(
    predictions: dict[str, Source],
    labels: dict[str, Source],
    *,
    only_predicted: bool = False,
    check_shapes: bool = True,
) -> list[VolumeSourcePair]:
    """Pair predictions with labels by id; raise :class:`InputError` naming every problem.

    Every labelled id needs a prediction unless ``only_predicted`` (then labels without one are
    skipped); a prediction without labels is always an error.
    """
    problems = []
    unlabelled = sorted(set(predictions) - set(labels))
    if unlabelled:
        problems.append(f"no labels for predicted id(s) {_ids(unlabelled)}")
    missing = [] if only_predicted else sorted(set(labels) - set(predictions))
    if missing:
        problems.append(
            f"no prediction for id(s) {_ids(missing)} (--only-predicted scores just the predicted ones)"
        )
    pairs = [
        VolumeSourcePair(i, predictions[i], labels[i])
        for i in sorted(set(predictions) & set(labels))
    ]
    if check_shapes:
        for pair in pairs:
            try:
                predicted, expected = pair.prediction.shape(), pair.labels.shape()
            except VolumeError as error:
                problems.append(first_line(error))
                continue
            if predicted != expected:
                problems.append(
                    f"{pair.prediction}: shape {predicted}, its labels {pair.labels} are {expected}"
                )
    if problems:
        raise InputError("; ".join(problems))
    if not pairs:
        raise InputError("no predicted id has labels")
    return pairs


def score_predictions(
    prediction_path: Path | str,
    labels_path: Path | str,
    *,
    scorer: str = "auto",
    jobs: int | None = None,
    only_predicted: bool = False,
    log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
) -> ScoreReport:
    """Score every predicted volume against its labels, in parallel over volumes."""
    from runtime.volumes.metric.components import backend
    from runtime.volumes.metric.official import topometrics_available
    from runtime.volumes.parallel import default_jobs, run_tasks
    from runtime.volumes.progress import TaskProgress

    log = log or (lambda message: None)
    started = time.perf_counter()
    chosen = choose_scorer(scorer, topometrics_available())
    pairs = pair_volumes(
        find_predictions(prediction_path), find_labels(labels_path), only_predicted=only_predicted
    )
    voxels = math.prod(pairs[0].labels.shape())
    workers = jobs or default_jobs(len(pairs), voxels)
    log(f"scoring {len(pairs)} volume(s) with the {chosen} metric on {workers} process(es)")
    progress = TaskProgress(len(pairs), unit="vol", log=log, bar=progress_bar, label="score")

    def done(index: int, result: VolumeScore) -> None:
        progress.advance()
        progress.write(f"{result.id}: score {result.score:.4f} ({result.seconds:.1f} s)")

    try:
        results = run_tasks(
            _score_pair, [(pair, chosen) for pair in pairs], jobs=workers, on_result=done
        )
    finally:
        progress.close()
    return ScoreReport(results, chosen, backend(), time.perf_counter() - started)


def choose_scorer(scorer: str, official_available: bool) -> str:
    """The scorer a ``--scorer`` choice (auto, official or local) means here: official or local."""
    if scorer == "auto":
        return "official" if official_available else "local"
    if scorer == "official" and not official_available:
        raise InputError("--scorer official: the organizers' topometrics package is not importable")
    if scorer not in ("official", "local"):
        raise InputError(f"unknown scorer {scorer!r}: auto, official or local")
    return scorer


def _score_pair(task: tuple[VolumeSourcePair, str]) -> VolumeScore:
    pair, scorer = task
    prediction, labels = pair.prediction.read(), pair.labels.read()
    if scorer == "official":
        from runtime.volumes.metric.official import official_score

        return official_score(prediction, labels, volume_id=pair.id)
    from runtime.volumes.metric.leaderboard import score_volume

    return score_volume(prediction, labels, volume_id=pair.id)


def _ids(ids: list[str]) -> str:
    listed = ", ".join(ids[:_LISTED])
    return listed + (f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else "")
