"""The output places of ``tune`` and ``score``, checked before their work as ``predict``'s are.

``tune -o DIR`` must not write onto its inputs (the probabilities, their manifest, the labels,
the grid) and removes its earlier results when it starts: a tune killed half-way must leave no
``postprocess.json`` for ``predict --postprocess`` to take for this tune's. ``score --json``
gets the same checks (writable, not onto an input, not under a file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.volumes.outputs import Output, check_outputs

__all__ = ["TUNE_OUTPUTS", "check_score_output", "prepare_tune_output"]

TUNE_OUTPUTS = ("postprocess.json", "tune-results.json", "tune-plot.png")


def prepare_tune_output(
    out: Path, probabilities: Path, labels: Path, grid: Path | None, log: Callable[[str], None]
) -> None:
    """Refuse an ``-o`` that overwrites an input or cannot be written; clear earlier results."""
    from runtime.volumes.evaluation import find_labels
    from runtime.volumes.probability import MANIFEST_NAME, find_probabilities
    from runtime.volumes.stale import invalidate

    found = find_probabilities(probabilities)
    reads = [*found.files.values(), found.folder / MANIFEST_NAME]
    reads += [source.path for source in find_labels(labels).values()]
    if grid is not None:
        reads.append(grid)
    check_outputs([Output("-o", out, TUNE_OUTPUTS, bytes=1 << 20)], reads)
    invalidate([out / name for name in TUNE_OUTPUTS], log)


def check_score_output(json_path: Path, prediction: Path, labels: Path) -> None:
    """``--json`` is written after minutes of scoring: check it first."""
    from runtime.volumes.evaluation import find_labels

    reads = [prediction] if prediction.is_file() else list(prediction.rglob("*.tif"))
    reads += [source.path for source in find_labels(labels).values()]
    check_outputs([Output("--json", json_path, bytes=1 << 16)], reads)
