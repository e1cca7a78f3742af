"""``write_kernel()``: the folder for ``kaggle kernels push -p DIR``, a notebook and its metadata.

``kernel-metadata.json`` is written with every field explicit, because the kaggle CLI's own code
defaults what is left out in ways a code-competition submission cannot afford
(``enable_internet`` defaults to *true* in ``kernels_push``). Everything is checked before
anything is written: the references as the CLI checks them (:mod:`bundler.kaggle.refs`), the
predict options by predict's own argument definitions, the finished metadata by
:func:`metadata_problems` (the CLI's rules and ours) and the notebook by nbformat's schema.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from bundler.errors import BundlerError
from bundler.kaggle import refs
from bundler.kaggle.notebook import NotebookModel, NotebookPlan, make_notebook, notebook_text
from runtime.contract.files import load_json, write_json_atomically, write_text_atomically

METADATA_FILENAME = "kernel-metadata.json"
PINNING_TYPES = ("original", "latest")
_BOOLEAN_FIELDS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
_LIST_FIELDS = (
    "dataset_sources", "competition_sources", "kernel_sources", "model_sources", "keywords",
)  # fmt: skip


@dataclass(frozen=True)
class KernelRequest:
    """What ``python -m bundler kernel`` was asked for, before any check."""

    kernel_id: str
    title: str
    wheelhouse: str  # owner/dataset
    competition: str
    models: Sequence[tuple[str, str]]  # ("model", "o/m/f/v/N") or ("dataset", "o/d[/path]")
    predict_options: Sequence[str] = ()
    accelerator: str | None = refs.DEFAULT_ACCELERATOR  # None: no GPU
    private: bool = True
    docker_image_pinning: str = "original"


@dataclass(frozen=True)
class KernelFolder:
    folder: Path
    metadata: dict[str, Any]
    notebook: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def push_command(self) -> str:
        return f"kaggle kernels push -p {shlex.quote(str(self.folder))}"


def write_kernel(folder: Path, request: KernelRequest, *, command: str = "") -> KernelFolder:
    """Check ``request`` completely, then write the notebook and ``kernel-metadata.json``."""
    folder = Path(folder)
    kernel = refs.kernel_id(request.kernel_id)
    warnings = refs.kernel_title(request.title, kernel)
    wheelhouse = refs.owned_slug(request.wheelhouse, "--wheelhouse", "wheelhouse dataset")
    competition = refs.competition_slug(request.competition)
    models = [_model(kind, text) for kind, text in request.models]
    if not models:
        raise BundlerError(
            "give the model(s) to predict with: --model-source OWNER/MODEL/FRAMEWORK/VARIATION/"
            "VERSION or --model-dataset OWNER/DATASET[/PATH] (repeat either for an ensemble)"
        )
    parsed = parse_predict_options(request.predict_options)
    _resolve_predict_options(parsed, models)
    gpu = refs.accelerator(request.accelerator) if request.accelerator else None
    if request.docker_image_pinning not in PINNING_TYPES:
        raise BundlerError(
            f"--docker-image-pinning {request.docker_image_pinning!r}: use "
            + " or ".join(PINNING_TYPES)
        )

    code_file = f"{kernel.slug}.ipynb"
    datasets = [str(wheelhouse)] + [
        str(m.dataset) for m in models if isinstance(m, refs.DatasetPath)
    ]
    metadata = {
        "id": str(kernel),
        "title": request.title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": request.private,
        "enable_gpu": gpu is not None,
        "enable_tpu": False,
        # The CLI sends True when this is missing; a code-competition submission must be offline.
        "enable_internet": False,
        "machine_shape": gpu or "",
        "dataset_sources": list(dict.fromkeys(datasets)),
        "competition_sources": [competition],
        "kernel_sources": [],
        "model_sources": list(dict.fromkeys(
            str(m) for m in models if isinstance(m, refs.ModelInstanceVersion))),
        "keywords": [],
        "docker_image_pinning_type": request.docker_image_pinning,
    }  # fmt: skip
    problems = metadata_problems(metadata)
    if problems:  # a bug of ours, since every value was checked above; never write it
        raise BundlerError(problems[0])
    notebook = make_notebook(
        NotebookPlan(
            title=request.title,
            wheelhouse=str(wheelhouse),
            competition=competition,
            models=[_notebook_model(m) for m in models],
            predict_options=list(request.predict_options),
            metrics=str(parsed.metrics) if parsed.metrics else None,
            command=command,
        )
    )

    previous = _previous_code_file(folder)
    write_text_atomically(folder / code_file, notebook_text(notebook))
    write_json_atomically(folder / METADATA_FILENAME, metadata)
    if previous and previous != code_file:  # the id changed: the old notebook is not pushed
        (folder / previous).unlink(missing_ok=True)
    return KernelFolder(folder, metadata, folder / code_file, warnings)


def parse_predict_options(options: Sequence[str]) -> argparse.Namespace:
    """``options`` parsed by predict's own argument definitions; a bad one is a BundlerError."""
    from runtime.commands.predict import add_predict_options

    parser = _RaisingParser(prog="predict options", add_help=False)
    add_predict_options(parser, model_option=False)
    return parser.parse_args(list(options))


def metadata_problems(data: dict[str, Any]) -> list[str]:
    """One line per rule of ``kaggle kernels push`` (and of an offline submission) broken."""
    problems: list[str] = []
    where = METADATA_FILENAME
    try:
        refs.kernel_id(str(data.get("id", "")))
    except BundlerError as error:
        problems.append(f"{where}: {error}")
    title = data.get("title")
    if not isinstance(title, str) or len(title.strip()) < refs.MIN_KERNEL_TITLE:
        problems.append(f"{where}: title {title!r} needs at least 5 characters")
    if not isinstance(data.get("code_file"), str) or not data["code_file"]:
        problems.append(f"{where}: code_file must name the notebook")
    if data.get("language") != "python" or data.get("kernel_type") != "notebook":
        problems.append(f"{where}: language must be python and kernel_type notebook")
    for name in _BOOLEAN_FIELDS:
        if not isinstance(data.get(name), bool):
            problems.append(f"{where}: {name} must be written as a JSON boolean")
    if data.get("enable_internet") is not False:
        problems.append(f"{where}: enable_internet must be false for a code-competition submission")
    for name in _LIST_FIELDS:
        value = data.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}: {name} must be a list of strings")
    checks = (
        ("dataset_sources", lambda s: refs.owned_slug(s, "dataset source", "dataset")),
        ("competition_sources", refs.competition_slug),
        ("model_sources", refs.model_instance_version),
    )
    for name, check in checks:
        for source in data.get(name) or []:
            try:
                check(str(source))
            except BundlerError as error:
                problems.append(f"{where}: {name}: {error}")
    shape = data.get("machine_shape")
    if shape != "":
        try:
            refs.accelerator(str(shape))
        except BundlerError as error:
            problems.append(f"{where}: machine_shape: {error}")
    if bool(shape) != (data.get("enable_gpu") is True):
        problems.append(f"{where}: enable_gpu must be true exactly when machine_shape names a GPU")
    if data.get("docker_image_pinning_type") not in PINNING_TYPES:
        problems.append(f"{where}: docker_image_pinning_type must be original or latest")
    return problems


def _model(kind: str, text: str) -> refs.ModelInstanceVersion | refs.DatasetPath:
    if kind == "model":
        return refs.model_instance_version(text)
    if kind == "dataset":
        return refs.dataset_path(text)
    raise BundlerError(f"unknown model kind {kind!r}")


def _notebook_model(
    model: refs.ModelInstanceVersion | refs.DatasetPath,
) -> NotebookModel:
    if isinstance(model, refs.ModelInstanceVersion):
        return NotebookModel("model", str(model))
    return NotebookModel("dataset", str(model.dataset), model.path)


def _previous_code_file(folder: Path) -> str | None:
    try:
        data = load_json(folder / METADATA_FILENAME, kind="kernel metadata", error=ValueError)
    except ValueError:  # none there, or unreadable (load_json makes every way of that one error)
        return None
    code_file = data.get("code_file") if isinstance(data, dict) else None
    # Only a bare file name of ours is ever removed, never a path elsewhere.
    if isinstance(code_file, str) and code_file.endswith(".ipynb") and "/" not in code_file:
        return code_file
    return None


def _resolve_predict_options(parsed: argparse.Namespace, models: Sequence[object]) -> None:
    """The run's settings resolved as predict will resolve them (the models' formats are known
    only in the kernel, where predict checks those rules): a refusal here is a BundlerError."""
    from runtime.commands.predict import request_from_args
    from runtime.contract.errors import InputError
    from runtime.contract.settings import resolve

    try:
        resolve(request_from_args(parsed, models=[str(model) for model in models]))
    except InputError as error:
        raise BundlerError(f"predict options: {error}") from None


class _RaisingParser(argparse.ArgumentParser):
    """argparse's checks, with the message raised as one line instead of printed with usage."""

    def error(self, message: str) -> NoReturn:
        raise BundlerError(f"predict option: {message}")
