"""Rebuilding a wheelhouse that was uploaded before: the id it was made for, and what changed.

A build into a folder that holds an earlier build remembers that build's dataset id and title
(from its ``dataset-metadata.json``), so a rebuild without ``--dataset-id`` still goes to the
same dataset. Its next command is then ``kaggle datasets version`` (``create`` fails for an id
that exists), with a message that says which wheels were added, removed, upgraded or downgraded
since the previous build (from its ``manifest.json``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from bundler.kaggle import dataset
from runtime.contract.files import load_json
from runtime.contract.manifest import MANIFEST_FILENAME


@dataclass(frozen=True)
class PreviousBuild:
    """What an earlier build left in the folder."""

    dataset_id: str | None  # None: a placeholder id, which was never uploaded
    title: str | None
    wheels: dict[str, str] = field(default_factory=dict)  # name -> version
    hashes: dict[str, str] = field(default_factory=dict)  # name -> sha256 of its wheel
    licence: str | None = None


@dataclass(frozen=True)
class WheelChanges:
    added: list[str]  # "name==version"
    removed: list[str]
    upgraded: list[str]  # "name old -> new"
    downgraded: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.upgraded or self.downgraded)

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(items)}"
            for label, items in (
                ("added", self.added),
                ("removed", self.removed),
                ("upgraded", self.upgraded),
                ("downgraded", self.downgraded),
            )
            if items
        ]
        return "; ".join(parts) or "no wheel changed"


def previous_build(folder: Path | str) -> PreviousBuild | None:
    """The earlier build in ``folder``, or None (nothing there, or not a readable build)."""
    folder = Path(folder)
    try:
        manifest = load_json(folder / MANIFEST_FILENAME, kind="manifest", error=ValueError)
        metadata = load_json(folder / dataset.FILENAME, kind="dataset metadata", error=ValueError)
    except ValueError:  # not a readable build (load_json makes every way of that one error)
        return None
    if not isinstance(manifest, dict) or not isinstance(metadata, dict):
        return None
    wheels = {
        str(entry["name"]): str(entry["version"])
        for entry in manifest.get("wheels") or []
        if isinstance(entry, dict) and "name" in entry and "version" in entry
    }
    dataset_id = metadata.get("id")
    if not isinstance(dataset_id, str) or dataset.PLACEHOLDER_OWNER in dataset_id:
        dataset_id = None
    hashes = {
        str(entry["name"]): str(entry["sha256"])
        for entry in manifest.get("wheels") or []
        if isinstance(entry, dict) and "name" in entry and "sha256" in entry
    }
    title = metadata.get("title")
    licences = metadata.get("licenses")
    licence = None
    if isinstance(licences, list) and licences and isinstance(licences[0], dict):
        name = licences[0].get("name")
        licence = name if isinstance(name, str) else None
    return PreviousBuild(
        dataset_id, title if isinstance(title, str) else None, wheels, hashes, licence
    )


def wheel_changes(before: Mapping[str, str], after: Mapping[str, str]) -> WheelChanges:
    upgraded, downgraded = [], []
    for name in sorted(set(before) & set(after)):
        old, new = before[name], after[name]
        if old != new:
            (upgraded if _newer(new, old) else downgraded).append(f"{name} {old} -> {new}")
    return WheelChanges(
        added=[f"{n}=={after[n]}" for n in sorted(set(after) - set(before))],
        removed=[f"{n}=={before[n]}" for n in sorted(set(before) - set(after))],
        upgraded=upgraded,
        downgraded=downgraded,
    )


def upload_command(folder: Path, dataset_id: str, previous: PreviousBuild | None,
                   changes: WheelChanges | None, *, unchanged: bool = False) -> str:  # fmt: skip
    """``kaggle datasets create``, or ``version`` when the folder was built for this id before;
    nothing to upload when ``unchanged`` (the same wheels, byte for byte, and metadata)."""
    where = shlex.quote(str(folder))
    if previous is None or previous.dataset_id != dataset_id:
        return f"kaggle datasets create -p {where} --dir-mode zip"
    if unchanged:
        return (
            f"nothing to upload: {folder} holds the same wheels and metadata as its last build "
            f"(if that build never reached Kaggle: kaggle datasets create -p {where} --dir-mode zip)"
        )
    message = f"kaggle-offline rebuild: {changes.summary() if changes else 'no wheel changed'}"
    return f"kaggle datasets version -p {where} -m {shlex.quote(message)} --dir-mode zip"


def _newer(new: str, old: str) -> bool:
    try:
        return Version(new) > Version(old)
    except InvalidVersion:
        return new > old


def unchanged_since(
    previous: PreviousBuild | None, hashes: Mapping[str, str], title: str, licence: str
) -> bool:
    """Whether a build of wheels ``hashes`` (name -> sha256) changes nothing an upload carries."""
    return (
        previous is not None
        and previous.hashes == dict(hashes)
        and previous.title == title
        and previous.licence == licence
    )
