"""``prepare_model()``: a model checked on the CPU, then a folder for a Kaggle model or dataset upload.

The model is loaded with :func:`runtime.pipeline.models.load_model`, the loader ``--model``
uses in the kernel (every format it accepts, with no special case here), and one window of the
shape the engine will use is segmented on the CPU through the engine itself. Only then is the
folder written, so a model that cannot load or run is refused before anything is uploaded.

The check runs on the staged copy, not on the original: a config that names a file outside its
folder would load here and fail on Kaggle, and is refused instead. The folder holds the model's
files and the metadata of the upload: ``model-instance-metadata.json`` (plus the
``model-metadata.json`` that ``kaggle models create`` needs, kept if already there) for
``kaggle models instances create -p DIR --dir-mode zip``, or ``dataset-metadata.json`` for
``kaggle datasets create``. The CLI never uploads its metadata files, so the mounted model holds
exactly the model's files.
"""

from __future__ import annotations

import filecmp
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bundler.errors import BundlerError
from bundler.kaggle import dataset, refs
from runtime.contract.errors import KaggleOfflineError, first_line
from runtime.contract.files import load_json, write_json_atomically

INSTANCE_METADATA = "model-instance-metadata.json"
MODEL_METADATA = "model-metadata.json"
# Files the kaggle CLI never uploads from a folder, and that are never copied from a model.
METADATA_FILES = frozenset(
    {
        INSTANCE_METADATA,
        MODEL_METADATA,
        dataset.FILENAME,
        "datapackage.json",
        "kernel-metadata.json",
    }
)
DATASET_SUBTITLE = "A segmentation model checked by kaggle-offline"  # marks a folder as ours
# The licences Kaggle models accept (kaggle-cli docs/models_metadata.md).
MODEL_LICENCES = (
    "Apache 2.0", "Attribution 3.0 IGO (CC BY 3.0 IGO)", "Attribution 3.0 Unported (CC BY 3.0)",
    "Attribution 4.0 International (CC BY 4.0)",
    "Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)",
    "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)",
    "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
    "Attribution-NonCommercial-ShareAlike 3.0 IGO (CC BY-NC-SA 3.0 IGO)", "BSD-3-Clause",
    "CC BY-NC-SA 4.0", "CC BY-SA 3.0", "CC BY-SA 4.0", "CC0: Public Domain",
    "Community Data License Agreement - Permissive - Version 1.0",
    "Community Data License Agreement - Sharing - Version 1.0",
    "GNU Affero General Public License 3.0", "GNU Free Documentation License 1.3",
    "GNU Lesser General Public License 3.0", "GPL 2", "MIT", "ODC Attribution License (ODC-By)",
    "ODC Public Domain Dedication and Licence (PDDL)", "GPL 3",
)  # fmt: skip
_SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".ipynb_checkpoints"})


# The command README.md's step 4 shows, kept equal by tests/test_model_upload.py.
MODEL_CHECK_INSTALL = "python -m pip install numpy torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class ModelCheck:
    """What the CPU check saw: the model loads and segments one window of this shape."""

    name: str
    window: tuple[int, int, int]
    seconds: float
    foreground_fraction: float


@dataclass(frozen=True)
class ModelUpload:
    folder: Path
    check: ModelCheck
    files: list[str]
    size: int
    kernel_option: str  # "--model-source ..." or "--model-dataset ..."
    commands: list[str]  # the upload, in order
    notes: list[str] = field(default_factory=list)
    update: bool = False  # the folder held an earlier upload of the same id
    unchanged: bool = False  # ... with the very same files: there is nothing to upload


def check_model(
    path: Path | str, log: Callable[[str], None] | None = None, *, shown: Path | None = None
) -> ModelCheck:
    """Load ``path`` as ``--model`` would and segment one window on the CPU; BundlerError if not.

    ``shown`` names the model in messages instead of ``path`` (a staged copy of it).
    """
    try:
        import numpy as np

        from runtime.inference.engine import InferenceOptions, Segmenter
        from runtime.pipeline.models import load_model
    except ImportError as error:
        raise BundlerError(
            f"checking a model runs it, so it needs torch and numpy here ({error}); install "
            f"them (the CPU build of torch is enough): {MODEL_CHECK_INSTALL}"
        ) from None
    say = log or (lambda line: None)
    label = shown or Path(path)

    def refuse(message: str) -> BundlerError:
        return BundlerError("refused: " + message.replace(str(path), str(label)))

    started = time.perf_counter()
    try:
        model = load_model(path)
    except KaggleOfflineError as error:
        raise refuse(str(error)) from None
    except Exception as error:  # a loader bug must still refuse, in one line
        raise refuse(f"{path} does not load ({first_line(error)})") from None
    options = InferenceOptions(device="cpu", amp="off", compile=False, batch_size=1)
    try:
        # The engine's own warm-up forward runs the model at the window shape it will use.
        segmenter = Segmenter(model, options, log=say)
    except Exception as error:
        raise refuse(
            f"{path} loads but fails the engine's warm-up on the CPU: {first_line(error)}"
        ) from None
    window = tuple(int(d) for d in segmenter.patch_size)
    try:
        volume = np.random.default_rng(0).integers(0, 256, size=window, dtype=np.uint8)
        result = segmenter.segment(volume)
    except Exception as error:
        raise refuse(
            f"{path} loads but fails on one {_shape(window)} window on the CPU: {first_line(error)}"
        ) from None
    if tuple(result.mask.shape) != window:
        raise refuse(
            f"{path} returned a mask of shape {tuple(result.mask.shape)} for a {_shape(window)} window"
        )
    return ModelCheck(
        name=str(getattr(model, "name", Path(path).name)),
        window=(window[0], window[1], window[2]),
        seconds=time.perf_counter() - started,
        foreground_fraction=float(result.foreground_fraction),
    )


def prepare_model(
    path: Path | str,
    output: Path | str,
    *,
    model_id: str,
    framework: str = "pyTorch",
    variation: str = "default",
    as_dataset: bool = False,
    title: str | None = None,
    licence: str = "Apache 2.0",
    log: Callable[[str], None] | None = None,
) -> ModelUpload:
    """Check the model at ``path`` and write the upload folder ``output``; nothing on failure."""
    source = _source(Path(path))
    output = Path(output)
    in_place = source.is_dir() and output.resolve() == source.resolve()
    if as_dataset:
        owned = refs.owned_slug(model_id, "--id", "dataset")
        metadata = _dataset_metadata(owned, title)
        problems = dataset.metadata_problems(metadata)  # before the (slower) model check
        if problems:
            raise BundlerError(problems[0].removeprefix(f"{dataset.FILENAME}: "))
    else:
        owned = refs.owned_slug(model_id, "--id", "model", min_slug=1)
        framework = refs.model_framework(framework)
        variation = refs.variation_slug(variation)
        if licence not in MODEL_LICENCES:
            raise BundlerError(f"--license {licence!r}: use one of {', '.join(MODEL_LICENCES)}")
    previous = _previous_upload(output)
    if not in_place:
        _check_output(source, output, previous)

    if in_place:
        check = check_model(source, log)
        staged = source
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=_parent(output)))
        try:
            staged = staging / "model"
            _copy_model(source, staged)
            check = check_model(
                staged / source.name if source.is_file() else staged, log, shown=source
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    try:
        if as_dataset:
            problems = dataset.top_level_problems(staged)
            if problems:
                raise BundlerError(problems[0])
            write_json_atomically(staged / dataset.FILENAME, metadata)
            update = previous is not None and previous.get("id") == str(owned)
        else:
            instance = _instance_metadata(owned, framework, variation, licence, check)
            write_json_atomically(staged / INSTANCE_METADATA, instance)
            kept = output / MODEL_METADATA
            if not in_place and _card_of(kept, owned):
                shutil.copy2(kept, staged / MODEL_METADATA)  # the user's model card survives
            elif not _card_of(staged / MODEL_METADATA, owned):
                write_json_atomically(staged / MODEL_METADATA, _model_metadata(owned, title))
            update = previous is not None and all(
                previous.get(key) == instance[key]
                for key in ("ownerSlug", "modelSlug", "instanceSlug", "framework")
            )
        unchanged = update and not in_place and _same_files(output, staged)
        if not in_place:
            _replace(output, staged)
    finally:
        if not in_place:
            shutil.rmtree(staging, ignore_errors=True)

    files = sorted(
        p.relative_to(output).as_posix()
        for p in output.rglob("*")
        if p.is_file() and p.name not in METADATA_FILES
    )
    size = sum((output / name).stat().st_size for name in files)
    folder = shlex.quote(str(output))
    notes: list[str] = []
    if as_dataset:
        inner = f"/{source.name}" if source.is_file() else ""
        option = f"--model-dataset {owned}{inner}"
        commands = [
            f"kaggle datasets version -p {folder} -m {shlex.quote(_notes(check))} --dir-mode zip"
            if update
            else f"kaggle datasets create -p {folder} --dir-mode zip"
        ]
    else:
        instance_ref = f"{owned}/{framework}/{variation}"
        if update:
            commands = [
                f"kaggle models instances versions create {instance_ref} -p {folder} "
                f"-n {shlex.quote(_notes(check))} --dir-mode zip"
            ]
            option = f"--model-source {instance_ref}/VERSION"
            notes.append(
                "VERSION: the number Kaggle gives this new version (kaggle models instances "
                f"versions list {instance_ref})"
            )
        else:
            commands = [
                f"kaggle models create -p {folder}",
                f"kaggle models instances create -p {folder} --dir-mode zip",
            ]
            option = f"--model-source {instance_ref}/1"
            notes.append(f"skip `kaggle models create` if the model {owned} exists already")
    return ModelUpload(output, check, files, size, option, commands, notes, update, unchanged)


def _same_files(one: Path, other: Path) -> bool:
    """Whether two folders hold the same files with the same bytes."""

    def listing(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    names = listing(one)
    return names == listing(other) and all(
        filecmp.cmp(one / name, other / name, shallow=False) for name in names
    )


def _source(path: Path) -> Path:
    if not path.exists():
        raise BundlerError(f"{path}: no such model file or folder")
    if path.is_file() and path.name == "config.json":
        return path.parent  # the folder is the model: config.json names its files relatively
    return path


def _parent(output: Path) -> Path:
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _check_output(source: Path, output: Path, previous: dict[str, object] | None) -> None:
    resolved, origin = output.resolve(), source.resolve()
    if origin.is_dir() and origin in resolved.parents:
        raise BundlerError(f"-o {output}: must not be inside the model folder {source}")
    if resolved in origin.parents:
        raise BundlerError(f"-o {output}: must not hold the model {source} (it is replaced)")
    if output.is_file():
        raise BundlerError(f"-o {output}: is a file; give a folder for the upload")
    if output.is_dir() and any(output.iterdir()) and previous is None:
        raise BundlerError(
            f"-o {output}: not empty and not a model folder made by kaggle-offline; give a new "
            "folder (its whole content would be uploaded)"
        )


def _previous_upload(output: Path) -> dict[str, object] | None:
    """The metadata of an earlier upload folder made here (model instance or our dataset)."""
    for name in (INSTANCE_METADATA, dataset.FILENAME):
        try:
            data = load_json(output / name, kind="upload metadata", error=ValueError)
        except ValueError:  # none there, or unreadable: load_json makes every way one error
            continue
        if not isinstance(data, dict):
            continue
        if name == INSTANCE_METADATA or data.get("subtitle") == DATASET_SUBTITLE:
            return data
    return None


def _card_of(path: Path, owned: refs.OwnedSlug) -> bool:
    """``path`` is a model-metadata.json for this very model (not for another id)."""
    try:
        data = load_json(path, kind="model metadata", error=ValueError)
    except ValueError:
        return False
    return isinstance(data, dict) and (data.get("ownerSlug"), data.get("slug")) == (
        owned.owner,
        owned.slug,
    )


def _copy_model(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    if source.is_file():
        shutil.copy2(source, target / source.name)
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part in _SKIPPED_NAMES or part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(source.resolve()):
            raise BundlerError(f"{path}: a link to outside the model folder; copy the file in")
        if path.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        elif path.name not in METADATA_FILES and path.suffix != ".pyc":
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)


def _replace(output: Path, staged: Path) -> None:
    """Put ``staged`` in place of ``output``: an earlier upload folder goes only once it is ready."""
    if output.exists():
        old = output.with_name(f".{output.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        output.rename(old)
        staged.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(output)


def _instance_metadata(
    owned: refs.OwnedSlug, framework: str, variation: str, licence: str, check: ModelCheck
) -> dict[str, object]:
    return {
        "ownerSlug": owned.owner,
        "modelSlug": owned.slug,
        "instanceSlug": variation,
        "framework": framework,
        "overview": _notes(check),
        "usage": (
            "# Model Usage\n\nIn an offline notebook with a kaggle-offline wheelhouse attached:\n\n"
            "```\npython -m runtime predict /kaggle/input/competitions/COMPETITION "
            "--model ${PATH} -o /kaggle/working/submission.zip\n```\n\n"
            "or generate the whole notebook with `python -m bundler kernel ... --model-source "
            f"{owned}/{framework}/{variation}/${{VERSION_NUMBER}}`.\n"
        ),
        "licenseName": licence,
        "fineTunable": False,
        "trainingData": [],
        "modelInstanceType": "Unspecified",
        "baseModelInstance": "",
        "externalBaseModelUrl": "",
    }


def _model_metadata(owned: refs.OwnedSlug, title: str | None) -> dict[str, object]:
    return {
        "ownerSlug": owned.owner,
        "title": title or owned.slug,
        "slug": owned.slug,
        "subtitle": "",
        "isPrivate": True,
        "description": "# Model Summary\n\nA 3D segmentation model for kaggle-offline's runtime.\n",
        "publishTime": "",
        "provenanceSources": "",
    }


def _dataset_metadata(owned: refs.OwnedSlug, title: str | None) -> dict[str, object]:
    return {
        "title": title or f"{owned.slug} model"[:50],
        "id": str(owned),
        "licenses": [{"name": "CC0-1.0"}],
        "subtitle": DATASET_SUBTITLE,
        "keywords": ["model"],
    }


def _notes(check: ModelCheck) -> str:
    return f"{check.name}, checked by kaggle-offline on a {_shape(check.window)} window"


def _shape(window: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in window)
