"""From pip's resolution to the wheelhouse plan: what is vendored and why, what the kernel has.

The plan is what the resolution cache stores, so a second build with the same inputs needs no pip
process: every wheel's hash, URL and reason, the requirements the kernel already satisfies, and
the optional packages that have no wheel for the target.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

from bundler.errors import ResolutionError
from bundler.resolution.preinstalled import Replacement
from bundler.resolution.resolve import ResolvedItem
from runtime.contract.manifest import MissingOptional, SkippedRequirement
from runtime.contract.profile import TargetProfile, canonical_name

USER = "<user>"


@dataclass(frozen=True)
class BundledWheel:
    """One wheel of the wheelhouse, as it will be recorded in the manifest."""

    name: str
    version: str
    filename: str
    sha256: str | None  # None only before the download of a file the index gave no hash for
    url: str
    requested: bool
    optional: bool = False
    specifier: str = ""
    upgrade_of: str | None = None
    requires_python: str = ""
    requires_dist: tuple[str, ...] = ()
    built_from: Mapping[str, str] | None = None  # the sdist: filename, sha256, url

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "sha256": self.sha256,
            "url": self.url,
            "requested": self.requested,
            "optional": self.optional,
            "specifier": self.specifier,
            "upgrade_of": self.upgrade_of,
            "requires_python": self.requires_python,
            "requires_dist": list(self.requires_dist),
            "built_from": None if self.built_from is None else dict(self.built_from),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundledWheel:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            filename=str(data["filename"]),
            sha256=None if data.get("sha256") is None else str(data["sha256"]),
            url=str(data["url"]),
            requested=bool(data["requested"]),
            optional=bool(data.get("optional", False)),
            specifier=str(data.get("specifier", "")),
            upgrade_of=None if data.get("upgrade_of") is None else str(data["upgrade_of"]),
            requires_python=str(data.get("requires_python", "")),
            requires_dist=tuple(data.get("requires_dist", ())),
            built_from=None if data.get("built_from") is None else dict(data["built_from"]),
        )


@dataclass
class BundlePlan:
    wheels: list[BundledWheel]
    skipped: list[SkippedRequirement] = field(default_factory=list)
    missing_optional: list[MissingOptional] = field(default_factory=list)
    replacements: list[Replacement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wheels": [wheel.to_dict() for wheel in self.wheels],
            "skipped": [entry.to_dict() for entry in self.skipped],
            "missing_optional": [entry.to_dict() for entry in self.missing_optional],
            "replacements": [entry.to_dict() for entry in self.replacements],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundlePlan:
        return cls(
            wheels=[BundledWheel.from_dict(item) for item in data["wheels"]],
            skipped=[SkippedRequirement.from_dict(item) for item in data["skipped"]],
            missing_optional=[MissingOptional.from_dict(item) for item in data["missing_optional"]],
            replacements=[Replacement.from_dict(item) for item in data.get("replacements", [])],
        )


def parse_requirements(texts: Iterable[str], origin: str = "requirement") -> list[Requirement]:
    parsed = []
    for text in texts:
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement as error:
            raise ResolutionError(
                f"{origin} {text!r} is not a valid requirement ({error})"
            ) from None
    return parsed


def _applies(marker: Marker | None, environment: Mapping[str, str], extras: Iterable[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


def _dependencies(item: ResolvedItem) -> list[Requirement]:
    return parse_requirements(item.requires_dist, origin=f"{item.name} {item.version} requires")


def chains_to(names: Iterable[str], items: Sequence[ResolvedItem]) -> dict[str, str]:
    """``<user> -> nnunetv2 2.7.0 -> dynamic-network-architectures 0.4.2 -> timm`` per name."""
    by_name = {item.name: item for item in items}
    found = {}
    for name in names:
        chain, _, _ = _chain_to(name, by_name)
        found[name] = " -> ".join(chain)
    return found


def _chain_to(target: str, by_name: Mapping[str, ResolvedItem]) -> tuple[list[str], str, str]:
    """The shortest chain from a requested item to ``target``, its last edge and its parent."""
    queue = deque([[item.name] for item in by_name.values() if item.requested])
    seen = {path[0] for path in queue}
    while queue:
        path = queue.popleft()
        for requirement in _dependencies(by_name[path[-1]]):
            name = canonical_name(requirement.name)
            if name == target:
                parent = by_name[path[-1]]
                chain = [USER, *(f"{n} {by_name[n].version}" for n in path), name]
                return chain, f"{parent.name} {parent.version} requires {requirement}", parent.name
            if name in by_name and name not in seen:
                seen.add(name)
                queue.append([*path, name])
    return [USER, target], f"something requires {target}", "the package that requires it"


def make_bundle_plan(
    items: Sequence[ResolvedItem],
    requested: Sequence[Requirement],
    optional: Iterable[str],
    profile: TargetProfile,
    missing_optional: Sequence[MissingOptional] = (),
) -> BundlePlan:
    """Walk the requirements with the target's markers: who needs what, and what the kernel has."""
    environment = dict(profile.markers)
    by_name = {item.name: item for item in items}
    optional_names = {canonical_name(name) for name in optional}
    specifiers: dict[str, list[str]] = {}
    skipped_by: dict[str, list[str]] = {}
    queue: deque[tuple[Requirement, str, tuple[str, ...]]] = deque(
        (requirement, USER, ()) for requirement in requested
    )
    expanded: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, parent, parent_extras = queue.popleft()
        if not _applies(requirement.marker, environment, parent_extras):
            continue
        name = canonical_name(requirement.name)
        text = str(requirement.specifier)
        if text and text not in specifiers.setdefault(name, []):
            specifiers[name].append(text)
        if name in by_name:
            key = (name, frozenset(requirement.extras))
            if key in expanded:
                continue
            expanded.add(key)
            extras = tuple(sorted(requirement.extras))
            queue.extend((dep, name, extras) for dep in _dependencies(by_name[name]))
        elif profile.preinstalled_version(name) is not None:
            required_by = skipped_by.setdefault(name, [])
            if parent not in required_by:
                required_by.append(parent)
    wheels = [
        BundledWheel(
            name=item.name,
            version=item.version,
            filename=item.filename,
            sha256=item.sha256,
            url=item.url,
            requested=item.requested,
            optional=item.name in optional_names,
            specifier=",".join(specifiers.get(item.name, [])),
            upgrade_of=profile.preinstalled_version(item.name),
            requires_python=item.requires_python,
            requires_dist=item.requires_dist,
        )
        for item in sorted(items, key=lambda item: item.name)
    ]
    skipped = [
        SkippedRequirement(
            name=name,
            installed_version=profile.preinstalled[name],
            specifier=",".join(specifiers.get(name, [])),
            required_by=tuple(required_by),
        )
        for name, required_by in sorted(skipped_by.items())
    ]
    return BundlePlan(wheels=wheels, skipped=skipped, missing_optional=list(missing_optional))


def with_built_wheel(wheel: BundledWheel, filename: str, sha256: str) -> BundledWheel:
    """The plan entry of an sdist, now pointing at the wheel built from it."""
    source = {"filename": wheel.filename, "sha256": wheel.sha256 or "", "url": wheel.url}
    return replace(wheel, filename=filename, sha256=sha256, built_from=source)
