"""The wheelhouse manifest: the contract between the bundler (writes it) and the runtime (reads it).

A wheelhouse folder holds ``manifest.json``, ``requirements.lock``, ``bootstrap.py``,
``dataset-metadata.json`` and ``wheels/*.whl``. The manifest pins every wheel by sha256 and says
why it is there, so the kernel can install exactly what is missing and refuse anything tampered.
Standard library only: it is read in a kernel where nothing of ours is installed yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import ManifestError, ProfileError
from runtime.contract.files import check_document_format, write_json_atomically
from runtime.contract.profile import TargetProfile, canonical_name

MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT = "kaggle-offline-wheelhouse"
MANIFEST_FORMAT_VERSION = 1
WHEEL_DIRNAME = "wheels"


@dataclass(frozen=True)
class WheelEntry:
    """One vendored wheel and the reason it is in the wheelhouse."""

    name: str  # canonical project name
    version: str
    filename: str
    sha256: str
    size: int
    requested: bool  # named by the user (directly), rather than pulled in transitively
    optional: bool = False  # its absence or failure is a warning, not an error (e.g. imagecodecs)
    # The kernel already satisfies this wheel when an installed version matches `specifier`
    # (the combined specifier of everything that requires it; "" means any version).
    specifier: str = ""
    # A directly requested upgrade of a preinstalled distribution: the only case in which the
    # runtime may replace a version that the kernel image shipped.
    upgrade_of: str | None = None
    requires_python: str = ""
    requires_dist: tuple[str, ...] = ()  # the wheel's own Requires-Dist, for closure checks
    tags: tuple[str, ...] = ()  # the wheel filename's expanded tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "requested": self.requested,
            "optional": self.optional,
            "specifier": self.specifier,
            "upgrade_of": self.upgrade_of,
            "requires_python": self.requires_python,
            "requires_dist": list(self.requires_dist),
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WheelEntry:
        return cls(
            name=canonical_name(str(data["name"])),
            version=str(data["version"]),
            filename=str(data["filename"]),
            sha256=str(data["sha256"]).lower(),
            size=int(data["size"]),
            requested=bool(data["requested"]),
            optional=bool(data.get("optional", False)),
            specifier=str(data.get("specifier", "")),
            upgrade_of=None if data.get("upgrade_of") is None else str(data["upgrade_of"]),
            requires_python=str(data.get("requires_python", "")),
            requires_dist=tuple(str(item) for item in data.get("requires_dist", ())),
            tags=tuple(str(item) for item in data.get("tags", ())),
        )


@dataclass(frozen=True)
class SkippedRequirement:
    """A requirement the target kernel already satisfies with a preinstalled distribution."""

    name: str
    installed_version: str
    specifier: str
    required_by: tuple[str, ...]  # "<user>" for a direct requirement, else project names

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "installed_version": self.installed_version,
            "specifier": self.specifier,
            "required_by": list(self.required_by),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkippedRequirement:
        return cls(
            name=canonical_name(str(data["name"])),
            installed_version=str(data["installed_version"]),
            specifier=str(data.get("specifier", "")),
            required_by=tuple(str(item) for item in data.get("required_by", ())),
        )


@dataclass(frozen=True)
class MissingOptional:
    """An optional package with no usable wheel for the target, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MissingOptional:
        return cls(name=canonical_name(str(data["name"])), reason=str(data["reason"]))


@dataclass(frozen=True)
class Manifest:
    target: TargetProfile
    requested: tuple[str, ...]  # the requirement strings as the user gave them
    wheels: tuple[WheelEntry, ...]
    skipped: tuple[SkippedRequirement, ...] = ()
    missing_optional: tuple[MissingOptional, ...] = ()
    optional: tuple[str, ...] = ()  # canonical names the user marked optional
    self_wheel: str | None = None  # filename of kaggle-offline's own wheel, if included
    tool_version: str = ""
    created: str = ""  # ISO 8601 UTC
    wheel_dir: str = WHEEL_DIRNAME
    extra: Mapping[str, Any] = field(default_factory=dict)  # forward-compatible, ignored on read

    def wheel(self, name: str) -> WheelEntry | None:
        wanted = canonical_name(name)
        return next((entry for entry in self.wheels if entry.name == wanted), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "tool": {"name": "kaggle-offline", "version": self.tool_version},
            "created": self.created,
            "wheel_dir": self.wheel_dir,
            "requested": list(self.requested),
            "optional": list(self.optional),
            "self_wheel": self.self_wheel,
            "wheels": [entry.to_dict() for entry in self.wheels],
            "skipped_preinstalled": [entry.to_dict() for entry in self.skipped],
            "missing_optional": [entry.to_dict() for entry in self.missing_optional],
            "target": self.target.to_dict(details=False),
            **dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = MANIFEST_FILENAME) -> Manifest:
        check_document_format(
            data,
            origin=origin,
            kind="manifest",
            format_name=MANIFEST_FORMAT,
            format_version=MANIFEST_FORMAT_VERSION,
            hint="install the kaggle-offline that built it",
            error=ManifestError,
        )
        try:
            target = TargetProfile.from_dict(data["target"], origin=f"{origin} (target)")
            known = {
                "format", "format_version", "tool", "created", "wheel_dir", "requested", "optional",
                "self_wheel", "wheels", "skipped_preinstalled", "missing_optional", "target",
            }  # fmt: skip
            manifest = cls(
                target=target,
                requested=tuple(str(item) for item in data["requested"]),
                wheels=tuple(WheelEntry.from_dict(item) for item in data["wheels"]),
                skipped=tuple(
                    SkippedRequirement.from_dict(item)
                    for item in data.get("skipped_preinstalled", ())
                ),
                missing_optional=tuple(
                    MissingOptional.from_dict(item) for item in data.get("missing_optional", ())
                ),
                optional=tuple(canonical_name(str(item)) for item in data.get("optional", ())),
                self_wheel=None if data.get("self_wheel") is None else str(data["self_wheel"]),
                tool_version=str(dict(data.get("tool", {})).get("version", "")),
                created=str(data.get("created", "")),
                wheel_dir=str(data.get("wheel_dir", WHEEL_DIRNAME)),
                extra={key: value for key, value in data.items() if key not in known},
            )
        except ProfileError as error:
            raise ManifestError(str(error)) from None
        except KeyError as error:
            raise ManifestError(f"{origin}: missing key {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise ManifestError(f"{origin}: malformed manifest ({error})") from None
        _check_unique_names(manifest.wheels, origin)
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path}: unreadable manifest ({error})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path}: corrupt manifest, not valid JSON ({error})") from None
        return cls.from_dict(data, origin=str(path))

    def dump(self, path: str | os.PathLike[str]) -> None:
        write_json_atomically(Path(path), self.to_dict())


def _check_unique_names(wheels: Iterable[WheelEntry], origin: str) -> None:
    seen: dict[str, str] = {}
    for entry in wheels:
        if entry.name in seen and seen[entry.name] != entry.version:
            raise ManifestError(
                f"{origin}: {entry.name} appears twice ({seen[entry.name]} and {entry.version}); "
                "a wheelhouse must hold one version per package"
            )
        seen[entry.name] = entry.version


def locate_wheel(wheelhouse: Path, manifest: Manifest, entry: WheelEntry) -> Path | None:
    """Where a manifest's wheel lies on disk: in ``wheels/``, or flat beside the manifest.

    Kaggle keeps the folder only for uploads made with ``--dir-mode zip``; a flat upload puts the
    wheels at the top level, so both are accepted.
    """
    for candidate in (
        wheelhouse / manifest.wheel_dir / entry.filename,
        wheelhouse / entry.filename,
    ):
        if candidate.is_file():
            return candidate
    return None
