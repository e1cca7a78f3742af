"""``python -m runtime profile``: capture this interpreter's target profile for the bundler."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the profile JSON here (default: stdout)"
    )
    parser.add_argument(
        "--name",
        help="the profile's name (default: kernel-py<major><minor>)",
    )
    parser.add_argument("--description", default="", help="free text stored in the profile")


def run(args: argparse.Namespace) -> int:
    from runtime.exceptions import ProfileError
    from runtime.profile import capture_current_profile

    name = args.name or f"kernel-py{sys.version_info.major}{sys.version_info.minor}"
    profile = capture_current_profile(name, description=args.description)
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
