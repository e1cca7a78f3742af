"""The install plan: which vendored wheels this kernel is missing, checked before anything is touched.

Every decision that can fail is taken here, before a single file is copied or pip is started: a
wheelhouse for another Python, two wheelhouses that disagree on a version, a preinstalled package
that a wheelhouse would replace, a wheel missing from disk, a dependency nobody provides. The
result either is a complete plan or raises one error, so an install is never left half-done by a
problem that could have been seen in advance.

Two rules are the plan's own. A folder of wheels without a manifest has no hashes to check, so it
is installed from only with ``allow_unverified`` (``--allow-unverified``). kaggle-offline itself
is never part of a Kaggle image, so an installed copy is always one a wheelhouse put there: the
plan installs the own wheel of the first named wheelhouse (bootstrap.py's own, so the installer
that is running), else the newest own wheel found, over any older installed kaggle-offline, and
keeps a newer one. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.contract.errors import ManifestError, PlanConflictError, WheelhouseError
from runtime.contract.manifest import WheelEntry, WheelName
from runtime.installer.discovery import Wheelhouse
from runtime.installer.interpreter import Interpreter
from runtime.installer.versions import (
    combine,
    dependencies,
    marker_environment,
    parse_version,
    same_version,
    satisfies,
)

BUILTIN_TARGETS = {"3.11": "kaggle-py311", "3.12": "kaggle-py312"}
ALLOW_UNVERIFIED_HINT = "pass --allow-unverified to install them anyway"


@dataclass(frozen=True)
class PlannedWheel:
    """One wheel to install, and where it comes from."""

    name: str
    version: str
    filename: str
    source: Path
    wheelhouse: Path
    sha256: str | None  # None: from a plain folder of wheels, so there is nothing to verify
    size: int | None
    requested: bool = False
    optional: bool = False
    replaces: str | None = None  # the installed version a directly requested upgrade replaces

    @property
    def verified(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Skip:
    """A wheel that is not installed, and why (already satisfied, unusable optional, ...)."""

    name: str
    version: str
    reason: str


@dataclass(frozen=True)
class InstallPlan:
    install: tuple[PlannedWheel, ...]
    skipped: tuple[Skip, ...]
    warnings: tuple[str, ...]
    wheelhouses: tuple[Wheelhouse, ...]  # those the plan draws on
    # "<path>: <why>" for wheelhouses left out (built for another Python, without a manifest)
    ignored: tuple[str, ...]
    # planned name -> the planned wheels it needs (from Requires-Dist), to re-check dependents
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.install

    def dependents(self, names: Iterable[str]) -> set[str]:
        """The planned wheels that need any of ``names``, directly or through each other."""
        found: set[str] = set()
        frontier = set(names)
        while frontier:
            frontier = {
                name
                for name, needs in self.requires.items()
                if name not in found and frontier.intersection(needs)
            }
            found |= frontier
        return found


def rebuild_hint(python: str) -> str:
    """The bundler command that makes a wheelhouse for a kernel running ``python``."""
    target = BUILTIN_TARGETS.get(python)
    if target:
        return f"python -m bundler build --target {target}"
    return (
        "python -m runtime profile -o kernel.json (in this kernel), then "
        "python -m bundler build --target kernel.json"
    )


def make_plan(
    wheelhouses: Sequence[Wheelhouse], interpreter: Interpreter, *, allow_unverified: bool = False
) -> InstallPlan:
    """Merge ``wheelhouses`` into one plan of what ``interpreter`` lacks; raise if it cannot be done.

    Folders of wheels without a manifest are planned from only with ``allow_unverified``;
    otherwise one named explicitly is an error and one found by a search is left out, warned.
    """
    usable, ignored = _usable_wheelhouses(wheelhouses, interpreter)
    planner = _Planner(interpreter)
    for wheelhouse in usable:
        planner.add_manifest(wheelhouse)
    plain = [w for w in wheelhouses if not w.verified]
    if not allow_unverified:
        for wheelhouse in plain:
            reason = (
                f"{wheelhouse.path}: {len(wheelhouse.plain_wheels)} wheel(s) without a "
                "manifest.json, so without hashes to check them against; not installed"
            )
            if wheelhouse.named:
                raise WheelhouseError(f"{reason}: {ALLOW_UNVERIFIED_HINT}")
            ignored.append(reason)
            planner.warnings.append(f"{reason} ({ALLOW_UNVERIFIED_HINT})")
        plain = []
    for wheelhouse in plain:
        planner.add_plain(wheelhouse)
    planner.decide()
    planner.check_assumed_preinstalled(usable)
    planner.check_dependencies()
    return InstallPlan(
        install=tuple(sorted(planner.install.values(), key=lambda wheel: wheel.name)),
        skipped=tuple(planner.skipped),
        warnings=tuple(planner.warnings),
        wheelhouses=tuple(usable) + tuple(plain),
        ignored=tuple(ignored),
        requires=planner.requires,
    )


def _usable_wheelhouses(
    wheelhouses: Sequence[Wheelhouse], interpreter: Interpreter
) -> tuple[list[Wheelhouse], list[str]]:
    """Manifest wheelhouses built for this Python; others are ignored, or fatal if none is left.

    One dataset may hold a wheelhouse per Python version, so a foreign one is only an error when
    no wheelhouse for this interpreter exists at all.
    """
    usable: list[Wheelhouse] = []
    foreign: list[tuple[Wheelhouse, str, str]] = []  # (wheelhouse, its Python, its profile)
    for wheelhouse in wheelhouses:
        if wheelhouse.manifest is None:
            continue
        target = wheelhouse.manifest.target
        if target.python_version == interpreter.python:
            usable.append(wheelhouse)
        else:
            foreign.append((wheelhouse, target.python_version, target.name))
    if foreign and not usable:
        wheelhouse, python, profile = foreign[0]
        raise WheelhouseError(
            f"{wheelhouse.path}: wheelhouse built for Python {python} (target profile "
            f"{profile!r}) but this kernel runs Python {interpreter.python}; rebuild it with "
            f"`{rebuild_hint(interpreter.python)}`"
        )
    ignored = [
        f"{w.path}: built for Python {python}, not {interpreter.python}" for w, python, _ in foreign
    ]
    return usable, ignored


@dataclass(frozen=True)
class _Candidate:
    entry: WheelEntry
    wheelhouse: Wheelhouse


class _Planner:
    """Accumulates candidates from every wheelhouse, then decides per package."""

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        self.candidates: dict[str, list[_Candidate]] = {}
        self.plain: dict[str, list[tuple[WheelName, Path, Wheelhouse]]] = {}
        self.install: dict[str, PlannedWheel] = {}
        self.skipped: list[Skip] = []
        self.warnings: list[str] = []
        self.dropped: dict[str, str] = {}  # optional wheels left out -> why
        self.requires: dict[str, tuple[str, ...]] = {}

    # -- collecting ---------------------------------------------------------------------------
    def add_manifest(self, wheelhouse: Wheelhouse) -> None:
        manifest = wheelhouse.manifest
        assert manifest is not None
        for entry in manifest.wheels:
            self.candidates.setdefault(entry.name, []).append(_Candidate(entry, wheelhouse))
        for missing in manifest.missing_optional:
            if self.interpreter.version_of(missing.name) is None:
                self.warnings.append(
                    f"optional {missing.name} is not installed and {wheelhouse.path} has no "
                    f"wheel for it: {missing.reason}"
                )

    def add_plain(self, wheelhouse: Wheelhouse) -> None:
        unparsable = []
        for path in wheelhouse.plain_wheels:
            parsed = WheelName.parse(path.name)
            if parsed is None:
                unparsable.append(path.name)
            else:
                self.plain.setdefault(parsed.name, []).append((parsed, path, wheelhouse))
        if unparsable:
            self.warnings.append(
                f"{wheelhouse.path}: ignored files that are not valid wheel names: "
                + ", ".join(unparsable)
            )

    # -- deciding -----------------------------------------------------------------------------
    def decide(self) -> None:
        for name in sorted(self.candidates):
            self._decide_verified(name, self.candidates[name])
        unverified = [
            name for name in sorted(self.plain) if name not in self.candidates
        ]  # a manifest's pinned wheel always beats an unverified one
        for name in unverified:
            self._decide_plain(name, self.plain[name])

    def _decide_verified(self, name: str, candidates: list[_Candidate]) -> None:
        if any(_is_own_wheel(c) for c in candidates):
            self._decide_own(name, candidates)
            return
        specifier = combine(c.entry.specifier for c in candidates)
        installed = self.interpreter.version_of(name)
        if installed is not None:
            if self._satisfies(installed, specifier, candidates):
                offered = candidates[0].entry.version
                if installed == offered:
                    reason = "already installed"
                else:
                    needs = f", which satisfies {specifier}" if specifier else ""
                    reason = f"this kernel has {installed}{needs}"
                self.skipped.append(Skip(name, offered, reason))
                return
            if not any(c.entry.upgrade_of for c in candidates):
                where = ", ".join(sorted({str(c.wheelhouse.path) for c in candidates}))
                raise PlanConflictError(
                    f"{name} {installed} is installed but {where} needs {name}{specifier}; "
                    "a kernel's own packages are only replaced when the wheelhouse was built "
                    "with that upgrade requested — rebuild it for this kernel "
                    "(python -m runtime profile -o kernel.json, then "
                    "python -m bundler build --target kernel.json)"
                )
        self._plan_candidate(name, self._choose(name, candidates, specifier), installed)

    def _decide_own(self, name: str, candidates: list[_Candidate]) -> None:
        """kaggle-offline's own wheel: the named wheelhouse's, else the newest; never a downgrade.

        Each own wheel pins its exact version, so the pins of wheelhouses built at different
        times are not combined (they would always disagree): one wheel is chosen instead.
        """
        named = [c for c in candidates if c.wheelhouse.named]
        chosen = named[0] if named else max(candidates, key=self._preference)
        offered = chosen.entry.version
        installed = self.interpreter.version_of(name)
        if installed is not None and same_version(installed, offered):
            self.skipped.append(Skip(name, offered, "already installed"))
            return
        if installed is not None and _sort_key(installed) > _sort_key(offered):
            self.skipped.append(Skip(name, offered, f"the newer {installed} installed is kept"))
            return
        self._plan_candidate(name, chosen, installed)

    def _plan_candidate(self, name: str, chosen: _Candidate, installed: str | None) -> None:
        entry, wheelhouse = chosen.entry, chosen.wheelhouse
        problem = self._incompatibility(entry.filename, entry.tags, entry.requires_python)
        source = wheelhouse.wheel_path(entry)
        if problem is None and source is None:
            problem = "missing from disk"
        if problem is not None:
            if entry.optional:
                self.warnings.append(
                    f"optional {name} {entry.version} skipped: {entry.filename} in "
                    f"{wheelhouse.path} is {problem}"
                )
                self.skipped.append(Skip(name, entry.version, f"optional, {problem}"))
                self.dropped[name] = problem
                return
            if source is None:
                assert wheelhouse.manifest is not None
                raise WheelhouseError(
                    f"{wheelhouse.path}: {entry.filename} is listed in manifest.json but missing "
                    f"from disk (looked in {wheelhouse.manifest.wheel_dir}/ and beside the "
                    "manifest); upload the whole wheelhouse folder again with `kaggle datasets create -p DIR --dir-mode zip` (without it Kaggle drops wheels/)"
                )
            raise WheelhouseError(
                f"{wheelhouse.path}: {entry.filename} is {problem}; "
                f"rebuild the wheelhouse with `{rebuild_hint(self.interpreter.python)}`"
            )
        assert source is not None  # no source is a problem, skipped or raised above
        self.install[name] = PlannedWheel(
            name=name,
            version=entry.version,
            filename=entry.filename,
            source=source,
            wheelhouse=wheelhouse.path,
            sha256=entry.sha256,
            size=entry.size,
            requested=entry.requested,
            optional=entry.optional,
            replaces=installed,
        )

    def _choose(self, name: str, candidates: list[_Candidate], specifier: str) -> _Candidate:
        """The newest candidate meeting every wheelhouse's specifier; one found on disk first."""
        fitting = [c for c in candidates if self._satisfies(c.entry.version, specifier, candidates)]
        if not fitting:
            offers = "; ".join(
                f"{c.wheelhouse.path} has {c.entry.version}"
                + (f" (needs {c.entry.specifier})" if c.entry.specifier else "")
                for c in candidates
            )
            if len({c.wheelhouse.path for c in candidates}) == 1:
                raise ManifestError(
                    f"{candidates[0].wheelhouse.path / 'manifest.json'}: {name} "
                    f"{candidates[0].entry.version} does not meet the manifest's own specifier "
                    f"{specifier!r}: an inconsistent manifest, rebuild the wheelhouse"
                )
            raise PlanConflictError(
                f"{name}: the wheelhouses disagree and no one version meets {specifier or 'them all'} "
                f"({offers}); attach only one of them or rebuild them as one wheelhouse"
            )
        return max(fitting, key=self._preference)

    @staticmethod
    def _preference(candidate: _Candidate) -> tuple[tuple[int, object], bool]:
        """Newest first; between equal versions, one whose file is on disk."""
        entry = candidate.entry
        return (_sort_key(entry.version), candidate.wheelhouse.wheel_path(entry) is not None)

    def _decide_plain(self, name: str, offers: list[tuple[WheelName, Path, Wheelhouse]]) -> None:
        newest = max((parsed.version for parsed, _, _ in offers), key=_sort_key)
        installed = self.interpreter.version_of(name)
        if installed is not None:
            self.skipped.append(
                Skip(name, newest, f"preinstalled: {installed} (unverified wheel not used)")
            )
            return
        fitting = [o for o in offers if not self.interpreter.tags.isdisjoint(o[0].tags)]
        if not fitting:
            self.warnings.append(
                f"{name}: no wheel in {offers[0][2].path} fits this interpreter "
                f"(Python {self.interpreter.python}); not installed"
            )
            self.skipped.append(Skip(name, newest, "unverified wheel does not fit this Python"))
            return
        parsed, path, wheelhouse = max(fitting, key=lambda o: _sort_key(o[0].version))
        self.install[name] = PlannedWheel(
            name=name,
            version=parsed.version,
            filename=path.name,
            source=path,
            wheelhouse=wheelhouse.path,
            sha256=None,
            size=None,
            requested=True,
        )

    def _incompatibility(
        self, filename: str, tags: Sequence[str], requires_python: str
    ) -> str | None:
        if requires_python and not satisfies(self.interpreter.python_full, requires_python):
            return f"for Python {requires_python}, not this Python {self.interpreter.python_full}"
        tags = tuple(tags) or (WheelName.parse(filename) or WheelName("", "", ())).tags
        if tags and self.interpreter.tags.isdisjoint(tags):
            return (
                f"built for {tags[0]}, which this Python {self.interpreter.python} cannot install"
            )
        return None

    def _satisfies(self, version: str, specifier: str, candidates: list[_Candidate]) -> bool:
        try:
            return satisfies(version, specifier)
        except ValueError:  # InvalidSpecifier subclasses ValueError in every packaging release
            origin = candidates[0].wheelhouse.path / "manifest.json"
            raise ManifestError(
                f"{origin}: invalid version specifier {specifier!r} for {candidates[0].entry.name}; "
                "rebuild the wheelhouse"
            ) from None

    # -- consistency of the whole -------------------------------------------------------------
    def check_assumed_preinstalled(self, wheelhouses: Sequence[Wheelhouse]) -> None:
        """The bundler left out what its target kernel had; this kernel must really have it."""
        for wheelhouse in wheelhouses:
            assert wheelhouse.manifest is not None
            for assumed in wheelhouse.manifest.skipped:
                if assumed.name in self.install:
                    continue
                installed = self.interpreter.version_of(assumed.name)
                if installed is not None and satisfies(installed, assumed.specifier):
                    continue
                has = f"has {installed}" if installed else "does not have it"
                message = (
                    f"{wheelhouse.path} expects this kernel to have {assumed.name} "
                    f"{assumed.specifier or assumed.installed_version} preinstalled, but it {has}"
                )
                dependents = sorted(set(assumed.required_by) & set(self.install))
                if dependents:
                    raise PlanConflictError(
                        f"{message}; {', '.join(dependents)} need(s) it — rebuild the wheelhouse "
                        "for this kernel (python -m runtime profile -o kernel.json, then "
                        "python -m bundler build --target kernel.json)"
                    )
                self.warnings.append(message)

    def check_dependencies(self) -> None:
        """Every planned wheel's own requirements are met by the kernel or by the plan.

        pip runs with --no-deps, so this is the only place a hole in the wheelhouse shows up.
        An optional wheel that is left out for a hole of its own takes back the promise it made
        to the wheels that need it, so the check runs again until nothing more is left out.
        """
        requires = {
            name: c.entry.requires_dist
            for name, wheel in self.install.items()
            if wheel.verified
            for c in self.candidates[name]
            if c.entry.version == wheel.version and c.entry.requires_dist
        }
        if not requires:
            return
        markers = {**marker_environment(), "python_full_version": self.interpreter.python_full}
        needs = {name: dependencies(lines, markers) for name, lines in requires.items()}
        settled = False
        while not settled:
            settled = True
            for name in sorted(needs):
                if name in self.install and (problem := self._unmet(name, needs[name])):
                    wheel = self.install[name]
                    if not wheel.optional:
                        raise WheelhouseError(f"{problem}; rebuild the wheelhouse with it included")
                    self.warnings.append(f"optional {name} skipped: {problem}")
                    self.skipped.append(Skip(name, wheel.version, f"optional, {problem}"))
                    self.dropped[name] = problem
                    del self.install[name]
                    settled = False
        self.requires = {
            name: tuple(dependency for dependency, _ in needs[name] if dependency in self.install)
            for name in needs
            if name in self.install
        }

    def _unmet(self, name: str, needs: Sequence[tuple[str, str]]) -> str | None:
        for dependency, specifier in needs:
            planned = self.install.get(dependency)
            have = planned.version if planned else self.interpreter.version_of(dependency)
            if have is not None and satisfies(have, specifier):
                continue
            wheel = self.install[name]
            if dependency in self.dropped:
                why = f"optional {dependency} was left out ({self.dropped[dependency]})"
            else:
                why = f"{'only ' + have + ' is' if have else 'nothing is'} installed or vendored"
            return (
                f"{name} {wheel.version} from {wheel.wheelhouse} needs {dependency}{specifier}, "
                f"but {why}"
            )
        return None


def _is_own_wheel(candidate: _Candidate) -> bool:
    manifest = candidate.wheelhouse.manifest
    return manifest is not None and manifest.self_wheel == candidate.entry.filename


def _sort_key(version: str) -> tuple[int, object]:
    parsed = parse_version(version)
    # Unparsable legacy versions sort below every PEP 440 one instead of crashing the comparison.
    return (1, parsed) if parsed is not None else (0, version)
