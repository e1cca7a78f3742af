"""What a wheel file says about itself: name, version and tags (filename), requirements (METADATA)."""

from __future__ import annotations

import email.parser
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from runtime.contract.errors import WheelhouseError
from runtime.contract.profile import TargetProfile, canonical_name


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
    """Name, version and tags from the filename; Requires-Python/Requires-Dist from METADATA."""
    try:
        name, version, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as error:
        raise WheelhouseError(f"{path}: not a valid wheel filename ({error})") from None
    try:
        with zipfile.ZipFile(path) as archive:
            candidates = [
                member
                for member in archive.namelist()
                if member.count("/") == 1 and member.endswith(".dist-info/METADATA")
            ]
            if not candidates:
                raise WheelhouseError(f"{path}: no .dist-info/METADATA inside; not a wheel")
            text = archive.read(candidates[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError) as error:
        raise WheelhouseError(f"{path}: unreadable wheel ({error})") from None
    message = email.parser.Parser().parsestr(text, headersonly=True)
    return WheelInfo(
        name=canonical_name(str(name)),
        version=str(version),
        tags=tuple(sorted(str(tag) for tag in tags)),
        requires_python=str(message.get("Requires-Python", "") or "").strip(),
        requires_dist=tuple(str(item).strip() for item in message.get_all("Requires-Dist") or ()),
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
