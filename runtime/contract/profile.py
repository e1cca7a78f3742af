"""Target profiles: everything the bundler must know about one Kaggle kernel.

A profile is the contract's first half: the bundler resolves *for* a profile, the runtime captures
one from a live kernel (``python -m runtime profile -o FILE``, see :mod:`runtime.installer.capture`).
Standard library only, because it is read in a kernel where nothing of ours is installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contract.errors import ProfileError
from runtime.contract.files import (
    JsonFields,
    check_document_format,
    load_json,
    write_json_atomically,
)

PROFILE_FORMAT = "kaggle-offline-profile"
PROFILE_FORMAT_VERSION = 1

# The keys of a complete PEP 508 marker environment, as packaging's default_environment() returns.
MARKER_KEYS = (
    "implementation_name",
    "implementation_version",
    "os_name",
    "platform_machine",
    "platform_python_implementation",
    "platform_release",
    "platform_system",
    "platform_version",
    "python_full_version",
    "python_version",
    "sys_platform",
)

_NAME_SEPARATORS = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name (``Pillow`` -> ``pillow``, ``ruamel.yaml`` -> ``ruamel-yaml``)."""
    return _NAME_SEPARATORS.sub("-", name).lower()


@dataclass(frozen=True)
class TargetProfile:
    """One kernel: its interpreter, the wheel tags it accepts, its markers and what it has installed."""

    name: str
    python_version: str  # "major.minor", e.g. "3.12"
    implementation: str  # wheel-tag interpreter prefix: "cp" for CPython
    abi: str  # e.g. "cp312"
    tags: tuple[
        str, ...
    ]  # supported wheel tags, most preferred first ("cp312-cp312-manylinux_2_35_x86_64")
    markers: Mapping[str, str]  # complete PEP 508 marker environment of the target
    preinstalled: Mapping[str, str] = field(default_factory=dict)  # canonical name -> version
    description: str = ""
    source: str = (
        ""  # where these facts come from: "captured on ..." or the facts file for built-ins
    )
    site_packages: str = ""
    # Declared Requires-Dist of preinstalled distributions, where known (a captured profile knows
    # all of them): the bundler checks a replacement against the kernel's packages that need it.
    preinstalled_requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Where an entry of `preinstalled`/`preinstalled_requires` comes from, when not `source`.
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [key for key in MARKER_KEYS if key not in self.markers]
        if missing:
            raise ProfileError(
                f"profile {self.name!r}: marker environment lacks {', '.join(missing)}"
            )
        if not self.tags:
            raise ProfileError(f"profile {self.name!r}: no supported wheel tags")
        if not re.fullmatch(r"\d+\.\d+", self.python_version):
            raise ProfileError(
                f"profile {self.name!r}: python_version must be 'major.minor', got {self.python_version!r}"
            )

    @property
    def tag_set(self) -> frozenset[str]:
        return frozenset(self.tags)

    def preinstalled_version(self, name: str) -> str | None:
        return self.preinstalled.get(canonical_name(name))

    def to_dict(self, *, details: bool = True) -> dict[str, Any]:
        """The JSON form; ``details=False`` leaves out what only the bundler reads (requirements)."""
        data = {
            "format": PROFILE_FORMAT,
            "format_version": PROFILE_FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "python_version": self.python_version,
            "implementation": self.implementation,
            "abi": self.abi,
            "site_packages": self.site_packages,
            "markers": dict(self.markers),
            "tags": list(self.tags),
            "preinstalled": dict(sorted(self.preinstalled.items())),
        }
        if details:
            data["preinstalled_requires"] = {
                name: list(lines) for name, lines in sorted(self.preinstalled_requires.items())
            }
            data["provenance"] = dict(sorted(self.provenance.items()))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "profile") -> TargetProfile:
        check_document_format(
            data,
            origin=origin,
            kind="profile",
            format_name=PROFILE_FORMAT,
            format_version=PROFILE_FORMAT_VERSION,
            hint="upgrade kaggle-offline or re-capture the profile",
            error=ProfileError,
        )
        read = JsonFields(data, origin, ProfileError)
        requires = JsonFields(
            read.mapping("preinstalled_requires", {}),
            f"{origin} (preinstalled_requires)",
            ProfileError,
        )
        return cls(
            name=read.text("name"),
            python_version=read.text("python_version"),
            implementation=read.text("implementation"),
            abi=read.text("abi"),
            tags=read.texts("tags", required=True),
            markers=read.text_mapping("markers"),
            preinstalled={
                canonical_name(name): version
                for name, version in read.text_mapping("preinstalled", {}).items()
            },
            description=read.text("description", ""),
            source=read.text("source", ""),
            site_packages=read.text("site_packages", ""),
            preinstalled_requires={
                canonical_name(name): requires.texts(name) for name in requires.data
            },
            provenance={
                canonical_name(name): where
                for name, where in read.text_mapping("provenance", {}).items()
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TargetProfile:
        return cls.from_dict(load_json(path, kind="profile", error=ProfileError), origin=str(path))

    def dump(self, path: str | os.PathLike[str]) -> None:
        write_json_atomically(Path(path), self.to_dict())
