"""The last step of a generated notebook: ``submission.zip`` checked again, independently.

predict validates the zip it writes; this reads it back against the test volumes on disk (their
headers only) and prints one line per volume from ``metrics.json``, so that a notebook's output
shows what was submitted and how each volume went. Kept here, not in the notebook, so that the
notebook's cell stays two lines that a Kaggle user can read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from runtime.contract.errors import SubmissionError, VolumeError
from runtime.contract.files import load_json
from runtime.volumes.inputs import find_volumes
from runtime.volumes.submission import validate_submission
from runtime.volumes.tiff import read_volume_header

__all__ = ["submission_report"]


def submission_report(submission: Path, competition_root: Path, metrics: Path) -> Iterator[str]:
    """Lines saying how each volume went and that ``submission`` is valid; SubmissionError if not.

    A test volume whose header cannot be read is noted and left out of the check (predict made
    its decision about it already, and metrics.json says which).
    """
    expected = {}
    for source in find_volumes(competition_root).sources:
        try:
            if source.path:
                expected[source.id] = read_volume_header(source.path).shape
        except VolumeError as error:
            yield f"note: {error}"
    problems = validate_submission(submission, expected)
    run = load_json(metrics, kind="metrics", error=SubmissionError)
    for volume in run.get("volumes", []) if isinstance(run, dict) else []:
        shape = "x".join(map(str, volume.get("shape") or [])) or "?"
        yield (
            f"{volume.get('id', '?'):>12} {shape:>13} {volume.get('status', '?'):>9}  "
            f"infer {volume.get('infer_seconds') or 0:.1f}s  "
            f"{volume.get('device') or ''} {volume.get('precision') or ''}".rstrip()
        )
    if problems:
        raise SubmissionError(f"{submission} is not a valid submission: " + "; ".join(problems))
    sha = (run.get("run", {}) if isinstance(run, dict) else {}).get("submission_sha256") or "?"
    yield (
        f"{submission}: valid, {len(expected)} masks, {submission.stat().st_size} bytes, "
        f"sha256 {sha[:12]}"
    )
