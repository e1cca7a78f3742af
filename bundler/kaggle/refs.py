"""Kaggle's references (kernel ids, dataset, model and competition sources), checked as the CLI does.

The rules are those of the kaggle CLI's own code (``kaggle_api_extended.py``: ``kernels_push``,
``validate_kernel_string``, ``validate_dataset_string``, ``validate_model_instance_version_string``)
plus the slug alphabet Kaggle's URLs use. Each check raises :class:`BundlerError` with one line
naming the option, the value and the expected form, so nothing is written for a reference that
``kaggle kernels push`` or the upload would refuse (or, worse, silently drop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from bundler.errors import BundlerError

# Kaggle's alphabets, shared with bundler.kaggle.dataset: an owner name, and a slug as URLs spell it.
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MIN_KERNEL_SLUG = 5  # validate_kernel_string: "Kernel slug must be at least five characters"
MIN_KERNEL_TITLE = 5  # kernels_push: "Title must be at least five characters"

# The GPUs of `kaggle kernels push --accelerator` (kaggle-cli docs/kernels.md, Sep 2026). Some are
# open only to some competitions or to Kaggle staff; the server decides, not the client.
GPU_ACCELERATORS = (
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "NvidiaL4",
    "NvidiaL4X1",
    "NvidiaTeslaA100",
    "NvidiaH100",
    "NvidiaRtxPro6000",
)
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"
# Shapes the CLI warns about because the server swaps them (kaggle-cli's retired-accelerator test).
RETIRED_ACCELERATORS = {
    "NvidiaTeslaP100": "NvidiaTeslaT4",
    "TpuV38": "TpuV5E8",
    "Tpu1VmV38": "TpuV5E8",
    "TpuV232": "CPU",
    "TpuV2256": "CPU",
}
TPU_ACCELERATORS = ("TpuV5E8", "TpuV6E8")

# `framework` of model-instance-metadata.json: the runtime runs PyTorch programs and state dicts
# only, so these two are the ones that make sense (the CLI's enum lookup accepts either case).
MODEL_FRAMEWORKS = {"pytorch": "pyTorch", "other": "other"}


@dataclass(frozen=True)
class OwnedSlug:
    """``owner/slug``: a kernel, a dataset or a model."""

    owner: str
    slug: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.slug}"


@dataclass(frozen=True)
class ModelInstanceVersion:
    """``owner/model/framework/variation/version``, what ``model_sources`` holds."""

    owner: str
    model: str
    framework: str
    variation: str
    version: int

    def __str__(self) -> str:
        return f"{self.owner}/{self.model}/{self.framework}/{self.variation}/{self.version}"


@dataclass(frozen=True)
class DatasetPath:
    """``owner/dataset[/path]``: a dataset, and optionally a folder or file inside it."""

    dataset: OwnedSlug
    path: str = ""

    def __str__(self) -> str:
        return f"{self.dataset}/{self.path}" if self.path else str(self.dataset)


# https://www.kaggle.com/competitions/<slug>/..., /c/<slug>, /datasets/<owner>/<slug>,
# /models/<owner>/<model>/<framework>/<variation>/<version>, /code/<owner>/<slug>
_KAGGLE_URL = re.compile(r"(?:https?://)?(?:www\.)?kaggle\.com/([A-Za-z]+)/?([^?#]*)", re.I)


def _refuse_url(text: str, option: str) -> None:
    """A Kaggle page's URL where a reference belongs: say which reference to give instead."""
    match = _KAGGLE_URL.match(text.strip())
    if not match:
        return
    section, parts = match.group(1).lower(), [p for p in match.group(2).split("/") if p]
    take = {"c": 1, "competitions": 1, "datasets": 2, "code": 2, "models": 5}.get(section, 0)
    if option == "--model-dataset":
        take = 2
    reference = "/".join(parts[:take]) if take and len(parts) >= take else ""
    instead = f": {option} {reference}" if reference else ""
    what = "slug" if section in ("c", "competitions") else "reference"
    raise BundlerError(
        f"{option} {text!r} is a URL: give the {what}, not the page's address{instead}"
    )


def owned_slug(text: str, option: str, what: str, *, min_slug: int = 3) -> OwnedSlug:
    """``owner/slug`` with a lower-case slug of ``min_slug``-50 characters."""
    _refuse_url(text, option)
    owner, _, slug = text.partition("/")
    if not owner or not slug or "/" in slug or not OWNER.fullmatch(owner):
        raise BundlerError(f"{option} {text!r}: give OWNER/SLUG, the {what}'s id")
    _check_slug(slug, option, text, min_length=min_slug)
    return OwnedSlug(owner, slug)


def kernel_id(text: str) -> OwnedSlug:
    """A kernel's ``id``: ``owner/slug``, no version (kernels_push refuses one)."""
    if text.count("/") > 1:
        raise BundlerError(f"--id {text!r}: a kernel id is OWNER/SLUG and cannot name a version")
    return owned_slug(text, "--id", "notebook", min_slug=MIN_KERNEL_SLUG)


def kernel_title(title: str, kernel: OwnedSlug) -> list[str]:
    """Check a kernel title; returns warnings (the CLI's own: a title that is not the slug)."""
    if len(title.strip()) < MIN_KERNEL_TITLE:
        raise BundlerError(
            f"--title {title!r}: a notebook title needs at least {MIN_KERNEL_TITLE} characters"
        )
    if slugify(title) != kernel.slug:
        # kaggle kernels push prints the same warning: Kaggle derives a new kernel's URL from
        # its title, so a title that does not slugify to the id makes the id point elsewhere.
        return [
            f"the title {title!r} makes the slug {slugify(title)!r}, not {kernel.slug!r}: Kaggle "
            f"derives a new notebook's URL from its title (use --title matching --id {kernel})"
        ]
    return []


def competition_slug(text: str) -> str:
    _refuse_url(text, "--competition")
    _check_slug(text, "--competition", text, min_length=3)
    return text


def model_instance_version(text: str) -> ModelInstanceVersion:
    """``owner/model/framework/variation/version`` with an integer version, as model_sources needs."""
    _refuse_url(text, "--model-source")
    parts = text.split("/")
    form = "OWNER/MODEL/FRAMEWORK/VARIATION/VERSION, e.g. alice/vesuvius-unet/pyTorch/default/1"
    if len(parts) != 5 or not all(parts):
        raise BundlerError(f"--model-source {text!r}: give {form}")
    owner, model, framework, variation, version = parts
    if not OWNER.fullmatch(owner):
        raise BundlerError(f"--model-source {text!r}: {owner!r} is not a Kaggle user name")
    _check_slug(model, "--model-source", text, min_length=1)
    _check_slug(variation, "--model-source", text, min_length=1)
    if not version.isdigit() or int(version) < 1:
        raise BundlerError(
            f"--model-source {text!r}: the version must be a whole number from 1 ({form})"
        )
    return ModelInstanceVersion(owner, model, model_framework(framework), variation, int(version))


def dataset_path(text: str) -> DatasetPath:
    """``owner/dataset[/path]``; the path must stay inside the dataset."""
    _refuse_url(text, "--model-dataset")
    owner, _, rest = text.partition("/")
    slug, _, inner = rest.partition("/")
    dataset = owned_slug(f"{owner}/{slug}", "--model-dataset", "dataset")
    inner = inner.strip("/")
    if inner:
        pure = PurePosixPath(inner)
        if pure.is_absolute() or any(part in ("", ".", "..") for part in pure.parts):
            raise BundlerError(
                f"--model-dataset {text!r}: the path inside the dataset must be relative and "
                "stay inside it (no '..')"
            )
    return DatasetPath(dataset, inner)


def model_framework(text: str) -> str:
    try:
        return MODEL_FRAMEWORKS[text.lower()]
    except KeyError:
        raise BundlerError(
            f"framework {text!r}: kaggle-offline runs PyTorch models; use pyTorch (or other)"
        ) from None


def variation_slug(text: str) -> str:
    _check_slug(text, "--variation", text, min_length=1)
    return text


def accelerator(text: str) -> str:
    """A GPU id that ``kaggle kernels push --accelerator`` knows and that can run this runtime."""
    if text in GPU_ACCELERATORS:
        return text
    if text in RETIRED_ACCELERATORS:
        raise BundlerError(
            f"--accelerator {text}: retired, Kaggle runs {RETIRED_ACCELERATORS[text]} instead"
            + (" (and the image's cu128 torch has no P100 kernels)" if "P100" in text else "")
            + f"; choose one of {', '.join(GPU_ACCELERATORS)}"
        )
    if text in TPU_ACCELERATORS:
        raise BundlerError(
            f"--accelerator {text}: a TPU cannot run this PyTorch CUDA pipeline; choose a GPU "
            f"({', '.join(GPU_ACCELERATORS)}) or --cpu"
        )
    same = [known for known in GPU_ACCELERATORS if known.lower() == text.lower()]
    hint = f"did you mean {same[0]}? " if same else ""
    raise BundlerError(
        f"--accelerator {text!r}: unknown accelerator id; {hint}known GPUs: "
        f"{', '.join(GPU_ACCELERATORS)}"
    )


def slugify(text: str) -> str:
    """A title as Kaggle turns it into a URL slug: lower case, runs of other characters -> '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _check_slug(slug: str, option: str, text: str, *, min_length: int) -> None:
    if not min_length <= len(slug) <= 50 or not SLUG.fullmatch(slug):
        raise BundlerError(
            f"{option} {text!r}: {slug!r} must be {min_length}-50 lower-case letters, digits and "
            "hyphens"
        )
