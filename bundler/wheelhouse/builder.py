"""``build()``: requirements + a target profile -> a verified wheelhouse folder.

Steps: resolve for the target (pip, through the shim, with the kernel's versions as constraints)
unless a cached resolution for exactly these inputs exists; check every replacement of a kernel
package against the kernel's own packages; fetch every file into the sha256-keyed store through
pip's transport (resuming partial downloads); build pure-Python sdists into wheels; place the
wheels in ``DIR/wheels`` (removing stale ones), write the manifest, lock, bootstrap and dataset
metadata, and verify the result. A second build with the same inputs runs no pip process and
downloads nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec

from packaging.requirements import Requirement

from bundler.blobs import BlobStore
from bundler.errors import (
    BundlerError,
    NoWheelForTargetError,
    ResolutionError,
    WheelhouseSizeError,
)
from bundler.kaggle import dataset
from bundler.kaggle.size_limits import SizeLimits, check_sizes
from bundler.resolution import resolve
from bundler.resolution.bundle_plan import (
    BundledWheel,
    BundlePlan,
    chains_to,
    make_bundle_plan,
    parse_requirements,
    with_built_wheel,
)
from bundler.resolution.conflict_check import FitDecision, check_fit
from bundler.resolution.kernel_fit import (
    DEFAULT_MAX_RELEASES,
    DEFAULT_PROBE_SECONDS,
    FitLimits,
)
from bundler.resolution.preinstalled import Replacement, check_replacements, kernel_pins, listed
from bundler.resolution.profiles import get_profile, unconfirmed_reason
from bundler.resolution.requirement_files import RequirementLine, read_requirement_files
from bundler.resolution.resolve import IndexSettings, Resolution, ResolvedItem, ResolverOptions
from bundler.resolution.wheels import (
    describe_target,
    fits_python,
    fits_tags,
    python_full_version,
    read_wheel,
    wheel_tags,
)
from bundler.wheelhouse import updates
from bundler.wheelhouse.downloads import Fetch, fetch_all, file_sizes, progress_mode
from bundler.wheelhouse.output import (
    OWN_ENTRIES,
    check_not_foreign,
    check_output_dir,
    foreign_entries,
    shown_names,
    sync_wheels,
    write_wheelhouse_files,
)
from bundler.wheelhouse.places import check_place, naming_a_full_place
from bundler.wheelhouse.sdists import build_wheel_from_sdist
from bundler.wheelhouse.self_wheel import own_wheel
from runtime import __version__
from runtime.contract.files import write_json_atomically
from runtime.contract.manifest import Manifest, MissingOptional, WheelEntry
from runtime.contract.profile import TargetProfile, canonical_name

_PLAN_FORMAT = 2
# pip's resolver gets this long (seconds) before it is stopped and says what it was doing.
DEFAULT_RESOLVE_TIMEOUT = 600.0


@dataclass(frozen=True)
class _FitSettings:
    keep_kernel: bool = False
    max_releases: int = DEFAULT_MAX_RELEASES
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    output_dir: Path
    downloaded: tuple[str, ...]  # files fetched from an index in this run (by pip or by us)
    reused: tuple[str, ...]  # wheels taken from the cache or already in DIR/wheels
    removed: tuple[str, ...]  # stale wheels deleted from DIR/wheels
    seconds: float
    resolved: bool = True  # False: the cached resolution was used and no pip process ran
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    built: tuple[str, ...] = ()  # wheels built from sdists in this run
    warnings: tuple[str, ...] = field(default_factory=tuple)
    replacements: tuple[Replacement, ...] = ()  # kernel packages this wheelhouse replaces
    problems: tuple[str, ...] = ()  # what verify() found in the finished folder
    previous: updates.PreviousBuild | None = None  # the build this one replaced in output_dir
    dataset_id: str = ""  # the id written to dataset-metadata.json
    dry_run: bool = False  # nothing was downloaded or written; sizes are the index's
    planned_bytes: int = 0  # bytes of every wheel of the wheelhouse (what a dry run would fetch)
    to_download_bytes: int = 0  # of those, the bytes not already in the cache
    unknown_sizes: tuple[str, ...] = ()  # files whose size the index did not say
    notes: tuple[str, ...] = ()  # decisions taken on the way (--keep-kernel's release)
    sdists: tuple[str, ...] = ()  # in a dry run: sdists a real build would turn into wheels
    # The same wheels (byte for byte), title and licence as the previous build for this id:
    # there is nothing to upload.
    unchanged: bool = False


_P = ParamSpec("_P")


def default_cache_dir() -> Path:
    configured = os.environ.get("KAGGLE_OFFLINE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaggle-offline"


def _naming_full_places(function: Callable[_P, BuildResult]) -> Callable[_P, BuildResult]:
    """A disk that fills up during the build is one line naming the place, not a traceback."""

    @functools.wraps(function)
    def build(*args: _P.args, **kwargs: _P.kwargs) -> BuildResult:
        output_dir = Path(str(args[1] if len(args) > 1 else kwargs["output_dir"]))
        cache = Path(str(kwargs.get("cache_dir") or default_cache_dir()))
        with naming_a_full_place({output_dir: "-o", cache: "the download cache"}):
            return function(*args, **kwargs)

    return build


@_naming_full_places
def build(
    requirements: Sequence[str],
    output_dir: Path,
    *,
    target: TargetProfile | str = "kaggle-py312",
    requirement_files: Sequence[Path] = (),
    constraint_files: Sequence[Path] = (),
    optional: Sequence[str] = (),
    allow_replace: Sequence[str] = (),
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    pre: bool = False,
    dataset_id: str | None = None,
    title: str | None = None,
    licence: str | None = None,
    include_self: bool | Path = True,
    cache_dir: Path | None = None,
    refresh: bool = False,
    log: Callable[[str], None] | None = None,
    dry_run: bool = False,
    keep_kernel: bool = False,
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
    max_releases: int = DEFAULT_MAX_RELEASES,
    size_limits: SizeLimits | None = None,
) -> BuildResult:
    """Resolve ``requirements`` for ``target`` and write a wheelhouse to ``output_dir``.

    ``dry_run`` resolves fully and reports what would be vendored, skipped and replaced, with
    the sizes the index gives, and downloads and writes nothing (as ``pip install --dry-run
    --report``). ``keep_kernel`` bundles, for a request whose newest release needs another
    version of a kernel package, the newest release that keeps the kernel (looked for among
    ``max_releases`` releases with a wheel for the target). ``resolve_timeout`` bounds pip's
    resolver (seconds). ``size_limits`` are checked on the resolved sizes before downloading.
    """
    started = time.perf_counter()
    say = log or (lambda line: None)
    profile = target if isinstance(target, TargetProfile) else get_profile(target)
    output_dir = Path(output_dir)
    if not dry_run:
        check_output_dir(output_dir)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_place(cache_root, "--cache-dir (or KAGGLE_OFFLINE_CACHE)")
    store = BlobStore(cache_root / "blobs")
    files = read_requirement_files(requirement_files, constraint_files)
    index = IndexSettings(
        files.index_url if files.index_url is not None else index_url,
        tuple(extra_index_urls) + tuple(files.extra_index_urls),
        tuple(find_links) + tuple(files.find_links),
        no_index=files.no_index,
        trusted_hosts=tuple(files.trusted_hosts),
    )
    options = ResolverOptions(
        pre=pre or files.pre, only_binary=tuple(files.only_binary), no_binary=tuple(files.no_binary)
    )
    optional_names = sorted({canonical_name(name) for name in optional})
    lines = _requested_lines(requirements, files.requirements, optional_names)
    if not lines and include_self is False:
        # A wheelhouse of only our own wheel is useful (the runtime alone); an empty one is not.
        raise BundlerError("nothing to bundle: give requirements, -r FILE or --optional NAME")
    # A rebuild into the same folder goes to the same dataset unless told otherwise.
    previous = updates.previous_build(output_dir)
    if previous is None:
        check_not_foreign(output_dir)  # everything in -o is uploaded: never a folder of others'
    if previous is not None and dataset_id in (None, previous.dataset_id):
        dataset_id = previous.dataset_id
        title = title or previous.title
        licence = licence or previous.licence
    licence = licence or dataset.DEFAULT_LICENCE
    # Every input that can be refused without the index is checked here, before resolving and
    # downloading (minutes, gigabytes) make a typo expensive.
    dataset.check_id_and_title(profile.name, dataset_id, title, licence)
    if not dry_run:
        dataset.check_top_level_count(output_dir, OWN_ENTRIES)
    allowed = sorted({canonical_name(name) for name in allow_replace})
    kernel_pins(profile, [], allowed)  # an --allow-replace naming no kernel package
    # A dry run adds kaggle-offline's own wheel to nothing: building it is not a dry run's job.
    self_entry = None if dry_run else _own_entry(include_self, cache_root, store, profile, say)
    warnings = [reason] if (reason := unconfirmed_reason(profile)) else []
    if previous is not None and (foreign := foreign_entries(output_dir)):
        warnings.append(
            f"{output_dir} also holds {shown_names(foreign)}, which the upload would carry too"
        )

    constraints = [line.text for line in files.constraints]
    fit = _FitSettings(keep_kernel, max_releases, resolve_timeout)
    key = _resolution_key(lines, optional_names, profile, index, constraints, allowed, options, fit)
    session = _Session(
        profile, index, store, cache_root, optional_names, say,
        constraints=constraints, allow_replace=allowed, options=options,
        progress=progress_mode(log), fit=fit, size_limits=size_limits or SizeLimits(),
        where=f"{output_dir} ({profile.name})",
    )  # fmt: skip
    if dry_run:
        return _dry_run_result(session, lines, output_dir, warnings, previous, started)
    plan = _stored_plan(session, lines, cache_root / "plans" / f"{key}.json", refresh=refresh)
    _check_plan_fits(plan, profile)
    for replacement in plan.replacements:
        if replacement.breaks:
            shown = listed(replacement.breaks, rest=" (manifest.json lists them)")
            warnings.append(f"replacing {replacement.describe()} (--allow-replace) breaks {shown}")

    entries = [_entry(wheel, store) for wheel in plan.wheels]
    self_filename = None
    if self_entry is not None:
        entries = [entry for entry in entries if entry.name != self_entry.name] + [self_entry]
        self_filename = self_entry.filename

    sync = sync_wheels(output_dir, [(entry.filename, entry.sha256) for entry in entries], store)
    manifest = Manifest(
        target=profile,
        requested=tuple(line.text for line in lines),
        wheels=tuple(entries),
        skipped=tuple(plan.skipped),
        missing_optional=tuple(plan.missing_optional),
        optional=tuple(optional_names),
        self_wheel=self_filename,
        tool_version=__version__,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        extra=_replacement_extra(plan.replacements, {e.name: e.size for e in entries}),
    )
    metadata = dataset.dataset_metadata(
        profile.name, dataset_id, title, _summary_line(manifest), licence
    )
    manifest = write_wheelhouse_files(output_dir, manifest, metadata)
    from bundler.wheelhouse.verification import verify

    problems = verify(output_dir, known_hashes=sync.hashes)

    downloaded = [e.filename for e in entries if e.sha256 in session.downloaded_hashes]
    downloaded += session.downloaded_other
    reused = [e.filename for e in entries if e.sha256 not in session.downloaded_hashes]
    sizes = {entry.sha256: entry.size for entry in entries}
    return BuildResult(
        manifest=manifest,
        output_dir=output_dir,
        downloaded=tuple(downloaded),
        reused=tuple(reused),
        removed=tuple(sync.removed),
        seconds=time.perf_counter() - started,
        resolved=session.resolutions > 0,
        downloaded_bytes=session.downloaded_bytes,
        reused_bytes=sum(sizes[e.sha256] for e in entries if e.filename in reused),
        built=tuple(session.built),
        warnings=tuple(warnings),
        replacements=tuple(plan.replacements),
        problems=tuple(problems),
        previous=previous,
        dataset_id=str(metadata["id"]),
        planned_bytes=sum(entry.size for entry in entries),
        notes=tuple(session.notes),
        unchanged=previous is not None
        and previous.dataset_id == metadata["id"]
        and updates.unchanged_since(
            previous, {e.name: e.sha256 for e in entries}, str(metadata["title"]), licence
        ),
    )


def _dry_run_result(
    session: _Session,
    lines: Sequence[RequirementLine],
    output_dir: Path,
    warnings: list[str],
    previous: updates.PreviousBuild | None,
    started: float,
) -> BuildResult:
    """What a build would vendor, skip and replace, with sizes: nothing fetched or written."""
    plan, items, sizes = session.dry_plan(lines)
    plan = _pin_replacements(plan)
    try:
        by_file = {item.filename: sizes.get(item.name) for item in items}
        check_sizes(by_file, session.size_limits, session.where)
    except WheelhouseSizeError as error:
        warnings.append(f"a real build would stop here: {error}")
    in_store = {item.name for item in items if item.sha256 and session.store.has(item.sha256)}
    wheels = [wheel for wheel in plan.wheels if wheel.filename.endswith(".whl")]
    entries = tuple(
        _wheel_entry(wheel, wheel.sha256 or "", sizes.get(wheel.name) or 0) for wheel in wheels
    )
    manifest = Manifest(
        target=session.profile,
        requested=tuple(line.text for line in lines),
        wheels=entries,
        skipped=tuple(plan.skipped),
        missing_optional=tuple(plan.missing_optional),
        optional=tuple(sorted(session.optional_names)),
        self_wheel=None,
        tool_version=__version__,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        extra=_replacement_extra(plan.replacements, sizes),
    )
    known = {name: size for name, size in sizes.items() if size is not None}
    return BuildResult(
        manifest=manifest,
        output_dir=output_dir,
        downloaded=(),
        reused=tuple(item.filename for item in items if item.name in in_store),
        removed=(),
        seconds=time.perf_counter() - started,
        resolved=True,
        warnings=tuple(warnings),
        replacements=tuple(plan.replacements),
        previous=previous,
        dry_run=True,
        planned_bytes=sum(known.values()),
        to_download_bytes=sum(size for name, size in known.items() if name not in in_store),
        unknown_sizes=tuple(
            sorted(item.filename for item in items if sizes.get(item.name) is None)
        ),
        notes=tuple(session.notes),
        sdists=tuple(
            wheel.filename for wheel in plan.wheels if not wheel.filename.endswith(".whl")
        ),
    )


def _pin_replacements(plan: BundlePlan) -> BundlePlan:
    """A wheel that replaces a kernel package says exactly which version it must be: the
    installer replaces a kernel version only where it does not satisfy the specifier (a
    companion such as torchaudio is requested bare, which the kernel's own would satisfy)."""
    wheels = [
        replace(wheel, specifier=f"=={wheel.version}")
        if wheel.upgrade_of is not None and not wheel.specifier
        else wheel
        for wheel in plan.wheels
    ]
    return replace(plan, wheels=wheels)


def _replacement_extra(
    replacements: Sequence[Replacement], sizes: Mapping[str, int | None]
) -> dict[str, Any]:
    """The manifest's record of the kernel packages replaced, each with its wheel's size."""
    if not replacements:
        return {}
    sized = [replace(r, size=sizes.get(r.name, r.size)) for r in replacements]
    return {
        "replacements": [r.to_dict() for r in sized],
        "replacement_bytes": sum(r.size or 0 for r in sized),
    }


def _requested_lines(
    requirements: Sequence[str],
    from_files: Sequence[RequirementLine],
    optional_names: Sequence[str],
) -> list[RequirementLine]:
    lines = [RequirementLine(text.strip()) for text in requirements if text.strip()]
    lines += from_files
    named = {canonical_name(req.name) for req in parse_requirements(line.text for line in lines)}
    # An --optional NAME that no requirement names is a requirement of its own.
    lines += [
        RequirementLine(name, origin="--optional") for name in optional_names if name not in named
    ]
    return lines


def _resolution_key(
    lines: Sequence[RequirementLine],
    optional_names: Sequence[str],
    profile: TargetProfile,
    index: IndexSettings,
    constraints: Sequence[str],
    allow_replace: Sequence[str],
    options: ResolverOptions,
    fit: _FitSettings,
) -> str:
    inputs = {
        "keep_kernel": [fit.keep_kernel, fit.max_releases] if fit.keep_kernel else False,
        "plan_format": _PLAN_FORMAT,
        "tool": __version__,
        "pip": resolve.check_pip_version(),
        "requirements": [[line.text, list(line.hashes)] for line in lines],
        "constraints": list(constraints),
        "allow_replace": list(allow_replace),
        "options": [options.pre, list(options.only_binary), list(options.no_binary)],
        "optional": list(optional_names),
        "profile": profile.to_dict(),
        "index": index.cache_identity(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _stored_plan(
    session: _Session, lines: Sequence[RequirementLine], plan_path: Path, *, refresh: bool
) -> BundlePlan:
    """The cached resolution (or a new one), with every file it names whole in the store."""
    cached = None if refresh else _load_plan(plan_path)
    if cached is None:
        plan = session.plan(lines)
    else:
        session.log(
            f"using the cached resolution for {session.profile.name} ({plan_path.name[:12]})"
        )
        plan = cached
    # A file the store already had was not hashed when fetched: check it now, re-fetch if damaged.
    stored = session.ensure_stored(plan)
    if cached is None or stored is not plan:
        write_json_atomically(plan_path, {"format": _PLAN_FORMAT, "plan": stored.to_dict()})
    return stored


def _load_plan(path: Path) -> BundlePlan | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != _PLAN_FORMAT:
            return None
        return BundlePlan.from_dict(data["plan"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cached resolution, or a damaged one: resolve again


class _Session:
    """One build's work against the index: resolutions, downloads and sdist builds, counted."""

    def __init__(
        self,
        profile: TargetProfile,
        index: IndexSettings,
        store: BlobStore,
        cache_root: Path,
        optional_names: Sequence[str],
        log: Callable[[str], None],
        *,
        constraints: Sequence[str] = (),
        allow_replace: Sequence[str] = (),
        options: ResolverOptions | None = None,
        progress: str = "none",
        fit: _FitSettings | None = None,
        size_limits: SizeLimits | None = None,
        where: str = "the wheelhouse",
    ) -> None:
        self.fit = fit or _FitSettings()
        self.size_limits = size_limits or SizeLimits()
        self.where = where
        self.decision: FitDecision | None = None
        self.notes: list[str] = []
        self.profile = profile
        self.index = index
        self.store = store
        self.builds_dir = cache_root / "builds"
        self.optional_names = set(optional_names)
        self.log = log
        self.constraints = list(constraints)
        self.allow_replace = list(allow_replace)
        self.options = options or ResolverOptions()
        self.progress = progress
        self.resolutions = 0
        self.downloaded_hashes: set[str] = set()
        self.downloaded_other: list[str] = []  # sdists fetched to build a wheel
        self.downloaded_bytes = 0
        self.built: list[str] = []

    # --- resolving ---------------------------------------------------------------------------
    def _pins(self, lines: Sequence[RequirementLine]) -> Any:
        requested = parse_requirements(line.text for line in lines)
        return kernel_pins(self.profile, requested, self.allow_replace)

    def _check_fit(self, lines: Sequence[RequirementLine]) -> FitDecision:
        """Once per build, before pip: the newest releases against the kernel (see
        :mod:`bundler.resolution.conflict_check`); raises KernelConflictError with the choices."""
        if self.decision is None:
            started = time.perf_counter()
            self.decision = check_fit(
                [line.text for line in lines],
                self.profile,
                self._pins(lines).pins,
                index=self.index,
                options=self.options,
                limits=FitLimits(
                    max_releases=self.fit.max_releases,
                    seconds=min(self.fit.resolve_timeout, DEFAULT_PROBE_SECONDS),
                    pre=self.options.pre,
                ),
                keep_kernel=self.fit.keep_kernel,
                log=self.log,
                verbose=self.progress != "none",
            )
            self.notes += self.decision.notes
            self.log(
                f"checked the newest release of {len(self.decision.fits)} requirement(s) against "
                f"the kernel in {time.perf_counter() - started:.1f} s"
            )
        return self.decision

    def _resolve(self, lines: Sequence[RequirementLine]) -> Resolution:
        if not lines:
            return Resolution(items=[])
        decision = self._check_fit(lines)
        self.resolutions += 1
        pins = self._pins(lines)
        named = {canonical_name(Requirement(line.text).name) for line in lines}
        companions = [
            RequirementLine(name, origin="--allow-replace")
            for name in sorted(pins.companion_requests)
            if name not in named
        ]
        options = replace(
            self.options,
            only_binary=tuple(dict.fromkeys([*self.options.only_binary, *decision.only_binary])),
        )
        result = resolve.resolve(
            [*lines, *companions],
            self.profile,
            index=self.index,
            blob_dir=self.store.root,
            constraints=[*self.constraints, *decision.constraints],
            kernel_pins=pins.pins,
            options=options,
            log=self.log,
            preinstalled_requires=pins.companion_requests,
            timeout=self.fit.resolve_timeout,
        )
        self.downloaded_hashes |= result.captured
        for item in result.items:
            if item.sha256 in result.captured:
                self.downloaded_bytes += self.store.path(item.sha256).stat().st_size
        return result

    def _is_optional(self, line: RequirementLine) -> bool:
        return canonical_name(Requirement(line.text).name) in self.optional_names

    def _resolve_tolerating_optionals(
        self, lines: Sequence[RequirementLine]
    ) -> tuple[Resolution, list[MissingOptional], list[RequirementLine]]:
        """Resolve; an optional requirement that makes resolution fail is left out and recorded."""
        try:
            return self._resolve(lines), [], list(lines)
        except ResolutionError:
            optional_lines = [line for line in lines if self._is_optional(line)]
            if not optional_lines:
                raise
        required = [line for line in lines if line not in optional_lines]
        base = self._resolve(required)  # a failure here is not the optionals' fault: raise it
        missing: list[MissingOptional] = []
        kept: list[RequirementLine] = []
        for line in optional_lines:
            try:
                self._resolve([*required, line])
                kept.append(line)
            except ResolutionError as error:
                name = canonical_name(Requirement(line.text).name)
                self.log(f"optional {name} left out: {error}")
                missing.append(MissingOptional(name=name, reason=_as_reason(error)))
        final_lines = [*required, *kept]
        final = self._resolve(final_lines) if kept else base
        return final, missing, final_lines

    def plan(self, lines: Sequence[RequirementLine]) -> BundlePlan:
        active = list(lines)
        missing: list[MissingOptional] = []
        while True:
            result, newly_missing, active = self._resolve_tolerating_optionals(active)
            missing += newly_missing
            replacements = self._replacements(result.items, active)
            sizes = self.sizes(result.items)
            by_file = {item.filename: sizes.get(item.name) for item in result.items}
            check_sizes(by_file, self.size_limits, self.where)
            hashes = self._fetch([_fetch_of(item) for item in result.items])
            # An index may give no hash; the file's own hash names it in the store then.
            items = [replace(item, sha256=hashes[item.filename]) for item in result.items]
            _check_requested_hashes(items, active, self.store)
            plan = make_bundle_plan(
                items,
                parse_requirements(line.text for line in active),
                self.optional_names,
                self.profile,
            )
            try:
                wheels = [self._wheel_of(wheel) for wheel in plan.wheels]
            except _OptionalNeedsCompiling as dropped:
                missing.append(MissingOptional(name=dropped.name, reason=_as_reason(dropped)))
                active = [
                    line
                    for line in active
                    if canonical_name(Requirement(line.text).name) != dropped.name
                ]
                continue
            return _pin_replacements(
                BundlePlan(
                    wheels=wheels,
                    skipped=plan.skipped,
                    missing_optional=missing,
                    replacements=replacements,
                )
            )

    def dry_plan(
        self, lines: Sequence[RequirementLine]
    ) -> tuple[BundlePlan, list[ResolvedItem], dict[str, int | None]]:
        """The full resolution, as a plan, with every file's size: nothing is downloaded."""
        result, missing, active = self._resolve_tolerating_optionals(list(lines))
        replacements = self._replacements(result.items, active)
        sizes = self.sizes(result.items)
        plan = make_bundle_plan(
            result.items,
            parse_requirements(line.text for line in active),
            self.optional_names,
            self.profile,
            missing,
        )
        plan.replacements = [replace(r, size=sizes.get(r.name)) for r in replacements]
        return plan, list(result.items), sizes

    def sizes(self, items: Sequence[ResolvedItem]) -> dict[str, int | None]:
        """name -> bytes of each item's file: the store's copy, else the index's answer."""
        sizes: dict[str, int | None] = {}
        remote = []
        for item in items:
            if item.sha256 and self.store.has(item.sha256):
                sizes[item.name] = self.store.path(item.sha256).stat().st_size
            else:
                remote.append(item)
        found = file_sizes([item.url for item in remote], self.index) if remote else {}
        for item in remote:
            sizes[item.name] = found.get(item.url)
        return sizes

    def _replacements(
        self, items: Sequence[ResolvedItem], lines: Sequence[RequirementLine]
    ) -> list[Replacement]:
        pins = self._pins(lines)
        chosen = {item.name: item.version for item in items}
        replaced = [
            n for n in chosen if self.profile.preinstalled_version(n) not in (None, chosen[n])
        ]
        texts: dict[str, str] = {}
        for line in lines:
            texts.setdefault(canonical_name(Requirement(line.text).name), line.text)
        return check_replacements(
            chosen, self.profile, pins.released, texts, chains_to(replaced, items),
            companion_of=pins.companion_of,
        )  # fmt: skip

    # --- fetching and building ---------------------------------------------------------------
    def _fetch(self, fetches: Sequence[Fetch]) -> dict[str, str]:
        """Bring ``fetches`` into the store; filename -> sha256."""
        hashes: dict[str, str] = {}
        for fetched in fetch_all(fetches, self.store, self.index, progress=self.progress):
            hashes[fetched.filename] = fetched.sha256
            if fetched.downloaded_bytes:
                self.downloaded_bytes += fetched.downloaded_bytes
                if fetched.filename.endswith(".whl"):
                    self.downloaded_hashes.add(fetched.sha256)
                else:
                    self.downloaded_other.append(fetched.filename)
        return hashes

    def _wheel_of(self, wheel: BundledWheel) -> BundledWheel:
        if wheel.filename.endswith(".whl"):
            return wheel
        assert wheel.sha256 is not None
        try:
            filename, digest, built_now = build_wheel_from_sdist(
                wheel.sha256,
                wheel.filename,
                wheel.name,
                wheel.version,
                self.store,
                self.builds_dir,
                self.profile,
                self.log,
                environment=self.index.build_environment(os.environ),
            )
        except BundlerError as error:
            if wheel.optional:
                raise _OptionalNeedsCompiling(wheel.name, str(error)) from None
            raise
        if built_now:
            self.built.append(filename)
        return with_built_wheel(wheel, filename, digest)

    def ensure_stored(self, plan: BundlePlan) -> BundlePlan:
        """A cached plan's files, back in the store if it lost them (or they were edited)."""
        wanted = [wheel for wheel in plan.wheels if not self.store.has_valid(wheel.sha256 or "")]
        if not wanted:
            return plan
        direct = [w for w in wanted if w.built_from is None]
        built = [w for w in wanted if w.built_from is not None]
        fetches = [Fetch(w.url, w.filename, w.sha256) for w in direct]
        fetches += [
            Fetch(w.built_from["url"], w.built_from["filename"], w.built_from["sha256"])
            for w in built
            if w.built_from
        ]
        self._fetch(fetches)
        rebuilt = {}
        for wheel in built:
            assert wheel.built_from is not None
            source = replace(
                wheel,
                filename=wheel.built_from["filename"],
                sha256=wheel.built_from["sha256"],
                built_from=None,
            )
            rebuilt[wheel.name] = self._wheel_of(source)
        return replace(plan, wheels=[rebuilt.get(w.name, w) for w in plan.wheels])


class _OptionalNeedsCompiling(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def _as_reason(error: Exception) -> str:
    # The advice to mark the package optional is moot once it is.
    return str(error).replace(", or mark it --optional", "")


def _check_requested_hashes(
    items: Sequence[ResolvedItem], lines: Sequence[RequirementLine], store: BlobStore
) -> None:
    """A requirement given with ``--hash`` gets a file with one of those hashes, or nothing."""
    pinned = {canonical_name(Requirement(line.text).name): line for line in lines if line.hashes}
    for item in items:
        line = pinned.get(item.name)
        if line is None or item.sha256 is None:
            continue
        if any(_file_has(store.path(item.sha256), item.sha256, value) for value in line.hashes):
            continue
        raise ResolutionError(
            f"{line.origin}: {item.filename} (sha256 {item.sha256}) matches none of the "
            f"{len(line.hashes)} --hash value(s) given for {line.text}; update the lock file, or "
            "check that the index serves the files it was made from"
        )


def _file_has(path: Path, sha256: str, pinned: str) -> bool:
    algorithm, _, digest = pinned.partition(":")
    if algorithm == "sha256":
        return digest == sha256
    computed = hashlib.new(algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            computed.update(chunk)
    return computed.hexdigest() == digest


def _fetch_of(item: ResolvedItem) -> Fetch:
    return Fetch(item.url, item.filename, item.sha256)


def _check_plan_fits(plan: BundlePlan, profile: TargetProfile) -> None:
    """pip chose these for the target; check again from the files' own names and metadata."""
    for wheel in plan.wheels:
        tags = wheel_tags(wheel.filename)
        if not fits_tags(tags, profile):
            raise NoWheelForTargetError(
                f"{wheel.filename} does not fit {describe_target(profile)}: its tags are "
                f"{', '.join(tags)}"
            )
        if not fits_python(wheel.requires_python, profile):
            raise NoWheelForTargetError(
                f"{wheel.filename} requires Python {wheel.requires_python}; {profile.name} has "
                f"{python_full_version(profile)}"
            )


def _entry(wheel: BundledWheel, store: BlobStore) -> WheelEntry:
    assert wheel.sha256 is not None
    return _wheel_entry(wheel, wheel.sha256, store.path(wheel.sha256).stat().st_size)


def _wheel_entry(wheel: BundledWheel, sha256: str, size: int) -> WheelEntry:
    """The manifest's entry for a resolved wheel (a dry run knows its size from the index)."""
    return WheelEntry(
        name=wheel.name,
        version=wheel.version,
        filename=wheel.filename,
        sha256=sha256,
        size=size,
        requested=wheel.requested,
        optional=wheel.optional,
        specifier=wheel.specifier,
        upgrade_of=wheel.upgrade_of,
        requires_python=wheel.requires_python,
        requires_dist=wheel.requires_dist,
        tags=wheel_tags(wheel.filename),
    )


def _own_entry(
    include_self: bool | Path,
    cache_root: Path,
    store: BlobStore,
    profile: TargetProfile,
    log: Callable[[str], None],
) -> WheelEntry | None:
    """kaggle-offline's own wheel in the store, or None when it is left out."""
    if include_self is False:
        return None
    path = own_wheel(cache_root, log) if include_self is True else Path(include_self)
    return _self_entry(path, store, profile)


def _self_entry(path: Path, store: BlobStore, profile: TargetProfile) -> WheelEntry:
    if not path.is_file():
        raise BundlerError(
            f"{path}: kaggle-offline wheel not found; fix --self-wheel or use --no-self"
        )
    info = read_wheel(path)
    if info.name != "kaggle-offline":
        raise BundlerError(
            f"{path}: not a kaggle-offline wheel (it is {info.name}); fix --self-wheel or use "
            "--no-self"
        )
    if not fits_tags(info.tags, profile) or not fits_python(info.requires_python, profile):
        raise BundlerError(
            f"{path}: does not fit {describe_target(profile)}; pass a kaggle-offline wheel that "
            "does to --self-wheel, or use --no-self"
        )
    digest = store.add_file(path)
    return WheelEntry(
        name=info.name,
        version=info.version,
        filename=path.name,
        sha256=digest,
        size=path.stat().st_size,
        requested=False,
        # Pinned: the kernel must end up with the kaggle-offline whose installer bootstrap.py ran.
        specifier=f"=={info.version}",
        requires_python=info.requires_python,
        requires_dist=info.requires_dist,
        tags=info.tags,
    )


def _summary_line(manifest: Manifest) -> str:
    names = ", ".join(f"{e.name}=={e.version}" for e in manifest.wheels)
    return (
        f"Wheels for {manifest.target.name} (Python {manifest.target.python_version}): {names}. "
        "Attach this dataset and run bootstrap.py, or pip install --no-index --require-hashes "
        "--find-links wheels -r requirements.lock."
    )
