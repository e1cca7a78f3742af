"""The submission notebook: install from the wheelhouse, predict, validate; written with nbformat.

One markdown cell per step says what the step does and what to do when it fails; its code cells
stay short. 1: the settings (the only values that came from the command line). 2: the search for
the wheelhouse's ``bootstrap.py`` (copied verbatim from :mod:`bundler.kaggle.notebook_inputs`,
standard library, the one piece of logic that must live in the notebook since nothing is installed
yet), then the offline install. 3: the doctor. 4: locating the competition and each model
(:mod:`runtime.installer.mounts`, which the wheelhouse installed). 5: predict. 6: the independent
check of ``submission.zip`` (:mod:`runtime.volumes.submission_report`) and the timings. Every
code cell is plain Python (no ``!`` or ``%`` magics), so the same code runs in Jupyter and cell by
cell in a bare interpreter. No outputs, deterministic cell ids: generating twice gives the same
file.
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
    steps = [
        (_STEP_SETTINGS, [_settings(plan)]),
        (_STEP_INSTALL, [_finder_source(), _INSTALL]),
        (_STEP_DOCTOR, [_DOCTOR]),
        (_STEP_LOCATE, [_LOCATE]),
        (_STEP_PREDICT, [_PREDICT]),
        (_STEP_CHECK, [_CHECK]),
    ]
    cells = [nbformat.v4.new_markdown_cell(_introduction(plan))]
    for markdown, codes in steps:
        cells.append(nbformat.v4.new_markdown_cell(markdown))
        cells += [nbformat.v4.new_code_cell(code) for code in codes]
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
        "Run the cells in order (a pushed version runs them all): each step below says what it "
        "does and what to do when it fails. Inputs are found under `/kaggle/input` in both of "
        "Kaggle's mount layouts."
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
# Kaggle's folders; the variables move them, to try this notebook on another machine.
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


_STEP_SETTINGS = """\
## 1. Settings

The wheelhouse, the competition, the models and predict's options this notebook was generated
with. To change them, generate the notebook again with `python -m bundler kernel` (it checks them
as predict will) rather than editing this cell."""

_STEP_INSTALL = """\
## 2. Install from the wheelhouse, offline

Finds the wheelhouse dataset's `bootstrap.py` (the first cell: nothing of kaggle-offline is
installed yet, so this is the only search the notebook carries) and runs it: it checks every
wheel's sha256 against the wheelhouse's manifest and installs only what this kernel lacks,
kaggle-offline itself included, without the network.

**If it fails**: *not attached*: add the wheelhouse dataset as an input of the notebook (it is in
`kernel-metadata.json`). *built for another Python*: rebuild the wheelhouse with
`python -m bundler build ... --target` for this kernel (a profile captured with
`python -m runtime profile`). *sha256 ... does not match*: a wheel changed after the build;
rebuild and upload the wheelhouse again. Nothing is installed when it fails."""

_STEP_DOCTOR = """\
## 3. Check the kernel

`runtime doctor` lists the wheelhouses found, what is installed, what predict needs and the GPU.
It fails when something predict needs is missing.

**If it fails**: the lines marked as problems name the package and how to get it; a package the
image lacks goes into the wheelhouse (`python -m bundler build NAME`). A GPU that is not listed:
check the notebook's accelerator (predict runs on the CPU without one)."""

_STEP_LOCATE = """\
## 4. Find the competition and the models

Locates the competition's data and each model under `/kaggle/input`. A model that is not found
stops the notebook here, before anything is written: predict never falls back to another model.

**If it fails**: add the input it names (competition, model or dataset) to the notebook; a model's
version must be one that exists (`kaggle models instances versions list OWNER/MODEL/FRAMEWORK/
VARIATION`)."""

_STEP_PREDICT = """\
## 5. Predict

Segments every test volume and writes `/kaggle/working/submission.zip` (validated after writing)
and `metrics.json` beside it. The log says which device, precision and settings were chosen, and
why.

**If it fails**: the last lines name the cause. One volume's failure never costs the others (it
gets an empty mask and a logged error); out of GPU memory falls back step by step; a run that
would overrun `--time-budget` reduces test-time augmentation."""

_STEP_CHECK = """\
## 6. Check submission.zip

Reads `submission.zip` back against the test volumes on disk, prints one line per volume from
`metrics.json` and the timings of the notebook.

**If it fails**: it names each missing or malformed mask; `metrics.json` has each volume's error.
Do not submit a version whose check failed."""

_INSTALL = """\
install_started = time.perf_counter()
BOOTSTRAP = wheelhouse_bootstrap(INPUT_ROOT, WHEELHOUSE)
print(f"python {sys.version.split()[0]}; input root {INPUT_ROOT}")
print(f"wheelhouse   {BOOTSTRAP.parent}")
run(sys.executable, BOOTSTRAP, "--input-root", INPUT_ROOT, cwd=WORKING)
INSTALL_SECONDS = time.perf_counter() - install_started
"""

_DOCTOR = """\
run(sys.executable, "-m", "runtime", "doctor", "--input-root", INPUT_ROOT, cwd=WORKING)
"""

_LOCATE = """\
import importlib

importlib.invalidate_caches()  # kaggle-offline was installed after this kernel started
from runtime.installer.mounts import competition_root, model_path

COMPETITION_ROOT = competition_root(INPUT_ROOT, COMPETITION)
MODEL_PATHS = [model_path(INPUT_ROOT, kind, ref, inner) for kind, ref, inner in MODELS]
if not MODEL_PATHS:  # predict would run its demo model, which is not a real model
    raise RuntimeError("MODELS is empty: give the notebook a model (python -m bundler kernel)")
print(f"competition  {COMPETITION_ROOT}")
for (_, ref, _), path in zip(MODELS, MODEL_PATHS):
    print(f"model        {path}  ({ref})")
"""

_PREDICT = """\
predict_started = time.perf_counter()
model_arguments = [argument for path in MODEL_PATHS for argument in ("--model", path)]
run(
    sys.executable, "-m", "runtime", "predict", COMPETITION_ROOT, *model_arguments,
    *PREDICT_OPTIONS, "-o", SUBMISSION, cwd=WORKING,
)
PREDICT_SECONDS = time.perf_counter() - predict_started
"""

_CHECK = """\
from runtime.volumes.submission_report import submission_report

for line in submission_report(SUBMISSION, COMPETITION_ROOT, METRICS):
    print(line)
print(f"seconds: install {INSTALL_SECONDS:.1f}, predict {PREDICT_SECONDS:.1f}, "
      f"notebook {time.perf_counter() - STARTED:.1f}")
"""
