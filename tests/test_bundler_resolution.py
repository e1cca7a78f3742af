"""Resolution for a target: tags, markers, Requires-Python and the kernel's preinstalled set.

Everything runs against a file:// index of real fixture wheels and sdists (see
tests/support/bundler_fixtures.py), through the real pip resolver in the bundler's shim.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import bundler
from bundler.errors import (
    BundlerError,
    NoWheelForTargetError,
    PreinstalledConflictError,
    ResolutionError,
    SdistBuildError,
    UnknownProfileError,
)
from bundler.resolution.profiles import get_profile
from bundler.wheelhouse.builder import BuildResult
from runtime.contract.manifest import Manifest
from runtime.contract.profile import TargetProfile
from tests.support.bundler_fixtures import CP311_ABI3, CP312_ONLY, make_fixture_index

PROFILES = ("kaggle-py312", "kaggle-py311")
REQUESTED = ["ko-app", "ko-codecs", "tifffile>=2026.11", "scipy"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("bundler-world")
    return {"index": make_fixture_index(root), "cache": root / "cache", "root": root}


def _build(
    world: dict[str, Path | str], requirements: list[str], out: Path, **kwargs
) -> BuildResult:
    kwargs.setdefault("include_self", False)
    kwargs.setdefault("dataset_id", "tester/ko-wheels")
    return bundler.build(
        requirements, out, index_url=str(world["index"]), cache_dir=Path(world["cache"]), **kwargs
    )


@pytest.fixture(scope="module")
def houses(world: dict[str, Path | str]) -> dict[str, BuildResult]:
    root = Path(world["root"])
    return {name: _build(world, REQUESTED, root / name, target=name) for name in PROFILES}


def _versions(result: BuildResult) -> dict[str, str]:
    return {entry.name: entry.version for entry in result.manifest.wheels}


def test_py312_gets_its_own_wheels_and_no_backport(houses: dict[str, BuildResult]) -> None:
    versions = _versions(houses["kaggle-py312"])
    assert versions == {
        "ko-app": "1.0",
        "ko-lib": "2.0",  # Requires-Python >=3.12 holds for the target
        "ko-pure": "0.5",
        "ko-codecs": "2.0",
        "tifffile": "2026.11.1",
    }
    codecs = houses["kaggle-py312"].manifest.wheel("ko-codecs")
    assert codecs is not None and codecs.tags == (CP312_ONLY,)


def test_py311_gets_the_backport_older_lib_and_abi3_codecs(houses: dict[str, BuildResult]) -> None:
    # The host runs Python 3.11 too: these come from the target's markers and tags, so check
    # that the py312 house above differs, which the host's own markers could never produce.
    versions = _versions(houses["kaggle-py311"])
    assert versions == {
        "ko-app": "1.0",
        "ko-lib": "1.0",
        "ko-backport": "1.0",
        "ko-pure": "0.5",
        "ko-codecs": "1.0",
        "tifffile": "2026.11.1",
    }
    codecs = houses["kaggle-py311"].manifest.wheel("ko-codecs")
    assert codecs is not None and codecs.tags == (CP311_ABI3,)


@pytest.mark.parametrize("profile", PROFILES)
def test_preinstalled_packages_are_skipped_not_vendored(
    houses: dict[str, BuildResult], profile: str
) -> None:
    manifest = houses[profile].manifest
    assert manifest.wheel("numpy") is None, "the kernel's numpy 2.4.6 satisfies every numpy need"
    skipped = {entry.name: entry for entry in manifest.skipped}
    assert skipped["numpy"].installed_version == "2.4.6"
    assert skipped["numpy"].specifier == ">=1.26"
    assert set(skipped["numpy"].required_by) == {"ko-app", "ko-codecs", "tifffile"}
    assert skipped["scipy"].required_by == ("<user>",)


@pytest.mark.parametrize("profile", PROFILES)
def test_direct_request_beyond_preinstalled_is_an_upgrade(
    houses: dict[str, BuildResult], profile: str
) -> None:
    tifffile = houses[profile].manifest.wheel("tifffile")
    assert tifffile is not None
    assert tifffile.upgrade_of == "2026.3.3"
    assert tifffile.requested and tifffile.specifier == ">=2026.11"
    assert all(
        e.upgrade_of is None for e in houses[profile].manifest.wheels if e.name != "tifffile"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_sdist_only_package_is_built_into_a_pure_wheel(
    houses: dict[str, BuildResult], profile: str
) -> None:
    pure = houses[profile].manifest.wheel("ko-pure")
    assert pure is not None
    assert pure.filename == "ko_pure-0.5-py3-none-any.whl"
    assert not pure.requested
    assert (houses[profile].output_dir / "wheels" / pure.filename).is_file()


@pytest.mark.parametrize("profile", PROFILES)
def test_wheelhouse_folder_is_complete_and_verifies(
    houses: dict[str, BuildResult], profile: str
) -> None:
    result = houses[profile]
    out = result.output_dir
    assert bundler.verify(out) == []
    on_disk = sorted(path.name for path in (out / "wheels").iterdir())
    assert on_disk == sorted(entry.filename for entry in result.manifest.wheels)
    assert Manifest.load(out / "manifest.json").wheels == result.manifest.wheels
    lock = (out / "requirements.lock").read_text()
    for entry in result.manifest.wheels:
        assert f"{entry.name}=={entry.version} \\\n    --hash=sha256:{entry.sha256}" in lock
    assert (out / "bootstrap.py").read_text() == (
        Path(__file__).parent.parent / "runtime" / "installer" / "bootstrap.py"
    ).read_text()
    assert result.manifest.target.name == profile
    assert result.manifest.requested == tuple(REQUESTED)


def test_optional_without_a_wheel_for_the_target_is_recorded(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    result = _build(
        world, ["ko-lib", "ko-codecs312"], tmp_path / "py311", target="kaggle-py311",
        optional=["ko-codecs312"],
    )  # fmt: skip
    assert result.manifest.wheel("ko-codecs312") is None
    (missing,) = result.manifest.missing_optional
    assert missing.name == "ko-codecs312"
    assert "2.0" in missing.reason and CP312_ONLY in missing.reason
    assert bundler.verify(result.output_dir) == []
    # The same request for the Python 3.12 kernel vendors it.
    result = _build(
        world, ["ko-lib", "ko-codecs312"], tmp_path / "py312", target="kaggle-py312",
        optional=["ko-codecs312"],
    )  # fmt: skip
    assert result.manifest.wheel("ko-codecs312") is not None
    assert result.manifest.missing_optional == ()


def test_required_package_without_a_wheel_names_versions_and_tags(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(NoWheelForTargetError) as caught:
        _build(world, ["ko-codecs312"], tmp_path, target="kaggle-py311")
    message = str(caught.value)
    assert "\n" not in message
    assert "ko-codecs312" in message and "kaggle-py311" in message
    assert f"2.0 ({CP312_ONLY})" in message
    assert not (tmp_path / "manifest.json").exists()


def test_sdist_that_needs_compiling_is_a_clear_error(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(SdistBuildError) as caught:
        _build(world, ["ko-native"], tmp_path, target="kaggle-py312")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ko-native 1.0 needs compiling for kaggle-py312")
    assert "no wheel for the target" in message


def test_compiled_optional_is_left_out_with_its_reason(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    result = _build(world, ["ko-lib", "ko-native"], tmp_path, optional=["ko-native"])
    assert [entry.name for entry in result.manifest.wheels] == ["ko-lib"]
    (missing,) = result.manifest.missing_optional
    assert missing.name == "ko-native" and "needs compiling" in missing.reason


def test_resolution_backtracks_to_versions_that_keep_the_kernel(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    # ko-net 2.0 -> ko-arch 2.0 pins tifffile<2026 (the kernel has 2026.3.3), as nnunetv2's newest
    # -> dynamic-network-architectures pins timm below the kernel's: the older pair keeps it.
    result = _build(world, ["ko-net"], tmp_path, target="kaggle-py312")
    assert _versions(result) == {"ko-net": "1.0", "ko-arch": "1.0"}
    assert result.replacements == ()
    assert {entry.name for entry in result.manifest.skipped} == {"tifffile"}


def test_the_gpu_stack_of_the_kernel_is_not_vendored(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    result = _build(world, ["ko-gpu"], tmp_path, target="kaggle-py312")
    assert _versions(result) == {"ko-gpu": "1.0"}
    skipped = {entry.name: entry.installed_version for entry in result.manifest.skipped}
    assert skipped == {"triton": "3.6.0", "nvidia-cudnn-cu12": "9.10.2.21"}


def test_no_solution_that_keeps_the_kernel_names_the_chain(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(ResolutionError) as caught:
        _build(world, ["ko-stuck", "ko-lib"], tmp_path, target="kaggle-py312")
    message = str(caught.value)
    assert "\n" not in message and "/tmp" not in message
    assert "ko-arch 2.0 requires tifffile<2026 but the kernel has tifffile 2026.3.3" in message
    assert "(<user> -> ko-stuck -> ko-arch 2.0 -> tifffile)" in message
    assert "--allow-replace tifffile" in message
    assert not (tmp_path / "manifest.json").exists()


def test_allow_replace_lets_the_resolver_replace_a_kernel_package(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    result = _build(
        world, ["ko-stuck"], tmp_path, target="kaggle-py312", allow_replace=["tifffile"]
    )
    assert _versions(result) == {"ko-stuck": "1.0", "ko-arch": "2.0", "tifffile": "2025.1.1"}
    (replacement,) = result.replacements
    assert replacement.describe() == "tifffile 2026.3.3 -> 2025.1.1"
    assert replacement.reason == "allowed"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["replacements"][0]["kernel_version"] == "2026.3.3"
    assert result.manifest.wheel("tifffile").upgrade_of == "2026.3.3"
    assert bundler.verify(tmp_path) == []


def test_a_bare_request_for_a_kernel_package_never_replaces_it(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    # Asking for tifffile as the old hint said ("request it yourself") must not downgrade it.
    with pytest.raises(ResolutionError, match="--allow-replace tifffile"):
        _build(world, ["ko-stuck", "tifffile"], tmp_path, target="kaggle-py312")


def test_allow_replace_of_a_package_the_kernel_lacks_is_refused(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(BundlerError, match=r"--allow-replace ko-lib: kaggle-py312 has no ko-lib"):
        _build(world, ["ko-lib"], tmp_path, allow_replace=["ko-lib"])


def _with_kernel_package(name: str, version: str, requires: list[str]) -> TargetProfile:
    base = get_profile("kaggle-py312")
    return dataclasses.replace(
        base,
        preinstalled={**base.preinstalled, name: version},
        preinstalled_requires={**base.preinstalled_requires, name: tuple(requires)},
    )


def test_a_requested_downgrade_that_breaks_a_kernel_package_is_refused(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    profile = _with_kernel_package("ko-kernel-cv", "4.13", ["numpy>=2", 'ko-x; extra == "x"'])
    with pytest.raises(PreinstalledConflictError) as caught:
        _build(world, ["numpy==1.26.4"], tmp_path, target=profile)
    message = str(caught.value)
    assert "\n" not in message
    assert "numpy==1.26.4 would replace the kernel's numpy 2.4.6 with 1.26.4" in message
    assert "ko-kernel-cv 4.13 (requires numpy>=2)" in message
    assert "--allow-replace numpy" in message
    assert not (tmp_path / "manifest.json").exists()

    result = _build(world, ["numpy==1.26.4"], tmp_path, target=profile, allow_replace=["numpy"])
    (replacement,) = result.replacements
    assert replacement.describe() == "numpy 2.4.6 -> 1.26.4"
    assert "ko-kernel-cv 4.13 (requires numpy>=2)" in replacement.breaks
    (warning,) = [w for w in result.warnings if w.startswith("replacing numpy 2.4.6 -> 1.26.4")]
    assert "breaks" in warning and "\n" not in warning


def test_the_built_in_profile_knows_that_opencv_needs_numpy_2(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(PreinstalledConflictError) as caught:
        _build(world, ["numpy==1.26.4"], tmp_path, target="kaggle-py312")
    assert "opencv-python 4.13.0.92 (requires numpy>=2" in str(caught.value)


def test_a_requested_upgrade_that_breaks_nothing_is_vendored(
    houses: dict[str, BuildResult],
) -> None:
    (replacement,) = houses["kaggle-py312"].replacements
    assert replacement.describe() == "tifffile 2026.3.3 -> 2026.11.1"
    assert replacement.reason == "requested" and replacement.breaks == ()


def test_unknown_requirement_and_conflicts_are_one_line_errors(
    world: dict[str, Path | str], tmp_path: Path
) -> None:
    with pytest.raises(ResolutionError) as caught:
        _build(world, ["ko-no-such-thing"], tmp_path)
    assert "ko-no-such-thing" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ResolutionError) as caught:
        _build(world, ["ko-lib>=2", "ko-lib<2"], tmp_path)
    assert "ko-lib" in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownProfileError) as caught:
        bundler.build(["ko-lib"], tmp_path, target="kaggle-py399", include_self=False)
    assert "kaggle-py399" in str(caught.value)
    assert "kaggle-py312" in str(caught.value) and "kaggle-py311" in str(caught.value)
