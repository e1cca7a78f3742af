"""Wheelhouses for installer tests: made by the real bundler, or written by hand for odd cases.

``bundle`` runs ``bundler.build`` against a file:// index of fixture wheels (no registry, no
network), exactly as a user would against PyPI. ``write_wheelhouse`` lays out a wheelhouse from
given wheels and lets a test set what the bundler would never write (conflicting pins, a foreign
Python, an upgrade of a preinstalled package), so that the installer's refusals can be tested.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from runtime.contract.manifest import Manifest, WheelEntry, WheelName
from runtime.contract.profile import TargetProfile, canonical_name
from runtime.installer.capture import capture_current_profile
from tests.support.packages import make_index, make_wheel

BOOTSTRAP_SOURCE = Path(__file__).resolve().parents[2] / "runtime" / "installer" / "bootstrap.py"


@cache
def _captured() -> TargetProfile:
    return capture_current_profile("test-kernel")


def kernel_profile(
    preinstalled: Mapping[str, str] | None = None, *, python_version: str | None = None
) -> TargetProfile:
    """This interpreter as a target, with a chosen set of preinstalled packages (a model kernel)."""
    profile = dataclasses.replace(
        _captured(), preinstalled={canonical_name(k): v for k, v in (preinstalled or {}).items()}
    )
    if python_version is not None:
        profile = dataclasses.replace(
            profile,
            name=f"kaggle-py{python_version.replace('.', '')}",
            python_version=python_version,
            markers={**profile.markers, "python_version": python_version},
        )
    return profile


def bundle(
    output_dir: Path,
    requirements: Sequence[str],
    index_url: str,
    *,
    target: TargetProfile,
    self_wheel: Path | None = None,
    optional: Sequence[str] = (),
    cache_dir: Path,
) -> Manifest:
    """A real wheelhouse from the bundler, resolved against ``index_url`` only."""
    from bundler import build

    result = build(
        requirements,
        output_dir,
        target=target,
        optional=optional,
        index_url=index_url,
        include_self=self_wheel if self_wheel is not None else False,
        cache_dir=cache_dir,
        dataset_id="tester/test-wheels",
        title="Test wheelhouse",
    )
    return result.manifest


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_wheelhouse(
    output_dir: Path,
    wheels: Sequence[Path],
    *,
    target: TargetProfile,
    specifiers: Mapping[str, str] | None = None,
    optional: Sequence[str] = (),
    upgrade_of: Mapping[str, str] | None = None,
    requires_dist: Mapping[str, Sequence[str]] | None = None,
    self_wheel: Path | None = None,
    flat: bool = False,
) -> Manifest:
    """A wheelhouse laid out like the bundler's, from exactly these wheels and these claims."""
    wheel_dir = output_dir if flat else output_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for wheel in [*wheels, *([self_wheel] if self_wheel else [])]:
        parsed = WheelName.parse(wheel.name)
        assert parsed is not None, wheel
        shutil.copyfile(wheel, wheel_dir / wheel.name)
        entries.append(
            WheelEntry(
                name=parsed.name,
                version=parsed.version,
                filename=wheel.name,
                sha256=sha256_of(wheel),
                size=wheel.stat().st_size,
                requested=True,
                optional=parsed.name in optional,
                specifier=(specifiers or {}).get(parsed.name, ""),
                upgrade_of=(upgrade_of or {}).get(parsed.name),
                requires_dist=tuple((requires_dist or {}).get(parsed.name, ())),
                tags=parsed.tags,
            )
        )
    manifest = Manifest(
        target=target,
        requested=tuple(entry.name for entry in entries),
        wheels=tuple(entries),
        optional=tuple(optional),
        self_wheel=self_wheel.name if self_wheel else None,
        tool_version="0.1.0",
        created="2026-01-01T00:00:00Z",
    )
    manifest.dump(output_dir / "manifest.json")
    (output_dir / "requirements.lock").write_text(
        "".join(f"{e.name}=={e.version} \\\n    --hash=sha256:{e.sha256}\n" for e in entries)
    )
    shutil.copyfile(BOOTSTRAP_SOURCE, output_dir / "bootstrap.py")
    return manifest


# Fixture packages: alpha needs beta; two betas so that a kernel's older one can be kept or
# upgraded; fancycodecs stands in for imagecodecs (optional, may fail to install).
FIXTURE_PACKAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("alpha", "1.0", ("beta>=1",)),
    ("beta", "1.0", ()),
    ("beta", "2.0", ()),
    ("gamma", "1.0", ()),
    ("delta", "1.0", ()),
    ("fancycodecs", "1.0", ()),
)

_INDEXES: dict[Path, tuple[str, dict[str, Path]]] = {}


def session_index(base_temp: Path) -> tuple[str, dict[str, Path]]:
    """A file:// index of the fixture packages, made once per session: (url, "name-version" -> wheel)."""
    if base_temp not in _INDEXES:
        folder = base_temp / "fixture-packages"
        wheels = {
            f"{name}-{version}": make_wheel(folder / "dist", name, version, requires=requires)
            for name, version, requires in FIXTURE_PACKAGES
        }
        _INDEXES[base_temp] = (make_index(folder / "index", wheels.values()), wheels)
    return _INDEXES[base_temp]
