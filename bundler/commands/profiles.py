"""``python -m bundler profiles``: list the built-in target profiles."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from bundler.resolution.profiles import builtin_profiles

    for profile in builtin_profiles():
        print(f"{profile.name}: Python {profile.python_version}, {len(profile.tags)} tags, "
              f"{len(profile.preinstalled)} preinstalled; {profile.description}")  # fmt: skip
    return 0
