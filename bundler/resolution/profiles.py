"""Built-in target profiles (the Kaggle kernels we know) and lookup of a ``--target`` argument.

The facts behind them are in the project's kaggle-facts notes. Where a fact is a guess (the Python
3.11 image's preinstalled set, the exact micro version), the profile says so in its description and
source, and ``unconfirmed_reason`` lets the CLI repeat it on every build: a wrong guess must be
visible, not silent. ``python -m runtime profile -o FILE`` in a live kernel gives the exact profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from packaging import tags as packaging_tags
from packaging.requirements import Requirement
from packaging.version import Version

from bundler.errors import UnknownProfileError
from runtime.contract.profile import TargetProfile, canonical_name

PACKAGE_LIST = "kaggle-image-packages-2026-06.txt"
# Requires-Dist of image packages at the image's versions, each with the wheel it was read from;
# torch's entry (the registry's torch 2.10.0 Linux wheel, the CUDA 12.8 build) gives the GPU stack.
REQUIRES_DATA = "kaggle-image-requires-2026-06.json"
_GLIBC_MINOR = 35  # Kaggle's images are Ubuntu 22.04 based: glibc 2.35
_ARCH = "x86_64"
# Representative values of the kernel's uname; markers on them are vanishingly rare.
_PLATFORM_RELEASE = "6.6.105+"
_PLATFORM_VERSION = "#1 SMP PREEMPT_DYNAMIC Sun Oct 12 09:41:52 UTC 2025"
_GPU_LOCAL_VERSION = "+cu128"
_CPU_LOCAL_VERSION = "+cpu"

_CAPTURE_HINT = (
    "capture the exact profile in the kernel with `python -m runtime profile -o FILE` "
    "and pass --target FILE"
)


def manylinux_platforms(glibc_minor: int = _GLIBC_MINOR, arch: str = _ARCH) -> list[str]:
    """Platform tags a glibc 2.<minor> machine accepts, newest first, as packaging's sys_tags().

    ``linux_<arch>`` first (pip accepts it for locally built wheels; no public index serves such
    wheels), then every ``manylinux_2_N`` from the machine's glibc down to 2.5 with the legacy
    aliases beside their glibc version.
    """
    aliases = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms = [f"linux_{arch}"]
    for minor in range(glibc_minor, 4, -1):
        platforms.append(f"manylinux_2_{minor}_{arch}")
        if minor in aliases:
            platforms.append(f"{aliases[minor]}_{arch}")
    return platforms


def cpython_linux_tags(python: tuple[int, int], platforms: list[str]) -> tuple[str, ...]:
    """All wheel tags a CPython ``python`` on ``platforms`` accepts, most preferred first."""
    abi = f"cp{python[0]}{python[1]}"
    found = [
        *packaging_tags.cpython_tags(python, [abi], platforms),
        *packaging_tags.compatible_tags(python, abi, platforms),
    ]
    return tuple(dict.fromkeys(str(tag) for tag in found))


def kaggle_markers(full_version: str) -> dict[str, str]:
    major_minor = ".".join(full_version.split(".")[:2])
    return {
        "implementation_name": "cpython",
        "implementation_version": full_version,
        "os_name": "posix",
        "platform_machine": _ARCH,
        "platform_python_implementation": "CPython",
        "platform_release": _PLATFORM_RELEASE,
        "platform_system": "Linux",
        "platform_version": _PLATFORM_VERSION,
        "python_full_version": full_version,
        "python_version": major_minor,
        "sys_platform": "linux",
    }


def read_package_list(text: str) -> dict[str, str]:
    """Parse ``name==version`` lines (``#`` comments allowed) into canonical name -> version."""
    packages: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator or not name.strip() or not version.strip():
            raise ValueError(f"line {number}: expected name==version, got {raw!r}")
        packages[canonical_name(name.strip())] = version.strip()
    return packages


def _data_text(filename: str) -> str:
    return (
        resources.files("bundler").joinpath("data").joinpath(filename).read_text(encoding="utf-8")
    )


@dataclass(frozen=True)
class _ImageFacts:
    preinstalled: dict[str, str]
    requires: dict[str, tuple[str, ...]]
    provenance: dict[str, str]


def _kaggle_gpu_image(markers: dict[str, str]) -> _ImageFacts:
    """The GPU image's packages for a kernel with ``markers``: the CPU list, torch's CUDA build
    and the pins that build's own metadata makes (triton, ``nvidia-*-cu12``, cuda-bindings)."""
    packages = read_package_list(_data_text(PACKAGE_LIST))
    provenance: dict[str, str] = {}
    # The list is the CPU image's; the GPU image ships the CUDA build of the same torch family.
    for name, version in packages.items():
        if name.startswith("torch") and version.endswith(_CPU_LOCAL_VERSION):
            packages[name] = version.removesuffix(_CPU_LOCAL_VERSION) + _GPU_LOCAL_VERSION
    known = json.loads(_data_text(REQUIRES_DATA))["packages"]
    torch = known["torch"]
    torch_version = packages["torch"]
    for line in torch["requires_dist"]:
        requirement = Requirement(line)
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(pins) != 1 or (requirement.marker and not requirement.marker.evaluate(markers)):
            continue
        name = canonical_name(requirement.name)
        note = f"the CPU image list has {packages[name]}; " if name in packages else ""
        packages[name] = pins[0]
        provenance[name] = (
            f"{note}version pinned by torch {torch_version}'s Requires-Dist ({torch['from']})"
        )
    requires: dict[str, tuple[str, ...]] = {}
    for name, entry in known.items():
        version = packages.get(name)
        if version is None or Version(version).public != Version(entry["version"]).public:
            continue
        requires[name] = tuple(entry["requires_dist"])
        where = f"Requires-Dist from the {entry['from']}"
        provenance[name] = f"{provenance[name]}; {where}" if name in provenance else where
    return _ImageFacts(packages, requires, provenance)


def _kaggle_profile(
    version: tuple[int, int], full_version: str, description: str, source: str
) -> TargetProfile:
    python = f"{version[0]}.{version[1]}"
    markers = kaggle_markers(full_version)
    image = _kaggle_gpu_image(markers)
    return TargetProfile(
        name=f"kaggle-py{version[0]}{version[1]}",
        python_version=python,
        implementation="cp",
        abi=f"cp{version[0]}{version[1]}",
        tags=cpython_linux_tags(version, manylinux_platforms()),
        markers=markers,
        preinstalled=image.preinstalled,
        description=description,
        source=source,
        preinstalled_requires=image.requires,
        provenance=image.provenance,
        site_packages=f"/usr/local/lib/python{python}/dist-packages",
    )


def _kaggle_py312() -> TargetProfile:
    return _kaggle_profile(
        (3, 12),
        "3.12.12",
        description=(
            "Kaggle's current notebook image (Python 3.12, since December 2025), GPU build: "
            "torch 2.10.0+cu128, numpy 2.4.6, tifffile 2026.3.3; glibc 2.35 x86_64"
        ),
        source=(
            f"bundler/data/{PACKAGE_LIST} (Kaggle/docker-python installed_cpu_packages.txt, June "
            "2026) with torch/torchvision/torchaudio +cpu -> +cu128 and the GPU stack that torch "
            f"build pins (bundler/data/{REQUIRES_DATA}, see provenance); requirements of the "
            "packages listed there; python 3.12.12 and uname values are representative"
        ),
    )


def _kaggle_py311() -> TargetProfile:
    return _kaggle_profile(
        (3, 11),
        "3.11.13",
        description=(
            "Kaggle notebooks pinned to an image from before December 2025 (Python 3.11); "
            "UNCONFIRMED preinstalled set"
        ),
        source=(
            f"UNCONFIRMED: preinstalled set copied from the Python 3.12 list bundler/data/"
            f"{PACKAGE_LIST}; the real pre-December-2025 image differs; {_CAPTURE_HINT}"
        ),
    )


_BUILT_INS = {"kaggle-py312": _kaggle_py312, "kaggle-py311": _kaggle_py311}
DEFAULT_PROFILE = "kaggle-py312"


def builtin_profiles() -> list[TargetProfile]:
    return [factory() for factory in _BUILT_INS.values()]


def get_profile(name_or_path: str) -> TargetProfile:
    """A built-in profile by name, or a profile JSON file (as ``python -m runtime profile`` writes)."""
    if name_or_path in _BUILT_INS:
        return _BUILT_INS[name_or_path]()
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return TargetProfile.load(path)
    raise UnknownProfileError(
        f"unknown target profile {name_or_path!r}: use one of {', '.join(_BUILT_INS)} "
        "or a profile JSON file from `python -m runtime profile -o FILE`"
    )


def unconfirmed_reason(profile: TargetProfile) -> str | None:
    """Why a profile's facts may be wrong, for a warning on every build; None when captured."""
    if "UNCONFIRMED" in profile.source:
        return f"profile {profile.name}: {profile.source}"
    return None
