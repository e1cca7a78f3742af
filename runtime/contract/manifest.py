"""The wheelhouse manifest: the contract between the bundler (writes it) and the runtime (reads it).

A wheelhouse folder holds ``manifest.json``, ``requirements.lock``, ``bootstrap.py``,
``dataset-metadata.json`` and ``wheels/*.whl``. The manifest pins every wheel by sha256 and says
why it is there, so the kernel can install exactly what is missing and refuse anything tampered.

A manifest is checked whole when it is read, before anything it names is opened: every field has
its JSON type (``"name": null`` is an error, not a package called "none"), every path is a plain
name inside the wheelhouse (a ``filename`` or ``wheel_dir`` that is absolute or climbs with ``..``
is refused by name), and every entry's name is the name in its wheel's file name.
Standard library only: it is read in a kernel where nothing of ours is installed yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import ManifestError, ProfileError
from runtime.contract.files import (
    JsonFields,
    check_document_format,
    load_json,
    write_json_atomically,
)
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

    def __post_init__(self) -> None:
        plain_name(self.filename, "wheel filename")
        parsed = WheelName.parse(self.filename)
        if parsed is None:
            raise ManifestError(
                f"wheel filename {self.filename!r} is not a wheel's file name "
                "(name-version-python-abi-platform.whl)"
            )
        if parsed.name != canonical_name(self.name):
            raise ManifestError(
                f"the entry for {self.name!r} names {self.filename}, a wheel of {parsed.name}: "
                "an inconsistent manifest, rebuild the wheelhouse"
            )

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
    def from_dict(cls, data: Any, where: str = "wheel entry") -> WheelEntry:
        read = _fields(data, where)
        sha256 = _sha256(read, where)
        try:
            return cls(
                name=canonical_name(read.text("name")),
                version=read.text("version"),
                filename=read.text("filename"),
                sha256=sha256,
                size=read.count("size"),
                requested=read.flag("requested"),
                optional=read.flag("optional", False),
                specifier=read.text("specifier", ""),
                upgrade_of=read.optional_text("upgrade_of"),
                requires_python=read.text("requires_python", ""),
                requires_dist=read.texts("requires_dist"),
                tags=read.texts("tags"),
            )
        except ManifestError as error:
            if str(error).startswith(where):
                raise
            raise ManifestError(f"{where}: {error}") from None


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
    def from_dict(cls, data: Any, where: str = "skipped requirement") -> SkippedRequirement:
        read = _fields(data, where)
        return cls(
            name=canonical_name(read.text("name")),
            installed_version=read.text("installed_version"),
            specifier=read.text("specifier", ""),
            required_by=read.texts("required_by"),
        )


@dataclass(frozen=True)
class MissingOptional:
    """An optional package with no usable wheel for the target, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any, where: str = "missing optional") -> MissingOptional:
        read = _fields(data, where)
        return cls(name=canonical_name(read.text("name")), reason=read.text("reason"))


@dataclass(frozen=True)
class FileEntry:
    """One file the build wrote beside the manifest (the lock, bootstrap.py, the metadata).

    The manifest is written last, over the bytes of these files, so an edit to any of them (a
    ``bootstrap.py`` that runs other code, a line added to ``requirements.lock``) is caught.
    """

    name: str  # a plain name at the wheelhouse's top level
    sha256: str
    size: int

    def __post_init__(self) -> None:
        plain_name(self.name, "file name")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Any, where: str = "file entry") -> FileEntry:
        read = _fields(data, where)
        try:
            return cls(name=read.text("name"), sha256=_sha256(read, where), size=read.count("size"))
        except ManifestError as error:
            if str(error).startswith(where):
                raise
            raise ManifestError(f"{where}: {error}") from None


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
    # The other files the build wrote, hashed; None for a manifest of a build that recorded none
    # (kaggle-offline before this field): its wheels are checked, its other files cannot be.
    files: tuple[FileEntry, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # forward-compatible, ignored on read

    def __post_init__(self) -> None:
        plain_name(self.wheel_dir, "wheel_dir")
        _check_unique_names(self.wheels)
        names = [entry.name for entry in self.files or ()]
        if len(set(names)) != len(names) or MANIFEST_FILENAME in names:
            raise ManifestError("'files' names a file twice, or the manifest itself")
        if self.self_wheel is not None and not any(
            entry.filename == self.self_wheel for entry in self.wheels
        ):
            raise ManifestError(
                f"self_wheel {self.self_wheel!r} is not one of the manifest's wheels"
            )

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
            **({} if self.files is None else {"files": [f.to_dict() for f in self.files]}),
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
        known = {
            "format", "format_version", "tool", "created", "wheel_dir", "requested", "optional",
            "self_wheel", "wheels", "skipped_preinstalled", "missing_optional", "target", "files",
        }  # fmt: skip
        read = _fields(data, "manifest")
        try:
            target = TargetProfile.from_dict(read.mapping("target"), origin=f"{origin} (target)")
            tool = read.mapping("tool", {})
            manifest = cls(
                target=target,
                requested=read.texts("requested", required=True),
                wheels=tuple(
                    WheelEntry.from_dict(item, _where("wheels", index, item))
                    for index, item in enumerate(read.items("wheels", required=True))
                ),
                skipped=tuple(
                    SkippedRequirement.from_dict(item, _where("skipped_preinstalled", index, item))
                    for index, item in enumerate(read.items("skipped_preinstalled"))
                ),
                missing_optional=tuple(
                    MissingOptional.from_dict(item, _where("missing_optional", index, item))
                    for index, item in enumerate(read.items("missing_optional"))
                ),
                optional=tuple(canonical_name(name) for name in read.texts("optional")),
                self_wheel=read.optional_text("self_wheel"),
                tool_version=_fields(tool, "tool").text("version", ""),
                created=read.text("created", ""),
                wheel_dir=read.text("wheel_dir", WHEEL_DIRNAME),
                files=(
                    tuple(
                        FileEntry.from_dict(item, _where("files", index, item))
                        for index, item in enumerate(read.items("files"))
                    )
                    if "files" in data
                    else None
                ),
                extra={key: value for key, value in data.items() if key not in known},
            )
        except ProfileError as error:
            raise ManifestError(str(error)) from None
        except ManifestError as error:
            raise ManifestError(f"{origin}: {error}") from None
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        data = load_json(path, kind="manifest", error=ManifestError)
        return cls.from_dict(data, origin=str(path))

    def dump(self, path: str | os.PathLike[str]) -> None:
        write_json_atomically(Path(path), self.to_dict())


def _where(key: str, index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"{key}[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _check_unique_names(wheels: Iterable[WheelEntry]) -> None:
    seen: dict[str, str] = {}
    for entry in wheels:
        if entry.name in seen and seen[entry.name] != entry.version:
            raise ManifestError(
                f"{entry.name} appears twice ({seen[entry.name]} and {entry.version}); "
                "a wheelhouse must hold one version per package"
            )
        seen[entry.name] = entry.version


def _fields(data: Any, where: str) -> JsonFields:
    return JsonFields(data, where, ManifestError)


def _sha256(read: JsonFields, where: str) -> str:
    sha256 = read.text("sha256").lower()
    if len(sha256) != 64 or not all(char in "0123456789abcdef" for char in sha256):
        raise ManifestError(f"{where}: 'sha256' must be 64 hexadecimal digits, got {sha256!r}")
    return sha256


def plain_name(value: str, what: str) -> str:
    """``value`` when it is a plain file or folder name; anything that could leave the folder raises.

    Every path a manifest gives (a wheel's ``filename``, ``wheel_dir``, ``self_wheel``) is joined
    to its wheelhouse folder, so it must be one name: not absolute, no separator, not ``.``/``..``.
    """
    if (
        not value
        or value in (".", "..")
        or any(char in value for char in ("/", "\\", "\x00"))
        or Path(value).name != value
    ):
        raise ManifestError(
            f"{what} {value!r} is not a plain file name: a manifest may only name files inside "
            "its own wheelhouse"
        )
    return value


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel filename (``name-version(-build)?-python-abi-platform.whl``)."""

    name: str  # canonical
    version: str
    tags: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> WheelName | None:
        if not filename.endswith(".whl"):
            return None
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6) or not all(parts):
            return None
        name, version = parts[0], parts[1]
        interpreters, abis, platforms = parts[-3:]
        tags = tuple(
            f"{interpreter}-{abi}-{platform}"
            for interpreter in interpreters.split(".")
            for abi in abis.split(".")
            for platform in platforms.split(".")
        )
        return cls(canonical_name(name), version, tags)


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
