"""Before pip backtracks: does the newest release of each request keep the kernel's packages?

pip's resolver, given the kernel's versions as constraints, walks back release by release when
the newest vLLM pins another torch, reading whole wheels where the index serves no PEP 658
metadata and building the sdists of releases from years ago: twenty minutes, then a build error
that says nothing about torch. This check reads only release metadata (PEP 658 files, or the
wheel's METADATA through HTTP range requests), builds nothing, and answers in seconds:

- the newest release with a wheel for the target is checked against the kernel's pins; a
  requirement the kernel cannot keep is a :class:`Conflict` (``vllm 0.34.0 requires
  torch==2.14.0 but the kernel has torch 2.10.0+cu128``);
- then the choices: the newest older release that keeps the kernel (a bounded search over
  releases with a wheel for the target, never their sdists), and what ``--allow-replace`` of
  the conflicting package would bring (its new version, the companions it pins and the
  packages of the kernel that pin it, with their download sizes);
- a project that ships compiled wheels never has an sdist built: the resolver gets
  ``--only-binary`` for it.

The search runs where pip's finder is (``bundler.resolution.release_probe``, in the shim's subprocess), on
the :class:`ReleaseSource` it provides; everything here is pip-free, for the bundler and the
shim alike.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# How far back the search for a release that keeps the kernel goes, by default.
DEFAULT_MAX_RELEASES = 60
DEFAULT_PROBE_SECONDS = 120.0
# A kernel package pinned by a replacement's metadata is looked for among this many releases.
_COMPANION_TRIES = 6
# Older releases are read this many at a time (in parallel where the source can).
_BATCH = 8


def canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Release:
    """One file of one version that the target accepts (the finder already checked its tags)."""

    name: str
    version: str
    filename: str
    url: str
    is_wheel: bool
    pure: bool  # a ``*-none-any`` wheel (or an sdist of a project with no compiled wheel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "url": self.url,
            "is_wheel": self.is_wheel,
            "pure": self.pure,
        }


class ReleaseSource(Protocol):
    def releases(self, name: str) -> list[Release]:
        """Files of ``name`` the target accepts, newest version first."""

    def requires(self, release: Release) -> list[str] | None:
        """Its Requires-Dist lines, or None when its metadata cannot be read without a build."""

    def size(self, release: Release) -> int | None:
        """Its size in bytes, or None when the index does not say."""

    def prefetch(self, releases: Sequence[Release]) -> None:
        """Read these releases' metadata ahead (in parallel), for the ``requires`` calls to come."""

    def prefetch_releases(self, names: Sequence[str]) -> None:
        """List these projects' releases ahead (in parallel)."""

    def prefetch_sizes(self, releases: Sequence[Release]) -> None:
        """Ask these releases' sizes ahead (in parallel)."""

    def say(self, line: str) -> None:
        """Progress for the user (the search can take a while)."""


@dataclass(frozen=True)
class Request:
    name: str  # canonical
    specifier: str
    extras: tuple[str, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Request:
        requirement = Requirement(text)
        return cls(
            canonical(requirement.name),
            str(requirement.specifier),
            tuple(sorted(requirement.extras)),
            text,
        )


@dataclass(frozen=True)
class Conflict:
    """``vllm 0.34.0 requires torch==2.14.0 but the kernel has torch 2.10.0+cu128``."""

    project: str
    version: str
    name: str
    specifier: str
    kernel_version: str

    @property
    def unavailable(self) -> bool:
        """Not the kernel's doing: an exact pin that no wheel for the target satisfies."""
        return self.kernel_version == ""

    def describe(self) -> str:
        if self.unavailable:
            return (
                f"{self.project} {self.version} requires {self.name}{self.specifier}, which has "
                "no wheel for the target"
            )
        return (
            f"{self.project} {self.version} requires {self.name}{self.specifier} but the kernel "
            f"has {self.name} {self.kernel_version}"
        )


@dataclass(frozen=True)
class ReplacementEstimate:
    """What ``--allow-replace NAME`` brings for one release: new versions and their bytes."""

    wheels: tuple[tuple[str, str, str, int | None], ...]  # (name, kernel version, new, size)
    unknown: tuple[str, ...] = ()  # kernel packages that would move, versions not found

    @property
    def size(self) -> int:
        return sum(size or 0 for *_, size in self.wheels)

    def to_dict(self) -> dict[str, Any]:
        return {"wheels": [list(wheel) for wheel in self.wheels], "unknown": list(self.unknown)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplacementEstimate:
        wheels = tuple(
            (str(n), str(k), str(v), None if s is None else int(s)) for n, k, v, s in data["wheels"]
        )
        return cls(wheels, tuple(str(name) for name in data.get("unknown", ())))


@dataclass
class ProjectFit:
    """The check of one request: its newest release, what breaks, and the choices."""

    name: str
    newest: str | None = None  # newest version with a wheel for the target
    newest_size: int | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    keeps: str | None = None  # newest older release whose requirements keep the kernel
    keeps_size: int | None = None
    searched: int = 0  # releases whose metadata the search read
    stopped: str = ""  # why the search for ``keeps`` ended without one
    compiled: bool = False  # ships wheels with compiled code: never build its sdists
    replace: ReplacementEstimate | None = None
    unreadable: str = ""  # why the newest release's metadata could not be read

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "newest": self.newest,
            "newest_size": self.newest_size,
            "conflicts": [vars(conflict) for conflict in self.conflicts],
            "keeps": self.keeps,
            "keeps_size": self.keeps_size,
            "searched": self.searched,
            "stopped": self.stopped,
            "compiled": self.compiled,
            "replace": None if self.replace is None else self.replace.to_dict(),
            "unreadable": self.unreadable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectFit:
        return cls(
            name=str(data["name"]),
            newest=data.get("newest"),
            newest_size=data.get("newest_size"),
            conflicts=[Conflict(**item) for item in data.get("conflicts", [])],
            keeps=data.get("keeps"),
            keeps_size=data.get("keeps_size"),
            searched=int(data.get("searched", 0)),
            stopped=str(data.get("stopped", "")),
            compiled=bool(data.get("compiled", False)),
            replace=None
            if data.get("replace") is None
            else ReplacementEstimate.from_dict(data["replace"]),
            unreadable=str(data.get("unreadable", "")),
        )


@dataclass(frozen=True)
class FitLimits:
    max_releases: int = DEFAULT_MAX_RELEASES
    seconds: float = DEFAULT_PROBE_SECONDS
    pre: bool = False


def check_requests(
    requests: Sequence[Request],
    pins: Mapping[str, str],
    markers: Mapping[str, str],
    source: ReleaseSource,
    *,
    kernel: Mapping[str, str],
    pinned_by_kernel: Mapping[str, Sequence[str]] = {},
    limits: FitLimits = FitLimits(),
) -> list[ProjectFit]:
    """Check each request's newest release against ``pins`` (kernel name -> version).

    ``kernel`` is every preinstalled version (pins and released alike), for the replacement
    estimate; ``pinned_by_kernel[name]`` the kernel packages that pin ``name`` exactly
    (torchvision and torchaudio for torch), which a replacement of ``name`` moves too.
    """
    deadline = time.monotonic() + limits.seconds
    fits = []
    for request in requests:
        if request.name in kernel and request.name in pins:
            continue  # the kernel's own version is what this request gets
        fit = _check_one(
            request, pins, markers, source, limits, deadline, set(pinned_by_kernel), kernel
        )
        if any(not c.unavailable for c in fit.conflicts) and fit.newest is not None:
            source.say(f"{fit.stopped or 'search done'}; reading what --allow-replace would bring")
            fit.replace = _estimate_replacement(
                fit, request, markers, source, kernel, pinned_by_kernel
            )
        fits.append(fit)
    return fits


def _check_one(
    request: Request,
    pins: Mapping[str, str],
    markers: Mapping[str, str],
    source: ReleaseSource,
    limits: FitLimits,
    deadline: float,
    hubs: Collection[str] = (),
    kernel: Mapping[str, str] | None = None,
) -> ProjectFit:
    kernel = kernel or {}
    fit = ProjectFit(request.name)
    wanted = SpecifierSet(request.specifier)
    every = source.releases(request.name)
    # Any compiled wheel, of any release, says the project ships compiled code: its sdists
    # (including those of releases the request allows) need a compiler, never a resolver.
    fit.compiled = any(r.is_wheel and not r.pure for r in every)
    releases = [
        r for r in every if wanted.contains(r.version, prereleases=True if limits.pre else None)
    ]
    wheels = _one_per_version([r for r in releases if r.is_wheel])
    if not wheels:
        return fit  # only sdists fit: pip decides, and builds only pure-Python ones
    newest, older = wheels[0], wheels[1:]
    fit.newest = newest.version
    fit.newest_size = source.size(newest)
    lines = source.requires(newest)
    fit.searched = 1
    if lines is None:
        fit.unreadable = f"the metadata of {newest.filename} could not be read"
        return fit
    kernel_conflicts = sort_conflicts(
        _conflicts(request, newest.version, lines, pins, markers), hubs
    )
    if kernel_conflicts:  # said at once: the rest of the check takes longer
        more = len(kernel_conflicts) - 1
        source.say(kernel_conflicts[0].describe() + (f" (and {more} more)" if more else ""))
    unavailable = _unavailable(request, newest.version, lines, markers, source, kernel)
    fit.conflicts = [*kernel_conflicts, *unavailable]
    if not fit.conflicts:
        return fit
    if unavailable:
        source.say(unavailable[0].describe())
    source.say(
        f"looking for an older release that keeps the kernel (at most {limits.max_releases}"
        f" releases, {limits.seconds:.0f} s)"
    )
    for index, release in enumerate(older):
        if index % _BATCH == 0:
            source.prefetch(older[index : index + _BATCH])
        if fit.searched >= limits.max_releases:
            fit.stopped = f"searched {fit.searched} releases (--max-releases {limits.max_releases})"
            return fit
        if time.monotonic() > deadline:
            fit.stopped = (
                f"stopped after {limits.seconds:.0f} s (--resolve-timeout), {fit.searched} "
                "releases read"
            )
            return fit
        fit.searched += 1
        lines = source.requires(release)
        if (
            lines is not None
            and not _conflicts(request, release.version, lines, pins, markers)
            and not _unavailable(request, release.version, lines, markers, source, kernel)
        ):
            fit.keeps = release.version
            fit.keeps_size = source.size(release)
            source.say(f"{request.name} {release.version} keeps the kernel")
            return fit
    fit.stopped = f"no release with a wheel for the target keeps it ({fit.searched} read)"
    return fit


def _one_per_version(releases: Iterable[Release]) -> list[Release]:
    """The first file of each version (the finder lists the target's preferred file first)."""
    seen: set[str] = set()
    chosen = []
    for release in sorted(releases, key=lambda r: _version_key(r.version), reverse=True):
        if release.version not in seen:
            seen.add(release.version)
            chosen.append(release)
    return chosen


def _version_key(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def applicable(
    lines: Iterable[str], markers: Mapping[str, str], extras: Sequence[str] = ()
) -> list[Requirement]:
    """The requirements among ``lines`` that apply on the target with ``extras`` requested."""
    found = []
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({**markers, "extra": extra}) for extra in ("", *extras)
        ):
            found.append(requirement)
    return found


def sort_conflicts(conflicts: Sequence[Conflict], hubs: Collection[str] = ()) -> list[Conflict]:
    """The ``hubs`` first (torch: kernel packages pin it, so it moves a family), then exact pins
    (``lark==1.2.2``), then the rest, each group in the release's own order."""

    def rank(conflict: Conflict) -> int:
        if conflict.unavailable:
            return 3  # nothing --allow-replace can change: after the kernel's conflicts
        if conflict.name in hubs:
            return 0
        return 1 if conflict.specifier.startswith(("==", "===")) else 2

    return sorted(conflicts, key=rank)


def _unavailable(
    request: Request,
    version: str,
    lines: Sequence[str],
    markers: Mapping[str, str],
    source: ReleaseSource,
    kernel: Mapping[str, str],
) -> list[Conflict]:
    """Exact pins outside the kernel that no wheel for the target satisfies (vllm 0.34.0 pins
    flashinfer-python==0.7.3): pip would backtrack through every release before saying so."""
    pinned = [
        requirement
        for requirement in applicable(lines, markers, request.extras)
        if canonical(requirement.name) not in kernel
        and any(spec.operator in ("==", "===") for spec in requirement.specifier)
    ]
    source.prefetch_releases([canonical(requirement.name) for requirement in pinned])
    return [
        Conflict(request.name, version, canonical(r.name), str(r.specifier), "")
        for r in pinned
        if _newest_wheel(source, canonical(r.name), r.specifier) is None
        and not _only_sdists(source, canonical(r.name), r.specifier)
    ]


def _only_sdists(source: ReleaseSource, name: str, specifier: SpecifierSet) -> bool:
    """A pure-Python project released as sdists only: pip builds those, so they count."""
    releases = [r for r in source.releases(name) if specifier.contains(r.version, prereleases=True)]
    every = source.releases(name)
    return bool(releases) and not any(r.is_wheel and not r.pure for r in every)


def _conflicts(
    request: Request,
    version: str,
    lines: Sequence[str],
    pins: Mapping[str, str],
    markers: Mapping[str, str],
) -> list[Conflict]:
    found = []
    for requirement in applicable(lines, markers, request.extras):
        name = canonical(requirement.name)
        kernel_version = pins.get(name)
        if kernel_version is None or requirement.specifier.contains(
            kernel_version, prereleases=True
        ):
            continue
        found.append(
            Conflict(request.name, version, name, str(requirement.specifier), kernel_version)
        )
    return found


def _estimate_replacement(
    fit: ProjectFit,
    request: Request,
    markers: Mapping[str, str],
    source: ReleaseSource,
    kernel: Mapping[str, str],
    pinned_by_kernel: Mapping[str, Sequence[str]],
) -> ReplacementEstimate:
    """The kernel packages that ``--allow-replace`` of the conflicting names would move.

    In waves: the conflicting packages, then what their new versions pin among the kernel's
    (triton, ``nvidia-*``) and the kernel packages that pin them (torchvision, torchaudio);
    each wave's index pages, metadata and sizes are read in parallel.
    """
    newest = next(
        r
        for r in _one_per_version(source.releases(request.name))
        if r.is_wheel and r.version == fit.newest
    )
    needs = {
        canonical(r.name): r.specifier
        for r in applicable(source.requires(newest) or [], markers, request.extras)
    }
    wheels: list[tuple[str, str, str, int | None]] = []
    unknown: list[str] = []
    done: set[str] = set()
    wave = [
        (conflict.name, SpecifierSet(conflict.specifier))
        for conflict in fit.conflicts
        if not conflict.unavailable
    ]
    while wave:
        current = {}
        for name, specifier in wave:
            if name not in done and name not in current:
                current[name] = specifier
        done.update(current)
        source.prefetch_releases(list(current))
        picked = []
        for name, specifier in current.items():
            release = _newest_wheel(source, name, specifier)
            if release is None:
                unknown.append(name)
            else:
                picked.append((name, release))
        source.prefetch([release for _, release in picked])
        source.prefetch_sizes([release for _, release in picked])
        wave = []
        for name, release in picked:
            wheels.append((name, kernel[name], release.version, source.size(release)))
            # What the new version pins among the kernel's packages (triton, nvidia-*) moves.
            for requirement in applicable(source.requires(release) or [], markers):
                other = canonical(requirement.name)
                if other in kernel and not requirement.specifier.contains(
                    kernel[other], prereleases=True
                ):
                    wave.append((other, requirement.specifier))
            # So do the kernel's packages that pin it (torchvision, torchaudio for torch).
            for companion in pinned_by_kernel.get(name, ()):
                if companion in done:
                    continue
                if companion in needs:
                    wave.append((companion, needs[companion]))
                    continue
                pinned = _pinning_release(source, companion, name, release.version, markers)
                if pinned is None:
                    unknown.append(companion)
                    done.add(companion)
                else:
                    wave.append((companion, SpecifierSet(f"=={pinned}")))
    return ReplacementEstimate(tuple(wheels), tuple(unknown))


def _newest_wheel(source: ReleaseSource, name: str, specifier: SpecifierSet) -> Release | None:
    """The newest final release in ``specifier`` with a wheel, else the newest pre-release (as
    pip chooses without --pre)."""
    wheels = _one_per_version(r for r in source.releases(name) if r.is_wheel)
    for prereleases in (False, True):
        for release in wheels:
            if specifier.contains(release.version, prereleases=prereleases):
                return release
    return None


def _pinning_release(
    source: ReleaseSource, name: str, pinned: str, version: str, markers: Mapping[str, str]
) -> str | None:
    """The newest release of ``name`` whose requirement on ``pinned`` accepts ``version``."""
    releases = _one_per_version(r for r in source.releases(name) if r.is_wheel)
    for release in releases[:_COMPANION_TRIES]:
        for requirement in applicable(source.requires(release) or [], markers):
            if canonical(requirement.name) == pinned and requirement.specifier.contains(
                version, prereleases=True
            ):
                return release.version
    return None
