"""The submission notebook: install from the wheelhouse, predict, validate; written with nbformat.

Its cells, in order: the settings (the only values that came from the command line), the input
finder copied verbatim from :mod:`bundler.kaggle.notebook_inputs`, locating every input, the offline
install (the wheelhouse's own ``bootstrap.py``) and the doctor's summary, predict, and an
independent check of ``submission.zip`` against the test set with the timings. Every code cell
is plain Python (no ``!`` or ``%`` magics), so the same code runs in Jupyter and, for the
simulation in ``noxfile.py``, cell by cell in a bare interpreter. No outputs, deterministic cell
ids: generating twice gives the same file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bundler.errors import BundlerError
from runtime import __version__

NBFORMAT_VERSION = 4
INPUT_ROOT_VARIABLE = "KAGGLE_OFFLINE_INPUT_ROOT"  # the runtime reads the same variable
WORKING_DIR_VARIABLE = "KAGGLE_OFFLINE_WORKING_DIR"


@dataclass(frozen=True)
class NotebookModel:
    """A model as the notebook finds it: a model source, or a dataset and a path inside it."""

    kind: str  # "model" | "dataset"
    ref: str  # owner/model/framework/variation/version, or owner/dataset
    path: str = ""  # inside the dataset


@dataclass(frozen=True)
class NotebookPlan:
    title: str
    wheelhouse: str  # owner/dataset
    competition: str  # slug
    models: Sequence[NotebookModel]
    predict_options: Sequence[str]  # exactly as given, checked by predict's own argument types
    metrics: str | None = None  # --metrics if given (else metrics.json beside submission.zip)
    command: str = ""  # the bundler command that made it, for the first cell


def make_notebook(plan: NotebookPlan) -> Any:
    """The notebook for ``plan``, validated against the nbformat v4 schema."""
    nbformat = _nbformat()
    cells = [
        nbformat.v4.new_markdown_cell(_introduction(plan)),
        nbformat.v4.new_code_cell(_settings(plan)),
        nbformat.v4.new_code_cell(_finder_source()),
        nbformat.v4.new_code_cell(_LOCATE),
        nbformat.v4.new_code_cell(_INSTALL),
        nbformat.v4.new_code_cell(_PREDICT),
        nbformat.v4.new_code_cell(_SUMMARY),
    ]
    for number, cell in enumerate(cells):
        cell.id = f"kaggle-offline-{number}"
    notebook = nbformat.v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:  # our bug, not the user's: say so in one line
        raise BundlerError(
            f"the generated notebook is not valid nbformat: {error.message}"
        ) from None
    return notebook


def notebook_text(notebook: Any) -> str:
    return str(_nbformat().writes(notebook, version=NBFORMAT_VERSION))


def _nbformat() -> Any:
    try:
        import nbformat
    except ImportError:
        raise BundlerError(
            "writing the notebook needs nbformat: pip install 'kaggle-offline[bundler]'"
        ) from None
    return nbformat


def _introduction(plan: NotebookPlan) -> str:
    models = "\n".join(
        f"- `{m.ref}{'/' + m.path if m.path else ''}` ({'model' if m.kind == 'model' else 'dataset'})"
        for m in plan.models
    )
    options = " ".join(plan.predict_options) or "none (predict's defaults)"
    return (
        f"# {plan.title}\n\n"
        "An offline code-competition submission made by kaggle-offline "
        f"{__version__}: it installs what the kernel lacks from the wheelhouse dataset "
        f"`{plan.wheelhouse}` (internet off), segments the test volumes of `{plan.competition}` "
        "and writes a validated `/kaggle/working/submission.zip`.\n\n"
        f"Models:\n{models}\n\nPredict options: `{options}`\n\n"
        "Inputs are found by searching `/kaggle/input`, so both of Kaggle's mount layouts work."
        + (f"\n\nGenerated with `{plan.command}`." if plan.command else "")
    )


def _settings(plan: NotebookPlan) -> str:
    models = _literal([(m.kind, m.ref, m.path) for m in plan.models])
    metrics = (
        f"Path({_literal(plan.metrics)})"
        if plan.metrics
        else 'SUBMISSION.with_name("metrics.json")'
    )
    return f"""\
# Settings, written by `python -m bundler kernel` (kaggle-offline {__version__}).
import os
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
WHEELHOUSE = {_literal(plan.wheelhouse)}  # the wheelhouse dataset
COMPETITION = {_literal(plan.competition)}
MODELS = {models}  # (kind, Kaggle reference, path inside a dataset)
PREDICT_OPTIONS = {_literal(list(plan.predict_options))}
# The simulation in kaggle-offline's noxfile.py points these at its fake tree; on Kaggle they
# are unset and the real folders are used.
INPUT_ROOT = Path(os.environ.get({_literal(INPUT_ROOT_VARIABLE)}) or "/kaggle/input")
WORKING = Path(os.environ.get({_literal(WORKING_DIR_VARIABLE)}) or "/kaggle/working")
SUBMISSION = WORKING / "submission.zip"
METRICS = {metrics}
if not METRICS.is_absolute():
    METRICS = WORKING / METRICS
"""


def _literal(value: object) -> str:
    """A Python literal for strings and lists of them, double-quoted like the rest of the code
    (JSON's escapes are Python's too)."""
    return json.dumps(value, ensure_ascii=False)


def _finder_source() -> str:
    source = resources.files("bundler.kaggle").joinpath("notebook_inputs.py")
    if not source.is_file():
        raise BundlerError("bundler/kaggle/notebook_inputs.py is missing from this kaggle-offline")
    return source.read_text(encoding="utf-8").rstrip() + "\n"


_LOCATE = """\
# Where Kaggle mounted each input (the search is in the cell above).
print(f"python {sys.version.split()[0]}; input root {INPUT_ROOT}")
BOOTSTRAP = wheelhouse_bootstrap(INPUT_ROOT, WHEELHOUSE)
COMPETITION_ROOT = competition_root(INPUT_ROOT, COMPETITION)
MODEL_PATHS = [model_path(INPUT_ROOT, kind, ref, inner) for kind, ref, inner in MODELS]
print(f"wheelhouse   {BOOTSTRAP.parent}")
print(f"competition  {COMPETITION_ROOT}")
for (_, ref, _), path in zip(MODELS, MODEL_PATHS):
    print(f"model        {path}  ({ref})")
"""

_INSTALL = """\
# Install what this kernel lacks, offline and hash-checked, then show what the kernel has.
install_started = time.perf_counter()
run(sys.executable, BOOTSTRAP, "--input-root", INPUT_ROOT, cwd=WORKING)
run(sys.executable, "-m", "runtime", "doctor", "--input-root", INPUT_ROOT, cwd=WORKING)
INSTALL_SECONDS = time.perf_counter() - install_started
"""

_PREDICT = """\
# Segment every test volume and write submission.zip (validated by predict after writing).
predict_started = time.perf_counter()
model_arguments = [argument for path in MODEL_PATHS for argument in ("--model", path)]
run(
    sys.executable, "-m", "runtime", "predict", COMPETITION_ROOT, *model_arguments,
    *PREDICT_OPTIONS, "-o", SUBMISSION, cwd=WORKING,
)
PREDICT_SECONDS = time.perf_counter() - predict_started
"""

_SUMMARY = """\
# Check submission.zip again, independently, against the test volumes on disk; then the timings.
import importlib
import json

importlib.invalidate_caches()  # the runtime was installed after this kernel started
from runtime.contract.errors import VolumeError
from runtime.volumes.inputs import find_volumes
from runtime.volumes.submission import validate_submission
from runtime.volumes.tiff import read_volume_header

expected = {}
for source in find_volumes(COMPETITION_ROOT).sources:
    try:
        expected[source.id] = read_volume_header(source.path).shape if source.path else None
    except VolumeError as error:
        print(f"note: {error}")
expected = {key: shape for key, shape in expected.items() if shape is not None}
problems = validate_submission(SUBMISSION, expected)
metrics = json.loads(METRICS.read_text(encoding="utf-8"))
for volume in metrics["volumes"]:
    shape = "x".join(map(str, volume.get("shape") or [])) or "?"
    print(f"{volume['id']:>12} {shape:>13} {volume['status']:>9}  infer {volume['infer_seconds']:.1f}s"
          f"  {volume.get('device') or ''} {volume.get('precision') or ''}")
if problems:
    raise RuntimeError(f"{SUBMISSION} is not a valid submission: " + "; ".join(problems))
print(f"{SUBMISSION}: valid, {len(expected)} masks, {SUBMISSION.stat().st_size} bytes, "
      f"sha256 {metrics['run'].get('submission_sha256', '?')[:12]}")
print(f"seconds: install {INSTALL_SECONDS:.1f}, predict {PREDICT_SECONDS:.1f}, "
      f"notebook {time.perf_counter() - STARTED:.1f}")
"""
