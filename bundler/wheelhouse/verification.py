"""``verify(DIR)``: is this wheelhouse complete, untampered and right for its target?

Checks, each reported as one line: the manifest loads; a ``target`` other than the manifest's
runs the same Python (the kernel refuses a wheelhouse built for another one); every wheel is on
disk with its sha256 and size; no stray or duplicate wheels; each wheel's tags and Requires-Python
fit the target (read from the files, not the manifest); the dependency closure is complete for the
target (every Requires-Dist that applies under the target's markers and the requested extras is
met by a wheel in the house, a preinstalled distribution or a recorded missing optional); the lock
file pins the same hashes; bootstrap.py is there; dataset-metadata.json is valid for
``kaggle datasets create``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from bundler.kaggle.dataset import FILENAME as DATASET_FILENAME
from bundler.kaggle.dataset import metadata_problems, top_level_problems
from bundler.resolution.profiles import get_profile
from bundler.resolution.wheels import (
    WheelInfo,
    describe_target,
    fits_python,
    fits_tags,
    python_full_version,
    read_wheel,
)
from bundler.wheelhouse.output import BOOTSTRAP_FILENAME, LOCK_FILENAME
from runtime.contract.errors import KaggleOfflineError
from runtime.contract.files import load_json, sha256_file
from runtime.contract.manifest import MANIFEST_FILENAME, Manifest, locate_wheel
from runtime.contract.profile import TargetProfile, canonical_name

_USER = "the requested requirements"


def verify(
    wheelhouse: Path,
    target: TargetProfile | str | None = None,
    *,
    known_hashes: Mapping[Path, str] | None = None,
) -> list[str]:
    """Every problem found in ``wheelhouse``, one line each; an empty list means it is sound.

    ``known_hashes`` (path -> sha256) are wheels the caller has just written and hashed (``build``
    hashes each copy as it writes it); they are not read a second time.
    """
    known = known_hashes or {}
    wheelhouse = Path(wheelhouse)
    try:
        manifest = Manifest.load(wheelhouse / MANIFEST_FILENAME)
        profile = (
            manifest.target
            if target is None
            else target
            if isinstance(target, TargetProfile)
            else get_profile(target)
        )
    except KaggleOfflineError as error:
        return [str(error)]
    problems = _python_problems(wheelhouse, manifest.target, profile, target)
    infos: dict[str, WheelInfo] = {}
    for entry in manifest.wheels:
        path = locate_wheel(wheelhouse, manifest, entry)
        if path is None:
            problems.append(f"{entry.filename}: listed in the manifest but missing from the folder")
            continue
        size = path.stat().st_size
        digest = known.get(path) or sha256_file(path)
        if digest != entry.sha256:
            problems.append(
                f"{path}: sha256 {digest} differs from the manifest's {entry.sha256} "
                "(tampered or truncated; rebuild the wheelhouse)"
            )
            continue
        if size != entry.size:
            problems.append(f"{path}: {size} bytes, the manifest says {entry.size}")
        try:
            info = read_wheel(path)
        except KaggleOfflineError as error:
            problems.append(str(error))
            continue
        infos[entry.name] = info
        if info.name != entry.name or info.version != entry.version:
            problems.append(
                f"{path}: is {info.name} {info.version}, the manifest says "
                f"{entry.name} {entry.version}"
            )
        if not fits_tags(info.tags, profile):
            problems.append(
                f"{path.name}: its tags ({', '.join(info.tags)}) do not fit "
                f"{describe_target(profile)}"
            )
        if not fits_python(info.requires_python, profile):
            problems.append(
                f"{path.name}: requires Python {info.requires_python}, {profile.name} has "
                f"{python_full_version(profile)}"
            )
    # A wheel already reported above stands in by its manifest entry, so one bad file is one
    # problem, not a cascade of closure errors.
    for entry in manifest.wheels:
        infos.setdefault(
            entry.name,
            WheelInfo(
                entry.name, entry.version, entry.tags, entry.requires_python, entry.requires_dist
            ),
        )
    problems += _stray_and_duplicate_wheels(wheelhouse, manifest)
    problems += _closure_problems(manifest, infos, profile)
    problems += _lock_problems(wheelhouse, manifest)
    if not (wheelhouse / BOOTSTRAP_FILENAME).is_file():
        problems.append(f"{wheelhouse / BOOTSTRAP_FILENAME}: missing (rebuild the wheelhouse)")
    problems += _dataset_problems(wheelhouse)
    return problems


def _python_problems(
    wheelhouse: Path,
    built_for: TargetProfile,
    profile: TargetProfile,
    target: TargetProfile | str | None,
) -> list[str]:
    """A target of another Python than the wheelhouse's own, which the kernel side refuses.

    runtime/plan.py installs only a wheelhouse built for its own Python, so wheels that happen to
    fit another target (pure-Python ones do) do not make the wheelhouse usable there.
    """
    if built_for.python_version == profile.python_version:
        return []
    hint = target if isinstance(target, str) else profile.name
    return [
        f"{wheelhouse}: built for Python {built_for.python_version} (profile {built_for.name}) "
        f"but the target is Python {profile.python_version} ({profile.name}); the runtime will "
        f"refuse it: rebuild with --target {hint}"
    ]


def _stray_and_duplicate_wheels(wheelhouse: Path, manifest: Manifest) -> list[str]:
    listed = {entry.filename for entry in manifest.wheels}
    problems: list[str] = []
    versions: dict[str, set[str]] = {}
    for folder in (wheelhouse / manifest.wheel_dir, wheelhouse):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.whl")):
            try:
                name, version, _, _ = parse_wheel_filename(path.name)
            except InvalidWheelFilename:
                problems.append(f"{path}: not a valid wheel filename")
                continue
            versions.setdefault(canonical_name(str(name)), set()).add(str(version))
            if path.name not in listed:
                problems.append(f"{path}: not in the manifest (a stray wheel; delete it)")
    for name, found in sorted(versions.items()):
        if len(found) > 1:
            problems.append(
                f"{name}: {len(found)} versions in the folder ({', '.join(sorted(found))}); "
                "a wheelhouse holds one version per package"
            )
    return problems


def _closure_problems(
    manifest: Manifest, infos: Mapping[str, WheelInfo], profile: TargetProfile
) -> list[str]:
    environment = dict(profile.markers)
    missing_optional = {entry.name for entry in manifest.missing_optional}
    problems: list[str] = []
    roots: list[tuple[str, str, tuple[str, ...]]] = [
        (text, _USER, ()) for text in manifest.requested
    ]
    # Every wheel's own dependencies must be met too, even one nothing requested (our own wheel).
    for name, info in infos.items():
        roots += [(dep, f"{name} {info.version}", ()) for dep in info.requires_dist]
    queue = deque(roots)
    expanded: set[tuple[str, frozenset[str]]] = set()
    reported: set[tuple[str, str]] = set()
    while queue:
        text, required_by, parent_extras = queue.popleft()
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            problems.append(f"{required_by}: requirement {text!r} is not valid")
            continue
        if not _applies(requirement, environment, parent_extras):
            continue
        name = canonical_name(requirement.name)
        problem = _unmet(requirement, name, infos, profile, missing_optional)
        if problem and (name, required_by) not in reported:
            reported.add((name, required_by))
            problems.append(f"closure: {required_by} requires {requirement}, {problem}")
            continue
        info = infos.get(name)
        key = (name, frozenset(requirement.extras))
        if info is None or key in expanded:
            continue
        expanded.add(key)
        extras = tuple(sorted(requirement.extras))
        queue.extend((dep, f"{name} {info.version}", extras) for dep in info.requires_dist)
    return problems


def _applies(
    requirement: Requirement, environment: Mapping[str, str], extras: Iterable[str]
) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": e}) for e in ("", *extras))


def _unmet(
    requirement: Requirement,
    name: str,
    infos: Mapping[str, WheelInfo],
    profile: TargetProfile,
    missing_optional: set[str],
) -> str | None:
    if name in infos:
        version = infos[name].version
        if requirement.specifier.contains(version, prereleases=True):
            return None
        return f"but the wheelhouse has {name} {version}"
    installed = profile.preinstalled_version(name)
    if installed is not None:
        if requirement.specifier.contains(installed, prereleases=True):
            return None
        return f"but {profile.name} has {name} {installed} preinstalled and no wheel replaces it"
    if name in missing_optional:
        return None
    return f"but neither the wheelhouse nor {profile.name} has {name}"


def _lock_problems(wheelhouse: Path, manifest: Manifest) -> list[str]:
    path = wheelhouse / LOCK_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return [f"{path}: missing (rebuild the wheelhouse)"]
    problems = []
    for entry in manifest.wheels:
        pin = f"{entry.name}=={entry.version} \\\n    --hash=sha256:{entry.sha256}"
        if pin not in text:
            problems.append(f"{path}: no pin with the manifest's hash for {entry.filename}")
    return problems


def _dataset_problems(wheelhouse: Path) -> list[str]:
    path = wheelhouse / DATASET_FILENAME
    if not path.exists():
        return [f"{path}: missing (rebuild the wheelhouse)"]
    try:
        # The one reader of every document (a BOM, a nesting too deep to parse: one line).
        data = load_json(path, kind="dataset metadata", error=KaggleOfflineError)
    except KaggleOfflineError as error:
        return [str(error)]
    if not isinstance(data, dict):
        return [f"{path}: must be a JSON object"]
    return metadata_problems(data) + top_level_problems(wheelhouse)
