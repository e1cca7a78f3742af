"""What the kernel keeps: its versions as resolver constraints, and replacements checked against it.

Every preinstalled distribution becomes a ``name==version`` constraint (``bundler.resolution.pip_shim`` adds
them to pip's own constraints), so pip's resolver can only
pick versions of everything else that work with the kernel as it is, and backtracks to older ones
where the newest would need another torch, numpy or timm. Two things lift a constraint:

- a requested version the kernel does not have (``numpy==1.26.4``, ``tifffile>=2026.11``): a
  requested replacement. A request the kernel already satisfies (a bare ``timm``) never is one;
- ``--allow-replace NAME``: pip may then choose another version of NAME where it must.

Before any replacement is vendored, the kernel's own packages that declare a requirement on it (the
profile's ``preinstalled_requires``) are checked against the new version; a requested replacement
that would break one is refused unless ``--allow-replace`` covers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from bundler.errors import BundlerError, PreinstalledConflictError
from runtime.contract.profile import TargetProfile, canonical_name

REQUESTED = "requested"
ALLOWED = "allowed"
_SHOWN_BREAKS = 4


@dataclass(frozen=True)
class KernelPins:
    pins: Mapping[str, str]  # name -> version: a constraint of the resolver each
    released: Mapping[str, str]  # name -> REQUESTED or ALLOWED: may be replaced


def kernel_pins(
    profile: TargetProfile, requested: Sequence[Requirement], allow_replace: Iterable[str]
) -> KernelPins:
    allowed = {canonical_name(name) for name in allow_replace}
    unknown = sorted(name for name in allowed if profile.preinstalled_version(name) is None)
    if unknown:
        raise BundlerError(
            f"--allow-replace {unknown[0]}: {profile.name} has no {unknown[0]} preinstalled; "
            "name a package of the kernel (python -m bundler profiles lists the targets)"
        )
    environment = {**profile.markers, "extra": ""}
    wanted: dict[str, list[Requirement]] = {}
    for requirement in requested:
        if requirement.marker is None or requirement.marker.evaluate(environment):
            wanted.setdefault(canonical_name(requirement.name), []).append(requirement)
    pins: dict[str, str] = {}
    released: dict[str, str] = {}
    for name, version in sorted(profile.preinstalled.items()):
        if name in allowed:
            released[name] = ALLOWED
        elif any(not r.specifier.contains(version, prereleases=True) for r in wanted.get(name, [])):
            released[name] = REQUESTED
        else:
            pins[name] = version
    return KernelPins(pins, released)


@dataclass(frozen=True)
class Replacement:
    """A kernel package the wheelhouse replaces, why, and whom that breaks."""

    name: str
    kernel_version: str
    version: str
    reason: str  # REQUESTED or ALLOWED
    breaks: tuple[str, ...] = ()  # "opencv-python 4.13.0.92 requires numpy>=2"
    unchecked: int = 0  # kernel packages whose requirements the profile does not know

    def describe(self) -> str:
        return f"{self.name} {self.kernel_version} -> {self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kernel_version": self.kernel_version,
            "version": self.version,
            "reason": self.reason,
            "breaks": list(self.breaks),
            "unchecked": self.unchecked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Replacement:
        return cls(
            name=str(data["name"]),
            kernel_version=str(data["kernel_version"]),
            version=str(data["version"]),
            reason=str(data["reason"]),
            breaks=tuple(str(item) for item in data.get("breaks", ())),
            unchecked=int(data.get("unchecked", 0)),
        )


def check_replacements(
    chosen: Mapping[str, str],
    profile: TargetProfile,
    released: Mapping[str, str],
    requested_text: Mapping[str, str],
    chains: Mapping[str, str],
) -> list[Replacement]:
    """The replacements among ``chosen`` (name -> version pip chose), each checked.

    ``requested_text`` names the request behind a requested replacement, ``chains`` how a
    dependency reaches an allowed one; both only for messages.
    """
    replacements: list[Replacement] = []
    # The same count for every replacement: kernel packages whose requirements are not known.
    unchecked = sum(
        1
        for other in profile.preinstalled
        if other not in profile.preinstalled_requires and other not in chosen
    )
    for name, version in sorted(chosen.items()):
        installed = profile.preinstalled_version(name)
        if installed is None or installed == version:
            continue
        reason = released.get(name)
        if reason is None:
            # The kernel's constraint should have made this impossible: the shim let pip through.
            raise PreinstalledConflictError(
                f"{chains.get(name, name)} would replace the kernel's {name} {installed} with "
                f"{version} although the kernel's version was a constraint; allow it with "
                f"--allow-replace {name} or report this as a bug"
            )
        breaks = _broken_dependents(name, installed, version, profile, set(chosen))
        replacement = Replacement(name, installed, version, reason, tuple(breaks), unchecked)
        if breaks and reason == REQUESTED:
            raise PreinstalledConflictError(
                f"{requested_text.get(name, name)} would replace the kernel's {name} {installed} "
                f"with {version}, which breaks {listed(breaks)} on {profile.name}; replace it anyway "
                f"with --allow-replace {name}, or ask for a version they accept"
            )
        replacements.append(replacement)
    return replacements


def listed(breaks: Sequence[str], *, rest: str = "") -> str:
    """The first few of ``breaks``, then how many more there are (and ``rest``, where to see them)."""
    more = len(breaks) - _SHOWN_BREAKS
    return ", ".join(breaks[:_SHOWN_BREAKS]) + (f" and {more} more{rest}" if more > 0 else "")


def _broken_dependents(
    name: str, installed: str, version: str, profile: TargetProfile, replaced: set[str]
) -> list[str]:
    """Kernel packages whose declared requirement on ``name`` holds now and fails at ``version``."""
    environment = {**profile.markers, "extra": ""}
    broken: list[str] = []
    for dependent, lines in sorted(profile.preinstalled_requires.items()):
        if dependent in replaced:
            continue  # its new version comes with its own requirements, which pip resolved
        for line in lines:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if canonical_name(requirement.name) != name:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            specifier = requirement.specifier
            if specifier.contains(installed, prereleases=True) and not specifier.contains(
                version, prereleases=True
            ):
                dependent_version = profile.preinstalled[dependent]
                broken.append(f"{dependent} {dependent_version} (requires {name}{specifier})")
    return broken
