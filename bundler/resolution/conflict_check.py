"""Say the kernel conflict fast, and the choices, before pip's resolver starts to backtrack.

Runs :mod:`bundler.resolution.release_probe` in the shim (pip's finder, the target's tags and markers) on the
top-level requests, then either lets the build go on (no conflict; or ``--keep-kernel``, which
pins the newest release that keeps the kernel) or raises :class:`KernelConflictError` naming the
conflict and both ways out with their sizes. Projects that ship compiled wheels get
``--only-binary`` so that no backtracking ever builds one of their old sdists.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from bundler.errors import KernelConflictError, PipVersionError, ResolutionError
from bundler.resolution.kernel_fit import FitLimits, ProjectFit
from bundler.resolution.preinstalled import pinned_by_kernel
from bundler.resolution.resolve import IndexSettings, ResolverOptions, run_shim
from bundler.resolution.wheels import python_full_version
from runtime.contract.profile import TargetProfile, canonical_name


@dataclass(frozen=True)
class FitDecision:
    """What the build does with the check's answer."""

    fits: tuple[ProjectFit, ...]
    constraints: tuple[str, ...] = ()  # ``vllm==0.10.1`` for --keep-kernel
    only_binary: tuple[str, ...] = ()  # projects with compiled wheels: never build their sdists
    notes: tuple[str, ...] = ()  # what was decided, for the log and a dry run


def size_text(count: int | None) -> str:
    if count is None:
        return "size unknown"
    if count >= 1e9:
        return f"{count / 1e9:.2f} GB"
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def check_fit(
    requirements: Sequence[str],
    profile: TargetProfile,
    pins: Mapping[str, str],
    *,
    index: IndexSettings,
    options: ResolverOptions,
    limits: FitLimits,
    keep_kernel: bool,
    log: Callable[[str], None] = lambda line: None,
    verbose: bool = False,
) -> FitDecision:
    """Check the newest release of each requirement against ``pins``; raise or decide."""
    fits = probe(
        requirements, profile, pins, index=index, options=options, limits=limits,
        progress="lines" if verbose else "none",
    )  # fmt: skip
    constraints: list[str] = []
    notes: list[str] = []
    only_binary = tuple(sorted(fit.name for fit in fits if fit.compiled))
    for fit in fits:
        if not fit.conflicts:
            continue
        if keep_kernel and fit.keeps is not None:
            constraints.append(f"{fit.name}=={fit.keeps}")
            notes.append(
                f"{fit.conflicts[0].describe()}; --keep-kernel: bundling {fit.name} {fit.keeps}, "
                "the newest release that keeps the kernel"
            )
            log(notes[-1])
            continue
        raise KernelConflictError(conflict_message(fit, profile))
    return FitDecision(tuple(fits), tuple(constraints), only_binary, tuple(notes))


_SHOWN = 4  # conflicts, flags and replaced packages named in full before "and N more"


def _some(items: Sequence[str], shown: int = _SHOWN) -> str:
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def conflict_message(fit: ProjectFit, profile: TargetProfile) -> str:
    """One line: the conflict with its chain, then the choices and what each costs."""
    first = fit.conflicts[0]
    others = [f"{c.name}{c.specifier}" for c in fit.conflicts[1:]]
    more = f" (and {_some(others)})" if others else ""
    chain = f"<user> -> {fit.name} {fit.newest} -> {first.name}"
    choices = []
    if fit.keeps is not None:
        choices.append(
            f"the newest release that keeps the kernel, {fit.name} {fit.keeps} "
            f"({size_text(fit.keeps_size)}): ask for {fit.name}=={fit.keeps} or add --keep-kernel"
        )
    else:
        choices.append(f"no older release keeps the kernel ({fit.stopped})")
    names = list(dict.fromkeys(c.name for c in fit.conflicts if not c.unavailable))
    # torchvision, which pins torch in the kernel, moves with torch: --allow-replace torch is
    # the whole choice.
    pinning = pinned_by_kernel(profile)
    names = [n for n in names if not any(n in pinning.get(m, ()) for m in names if m != n)]
    if not names:
        blocked = _some([f"{c.name}{c.specifier}" for c in fit.conflicts])
        return (
            f"{first.describe()} ({chain}) on {profile.name}, so no --allow-replace can bundle "
            f"{fit.name} {fit.newest} ({blocked} lack a wheel); choices: " + choices[0]
        )
    if len(names) <= _SHOWN:
        flags = " ".join(f"--allow-replace {name}" for name in names)
    else:
        flags = f"--allow-replace for each of {len(names)} kernel packages ({_some(names)})"
    if fit.replace is not None and fit.replace.wheels:
        # torch's family is five or six packages: name them all.
        moved = _some([f"{n} {k} -> {v}" for n, k, v, _ in fit.replace.wheels], shown=6)
        unknown = (
            f", and {', '.join(fit.replace.unknown)} (no matching release found)"
            if fit.replace.unknown
            else ""
        )
        total = fit.replace.size + (fit.newest_size or 0)
        choices.append(
            f"{flags} to bundle {fit.name} {fit.newest}, which replaces {moved}{unknown} "
            f"({len(fit.replace.wheels) + 1} wheels, about {size_text(total)} to download "
            "with them)"
        )
    else:
        choices.append(f"{flags} to bundle {fit.name} {fit.newest}")
    missing = [f"{c.name}{c.specifier}" for c in fit.conflicts if c.unavailable]
    if missing:
        choices[-1] += f" (but it also needs {_some(missing)}, which no wheel for the target has)"
    return f"{first.describe()}{more} ({chain}) on {profile.name}; choices: " + "; or ".join(
        choices
    )


def probe(
    requirements: Sequence[str],
    profile: TargetProfile,
    pins: Mapping[str, str],
    *,
    index: IndexSettings,
    options: ResolverOptions,
    limits: FitLimits,
    progress: str = "none",
) -> list[ProjectFit]:
    """The probe's answer for each requirement (run in the shim's subprocess); with ``progress``
    other than "none", the probe's progress lines go to this process's stderr."""
    requests = [text for text in requirements if _is_named(text, profile)]
    if not requests:
        return []
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-probe-") as scratch:
        scratch_dir = Path(scratch)
        result_path = scratch_dir / "probe.json"
        spec = {
            "mode": "probe",
            "markers": dict(profile.markers),
            "tags": list(profile.tags),
            "python_full_version": python_full_version(profile),
            "requests": requests,
            "pins": dict(pins),
            "kernel": dict(profile.preinstalled),
            "pinned_by_kernel": pinned_by_kernel(profile),
            "limits": {
                "max_releases": limits.max_releases,
                "seconds": limits.seconds,
                "pre": limits.pre or options.pre,
            },
            "result": str(result_path),
        }
        completed = run_shim(
            spec, scratch_dir, [*index.pip_args(), *options.pip_args()], index, progress=progress
        )
        try:
            data = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lines = (completed.stderr or "").strip().splitlines() or ["(see above)"]
            detail = lines[-1] if lines else f"exit status {completed.returncode}"
            if "cannot patch pip" in detail:
                raise PipVersionError(detail) from None
            raise ResolutionError(
                f"reading the releases of {', '.join(requests)} failed ({detail})"
            ) from None
    return [ProjectFit.from_dict(item) for item in data["fits"]]


def _is_named(text: str, profile: TargetProfile) -> bool:
    """A ``name[extras] specifier`` for the target (URLs and paths are pip's alone to resolve)."""
    try:
        requirement = Requirement(text)
    except ValueError:
        return False
    if requirement.marker is not None and not requirement.marker.evaluate(
        {**profile.markers, "extra": ""}
    ):
        return False
    return requirement.url is None and bool(canonical_name(requirement.name))
