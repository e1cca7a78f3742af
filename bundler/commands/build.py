"""``python -m bundler build``: resolve for a target kernel and write a wheelhouse folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bundler.commands import EXIT_PROBLEMS


def configure(parser: argparse.ArgumentParser) -> None:
    from bundler.resolution.profiles import DEFAULT_PROFILE

    parser.description = "Options and requirements may come in any order, as with pip."
    parser.add_argument("requirements", nargs="*", metavar="REQ", help="requirement specifiers")
    parser.add_argument(
        "-r",
        "--requirement",
        dest="requirement_files",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a requirements file (pip's format: --hash lines, -c, --pre, --index-url, ...)",
    )
    parser.add_argument(
        "-c",
        "--constraint",
        dest="constraint_files",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a constraints file, as pip's -c",
    )
    parser.add_argument(
        "--allow-replace",
        action="append",
        default=[],
        metavar="NAME",
        help="let the resolver replace this preinstalled kernel package where it must (repeatable)",
    )
    parser.add_argument("--pre", action="store_true", help="consider pre-releases, as pip's --pre")
    parser.add_argument(
        "--target",
        default=DEFAULT_PROFILE,
        metavar="PROFILE",
        help=f"built-in profile or profile JSON (default {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("wheelhouse"),
        metavar="DIR",
        help="wheelhouse folder (default ./wheelhouse)",
    )
    parser.add_argument(
        "--optional",
        action="append",
        default=[],
        metavar="NAME",
        help="a package whose absence for the target is recorded, not fatal",
    )
    parser.add_argument(
        "-i", "--index-url", metavar="URL", help="package index (default: pip's configuration)"
    )
    parser.add_argument("--extra-index-url", action="append", default=[], metavar="URL")
    parser.add_argument("-f", "--find-links", action="append", default=[], metavar="URL")
    parser.add_argument("--dataset-id", metavar="OWNER/SLUG", help="Kaggle dataset id")
    parser.add_argument("--title", help="Kaggle dataset title (6-50 characters)")
    parser.add_argument(
        "--license",
        metavar="NAME",
        help="the dataset's licence as Kaggle names it, e.g. CC0-1.0, CC-BY-4.0, apache-2.0, "
        "other (default: the last build's, else CC0-1.0)",
    )
    self_group = parser.add_mutually_exclusive_group()
    self_group.add_argument(
        "--self-wheel",
        type=Path,
        metavar="WHEEL",
        help="use this kaggle-offline wheel instead of building one",
    )
    self_group.add_argument(
        "--no-self", action="store_true", help="leave kaggle-offline's own wheel out"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="default $KAGGLE_OFFLINE_CACHE or ~/.cache/kaggle-offline",
    )
    parser.add_argument("--refresh", action="store_true", help="ignore the cached resolution")
    parser.add_argument("-q", "--quiet", action="store_true", help="print the summary only")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def run(args: argparse.Namespace) -> int:
    from bundler.wheelhouse.builder import build

    include_self: bool | Path = False if args.no_self else (args.self_wheel or True)
    log = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
    result = build(
        args.requirements,
        args.output,
        target=args.target,
        requirement_files=args.requirement_files,
        constraint_files=args.constraint_files,
        optional=args.optional,
        allow_replace=args.allow_replace,
        pre=args.pre,
        index_url=args.index_url,
        extra_index_urls=args.extra_index_url,
        find_links=args.find_links,
        dataset_id=args.dataset_id,
        title=args.title,
        licence=args.license,
        include_self=include_self,
        cache_dir=args.cache_dir,
        refresh=args.refresh,
        log=log,
    )
    manifest = result.manifest
    print(f"wheelhouse for {manifest.target.name} in {result.output_dir}:")
    print(f"  vendored  {len(manifest.wheels)}: " + ", ".join(
        f"{e.name}=={e.version}" for e in manifest.wheels))  # fmt: skip
    for label, wanted in (("upgrades  ", True), ("downgrades ", False)):
        chosen = [
            r for r in result.replacements if _is_upgrade(r.kernel_version, r.version) is wanted
        ]
        if chosen:
            print(f"  {label}" + ", ".join(
                f"{r.describe()} ({r.reason})" for r in chosen))  # fmt: skip
    unchecked = max((r.unchecked for r in result.replacements), default=0)
    if unchecked:
        known = len(manifest.target.preinstalled) - unchecked
        print(f"  checked   replacements against the declared requirements of {known} kernel "
              f"packages; {unchecked} are unknown to {manifest.target.name} (a captured profile "
              "knows them all)")  # fmt: skip
    if manifest.skipped:
        print(f"  skipped   {len(manifest.skipped)} already in the kernel: " + ", ".join(
            f"{s.name}=={s.installed_version}" for s in manifest.skipped))  # fmt: skip
    for missing in manifest.missing_optional:
        print(f"  missing optional {missing.name}: {missing.reason}")
    if result.removed:
        print(f"  removed   {len(result.removed)} stale: {', '.join(result.removed)}")
    print(
        f"  bytes     {_size(result.downloaded_bytes)} downloaded, "
        f"{_size(result.reused_bytes)} reused from the cache"
        + ("" if result.resolved else " (cached resolution, no pip run)")
    )
    print(f"  took      {result.seconds:.2f} s")
    from bundler.wheelhouse.updates import upload_command, wheel_changes

    previous = result.previous
    changes = None
    if previous is not None:
        changes = wheel_changes(previous.wheels, {e.name: e.version for e in manifest.wheels})
        print(f"  changes   {changes.summary()} (since the last build in this folder)")
    for warning in result.warnings:
        print(f"warning: {warning}")
    for problem in result.problems:
        print(f"problem: {problem}")
    if result.problems:
        print(f"{len(result.problems)} problem(s) in {result.output_dir}; fix them before uploading",
              file=sys.stderr)  # fmt: skip
        return EXIT_PROBLEMS
    dataset_id = result.dataset_id
    upload = upload_command(
        result.output_dir, dataset_id, previous, changes, unchanged=result.unchanged
    )
    print(upload if result.unchanged else f"next: {upload}")
    owner = dataset_id.partition("/")[0]
    print(f"then: python -m bundler model MODEL_PATH -o model-upload --id {owner}/MODEL "
          "--framework pyTorch --variation default")  # fmt: skip
    return 0


def _is_upgrade(installed: str, vendored: str) -> bool:
    """A requested replacement can go either way (a pin below the kernel's version is a downgrade)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(vendored) >= Version(installed)
    except InvalidVersion:
        return True
