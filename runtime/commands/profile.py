"""``python -m runtime profile``: capture this interpreter's target profile for the bundler."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping

from runtime.commands import add_wheelhouse_arguments

# Never part of a Kaggle image: always something a wheelhouse installed.
_OWN_DISTRIBUTION = "kaggle-offline"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the profile JSON here (default: stdout)"
    )
    parser.add_argument(
        "--name",
        help="the profile's name (default: kernel-py<major><minor>)",
    )
    parser.add_argument("--description", default="", help="free text stored in the profile")
    add_wheelhouse_arguments(
        parser,
        wheelhouse_help=None,
        input_root_purpose="where attached wheelhouses are searched; what they installed is not "
        "counted as preinstalled",
    )
    parser.add_argument(
        "--keep-wheelhouse-packages",
        action="store_true",
        help="count packages installed from attached wheelhouses as preinstalled too",
    )


def run(args: argparse.Namespace) -> int:
    from runtime.contract.errors import ProfileError
    from runtime.installer.capture import capture_current_profile

    name = args.name or f"kernel-py{sys.version_info.major}{sys.version_info.minor}"
    profile = capture_current_profile(name, description=args.description)
    preinstalled = {n: v for n, v in profile.preinstalled.items() if n != _OWN_DISTRIBUTION}
    if not args.keep_wheelhouse_packages:
        vendored = _installed_from_wheelhouses(preinstalled, args.input_root)
        if vendored:
            # A profile taken after bootstrap.py ran would otherwise list imagecodecs & co. as
            # part of the image, and a rebuild for it would silently leave them out.
            print(
                "left out, installed from attached wheelhouses rather than by the image: "
                + ", ".join(f"{n}=={v}" for n, v in sorted(vendored.items())),
                file=sys.stderr,
            )
            preinstalled = {n: v for n, v in preinstalled.items() if n not in vendored}
    requires = {n: r for n, r in profile.preinstalled_requires.items() if n in preinstalled}
    profile = dataclasses.replace(
        profile, preinstalled=preinstalled, preinstalled_requires=requires
    )
    if args.output is None:
        print(json.dumps(profile.to_dict(), indent=2))
        return 0
    try:
        profile.dump(args.output)
    except OSError as error:
        raise ProfileError(f"{args.output}: cannot write the profile ({error.strerror})") from None
    print(
        f"wrote profile {profile.name!r} (Python {profile.python_version}, {len(profile.tags)} tags, "
        f"{len(profile.preinstalled)} installed distributions) to {args.output}; build for it with "
        f"`python -m bundler build --target {args.output} ...`"
    )
    return 0


def _installed_from_wheelhouses(
    versions: Mapping[str, str], input_root: str | None
) -> dict[str, str]:
    """Installed distributions whose exact version a wheelhouse under the input root vendors."""
    from runtime.installer.discovery import find_wheelhouses

    vendored = {
        entry.name: entry.version
        for house in find_wheelhouses(input_root).wheelhouses
        if house.manifest is not None
        for entry in house.manifest.wheels
    }
    return {name: version for name, version in vendored.items() if versions.get(name) == version}
