"""What a wheel file says about itself: name, version and tags (filename), requirements (METADATA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from runtime.contract.errors import WheelhouseError
from runtime.contract.profile import TargetProfile, canonical_name
from runtime.contract.wheel_archive import read_wheel_archive


@dataclass(frozen=True)
class WheelInfo:
    name: str  # canonical
    version: str
    tags: tuple[str, ...]  # expanded, e.g. ("cp312-abi3-manylinux_2_28_x86_64",)
    requires_python: str
    requires_dist: tuple[str, ...]


def wheel_tags(filename: str) -> tuple[str, ...]:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as error:
        raise WheelhouseError(f"{filename}: not a valid wheel filename ({error})") from None
    return tuple(sorted(str(tag) for tag in tags))


def read_wheel(path: Path) -> WheelInfo:
    """Name, version and tags from the filename; Requires-Python/Requires-Dist from METADATA.

    METADATA is read with the installer's bounded reader, and its Name and Version must be the
    file name's: pip installs what METADATA says, so a wheel that contradicts its name is not
    the wheel the manifest pins.
    """
    try:
        name, version, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as error:
        raise WheelhouseError(f"{path}: not a valid wheel filename ({error})") from None
    archive = read_wheel_archive(path)
    try:
        inside: tuple[str, Version | None] = (
            canonical_name(archive.name),
            Version(archive.version),
        )
    except InvalidVersion:
        inside = (canonical_name(archive.name), None)
    if inside != (canonical_name(str(name)), version):
        raise WheelhouseError(
            f"{path}: the file name says {canonical_name(str(name))} {version} but its METADATA "
            f"says {archive.name} {archive.version}; pip would install what METADATA says"
        )
    return WheelInfo(
        name=canonical_name(str(name)),
        version=str(version),
        tags=tuple(sorted(str(tag) for tag in tags)),
        requires_python=next(iter(archive.header_values("Requires-Python")), "").strip(),
        requires_dist=tuple(item.strip() for item in archive.header_values("Requires-Dist")),
    )


def fits_tags(tags: tuple[str, ...], profile: TargetProfile) -> bool:
    return not profile.tag_set.isdisjoint(tags)


def python_full_version(profile: TargetProfile) -> str:
    """The target's Python as ``X.Y.Z``; ``python_version`` wins over a marker that disagrees."""
    full = profile.markers["python_full_version"]
    if full == profile.python_version or full.startswith(f"{profile.python_version}."):
        return full
    return f"{profile.python_version}.0"


def fits_python(requires_python: str, profile: TargetProfile) -> bool:
    if not requires_python:
        return True
    try:
        specifier = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # pip ignores an invalid Requires-Python too
    return specifier.contains(python_full_version(profile), prereleases=True)


def describe_target(profile: TargetProfile) -> str:
    """``kaggle-py312 (cp312, manylinux_2_35_x86_64)``: the target in a wheel's terms."""
    newest_platform = next(
        (tag.split("-")[2] for tag in profile.tags if "manylinux" in tag), profile.tags[0]
    )
    return f"{profile.name} ({profile.abi}, {newest_platform})"
