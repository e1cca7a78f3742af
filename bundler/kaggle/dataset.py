"""``dataset-metadata.json``: what ``kaggle datasets create -p DIR --dir-mode zip`` needs.

Kaggle's rules: a title of 6-50 characters, an ``owner/slug`` id with a slug of 6-50 characters
(what the kaggle CLI requires; the web page allows 3), exactly one licence, and at most 50 files
at the top level. Without ``--dataset-id`` the owner is
``$KAGGLE_USERNAME`` or the placeholder ``INSERT_OWNER``, which ``verify`` reports, so an upload
never fails half-way on a made-up account name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bundler.errors import BundlerError
from bundler.kaggle.refs import OWNER, SLUG, slugify

FILENAME = "dataset-metadata.json"
PLACEHOLDER_OWNER = "INSERT_OWNER"
MAX_TOP_LEVEL_FILES = 50
DEFAULT_LICENCE = "CC0-1.0"
# The names `kaggle datasets create` accepts (the kaggle CLI's docs/datasets_metadata.md).
LICENCES = (
    "CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0",
    "DbCL-1.0", "copyright-authors", "other", "unknown", "CC-BY-4.0", "CC-BY-NC-4.0", "PDDL",
    "CC-BY-3.0", "CC-BY-3.0-IGO", "US-Government-Works", "CC-BY-NC-SA-3.0-IGO",
    "CDLA-Permissive-1.0", "CDLA-Sharing-1.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "ODC-BY-1.0",
    "LGPL-3.0", "AGPL-3.0", "FDL-1.3", "EU-ODP-Legal-Notice", "apache-2.0", "GPL-3.0",
)  # fmt: skip


def default_slug(profile_name: str) -> str:
    return slugify(f"kaggle-offline-wheels-{profile_name}")[:50].rstrip("-")


def default_title(profile_name: str) -> str:
    title = f"kaggle-offline wheels {profile_name}"
    return title if len(title) <= 50 else title[:50].rstrip()


def dataset_metadata(
    profile_name: str,
    dataset_id: str | None,
    title: str | None,
    summary: str,
    licence: str = DEFAULT_LICENCE,
) -> dict[str, Any]:
    """The metadata for a wheelhouse; a bad ``dataset_id``, ``title`` or licence is refused here."""
    if dataset_id is None:
        owner = os.environ.get("KAGGLE_USERNAME") or PLACEHOLDER_OWNER
        dataset_id = f"{owner}/{default_slug(profile_name)}"
    data = {
        "title": title if title is not None else default_title(profile_name),
        "id": dataset_id,
        "licenses": [{"name": licence}],
        "subtitle": "Offline wheels for a Kaggle kernel, made by kaggle-offline",
        "description": summary,
        "keywords": ["python", "wheels", "offline"],
    }
    problems = [p for p in metadata_problems(data) if PLACEHOLDER_OWNER not in p]
    if problems:
        raise BundlerError(problems[0].removeprefix(f"{FILENAME}: "))
    return data


def check_id_and_title(
    profile_name: str, dataset_id: str | None, title: str | None, licence: str = DEFAULT_LICENCE
) -> None:
    """Refuse a bad ``dataset_id`` or ``title`` now, before a build spends time resolving.

    The same rules as :func:`dataset_metadata`, which needs the finished wheel list only for the
    description, a field with no rule to break.
    """
    dataset_metadata(profile_name, dataset_id, title, summary="", licence=licence)


def metadata_problems(data: Mapping[str, Any]) -> list[str]:
    """One line per rule of Kaggle's that ``data`` breaks."""
    problems: list[str] = []
    title = data.get("title")
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        problems.append(f"{FILENAME}: title {title!r} must be 6-50 characters (--title)")
    dataset_id = data.get("id")
    owner, _, slug = str(dataset_id).partition("/") if isinstance(dataset_id, str) else ("", "", "")
    if not owner or not OWNER.fullmatch(owner) or not slug:
        problems.append(
            f"{FILENAME}: id {dataset_id!r} must be OWNER/SLUG, e.g. alice/my-wheels (--dataset-id)"
        )
    elif owner == PLACEHOLDER_OWNER:
        problems.append(
            f"{FILENAME}: id {dataset_id!r} has the placeholder owner {PLACEHOLDER_OWNER}; "
            "rebuild with --dataset-id YOUR_USERNAME/SLUG or edit the file before uploading"
        )
    if slug and (not 6 <= len(slug) <= 50 or not SLUG.fullmatch(slug)):
        problems.append(
            f"{FILENAME}: slug {slug!r} must be 6-50 lower-case letters, digits and hyphens, as "
            "the kaggle CLI requires (--dataset-id)"
        )
    licences = data.get("licenses")
    if (
        not isinstance(licences, list)
        or len(licences) != 1
        or not isinstance(licences[0], dict)
        or "name" not in licences[0]
    ):
        problems.append(
            f"{FILENAME}: needs exactly one licence, e.g. [{{'name': '{DEFAULT_LICENCE}'}}]"
        )
    elif licences[0]["name"] not in LICENCES:
        problems.append(
            f"{FILENAME}: licence {licences[0]['name']!r} is not one Kaggle accepts (--license): "
            + ", ".join(LICENCES)
        )
    return problems


def top_level_problems(folder: Path) -> list[str]:
    count = sum(1 for path in folder.iterdir() if not path.name.startswith("."))
    if count > MAX_TOP_LEVEL_FILES:
        return [
            f"{folder}: {count} top-level entries; a Kaggle dataset allows at most "
            f"{MAX_TOP_LEVEL_FILES}: keep wheels in wheels/ and upload with --dir-mode zip"
        ]
    return []


def check_top_level_count(folder: Path, own_entries: frozenset[str]) -> None:
    """Refuse, before writing, a folder whose other files would take it past Kaggle's limit."""
    try:
        others = [
            path.name
            for path in folder.iterdir()
            if not path.name.startswith(".") and path.name not in own_entries
        ]
    except FileNotFoundError:
        return
    count = len(others) + len(own_entries)
    if count > MAX_TOP_LEVEL_FILES:
        raise BundlerError(
            f"{folder}: holds {len(others)} other top-level files, {count} with the wheelhouse's "
            f"own; a Kaggle dataset allows at most {MAX_TOP_LEVEL_FILES}: build into an empty "
            "folder (-o NEW_DIR)"
        )
