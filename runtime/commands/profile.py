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
    restored: dict[str, str] = {}
    if not args.keep_wheelhouse_packages:
        vendored, restored = _installed_from_wheelhouses(preinstalled, args.input_root)
        if vendored:
            # A profile taken after bootstrap.py ran would otherwise list imagecodecs & co. as
            # part of the image, and a rebuild for it would silently leave them out.
            print(
                "left out, installed from attached wheelhouses rather than by the image: "
                + ", ".join(f"{n}=={v}" for n, v in sorted(vendored.items())),
                file=sys.stderr,
            )
        if restored:
            # An upgrade the wheelhouse made (tifffile 2026.3.3 -> 2026.11.1) hides the image's
            # own version; a rebuild must see that one, or it vendors the upgrade as a new
            # package that the next fresh kernel refuses to replace its own with.
            print(
                "restored the image's versions of packages the wheelhouses upgraded: "
                + ", ".join(
                    f"{n}=={v} (installed {preinstalled[n]})" for n, v in sorted(restored.items())
                ),
                file=sys.stderr,
            )
        preinstalled = {n: v for n, v in preinstalled.items() if n not in vendored}
        preinstalled.update(restored)
    # The requirements read here are the installed versions'; a restored image version's are unknown.
    requires = {
        n: r
        for n, r in profile.preinstalled_requires.items()
        if n in preinstalled and n not in restored
    }
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
) -> tuple[dict[str, str], dict[str, str]]:
    """What wheelhouses under the input root put in place: (new packages, image versions upgraded).

    An installed distribution whose exact version a wheelhouse vendors came from that wheelhouse:
    a new package is left out of the profile; an upgrade of one the image shipped (``upgrade_of``)
    is put back at the image's version.
    """
    from runtime.installer.discovery import find_wheelhouses

    vendored: dict[str, str] = {}
    restored: dict[str, str] = {}
    for house in find_wheelhouses(input_root).wheelhouses:
        for entry in house.manifest.wheels if house.manifest is not None else ():
            if versions.get(entry.name) != entry.version:
                continue
            if entry.upgrade_of is not None:
                restored[entry.name] = entry.upgrade_of
            else:
                vendored[entry.name] = entry.version
    return {n: v for n, v in vendored.items() if n not in restored}, restored
