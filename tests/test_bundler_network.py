"""Opt-in (``pytest -m network``): the real package registry, through pip's own configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

import bundler
from bundler.errors import NoWheelForTargetError

pytestmark = pytest.mark.network
REQUESTED = ["tifffile>=2026.11", "imagecodecs", "psutil"]


def _build(requirements: list[str], profile: str, base: Path, wheel: Path) -> bundler.BuildResult:
    return bundler.build(
        requirements, base / profile, target=profile, optional=["imagecodecs"],
        cache_dir=base / "network-cache", include_self=wheel,
        dataset_id="tester/kaggle-offline-wheels",
    )  # fmt: skip


def test_bundle_for_the_python_312_kernel(tmp_path: Path, project_wheel: Path) -> None:
    manifest = _build(REQUESTED, "kaggle-py312", tmp_path, project_wheel).manifest
    tifffile = manifest.wheel("tifffile")
    assert tifffile is not None and Version(tifffile.version) >= Version("2026.11")
    assert tifffile.upgrade_of == "2026.3.3"
    assert {"psutil", "numpy"} <= {entry.name for entry in manifest.skipped}
    assert manifest.wheel("numpy") is None and manifest.wheel("psutil") is None
    assert manifest.wheel("imagecodecs") is not None
    assert bundler.verify(tmp_path / "kaggle-py312") == []


def test_bundle_for_the_python_311_kernel(tmp_path: Path, project_wheel: Path) -> None:
    # Every tifffile since 2026.11 needs Python 3.12: the 3.11 kernel cannot have it, and the
    # bundler says so instead of vendoring a wheel that the kernel would refuse.
    with pytest.raises(NoWheelForTargetError, match=r"tifffile>=2026.11 .*Requires-Python >=3.12"):
        _build(REQUESTED, "kaggle-py311", tmp_path, project_wheel)
    manifest = _build(
        ["tifffile", "imagecodecs", "psutil"], "kaggle-py311", tmp_path, project_wheel
    ).manifest
    assert manifest.wheel("tifffile") is None, "the kernel's 2026.3.3 satisfies a bare tifffile"
    codecs = manifest.wheel("imagecodecs")
    # imagecodecs' newest wheels are cp312-only: the 3.11 kernel gets the last cp311 build.
    assert codecs is not None and Version(codecs.version) <= Version("2026.3.6")
    assert not any("cp312" in tag for tag in codecs.tags)
    assert bundler.verify(tmp_path / "kaggle-py311") == []


@pytest.mark.parametrize("profile", ["kaggle-py312", "kaggle-py311"])
def test_nnunetv2_keeps_every_kernel_package(
    tmp_path: Path, project_wheel: Path, profile: str
) -> None:
    # The newest nnunetv2 needs a dynamic-network-architectures that pins timm below the
    # kernel's 1.0.26: the resolver must find the older pair that keeps it (as uv does).
    result = bundler.build(
        ["nnunetv2"], tmp_path / profile, target=profile, cache_dir=tmp_path / "network-cache",
        include_self=project_wheel, dataset_id="tester/nnunet-wheels",
    )  # fmt: skip
    manifest = result.manifest
    assert result.replacements == () and result.problems == ()
    assert all(entry.upgrade_of is None for entry in manifest.wheels)
    assert manifest.wheel("nnunetv2") is not None
    assert manifest.wheel("dynamic-network-architectures") is not None
    skipped = {entry.name: entry.installed_version for entry in manifest.skipped}
    assert skipped["timm"] == "1.0.26" and skipped["torch"] == "2.10.0+cu128"
    assert not any(e.name.startswith(("nvidia-", "triton", "torch")) for e in manifest.wheels)


def test_vllm_dry_run_names_the_kernel_conflict_and_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # vLLM's newest release pins a torch the kernel lacks: the bundler says so, with the choices
    # and their sizes, instead of backtracking for twenty minutes into 2024 sdists.
    import time

    from bundler.__main__ import main

    started = time.perf_counter()
    status = main(["build", "vllm", "--target", "kaggle-py312", "--dry-run", "--no-self",
                   "-o", str(tmp_path / "house"), "--cache-dir", str(tmp_path / "cache"),
                   "--dataset-id", "tester/vllm-wheels"])  # fmt: skip
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    with capsys.disabled():
        print(f"\n{captured.err}{captured.out}took {seconds:.1f} s")
    error = captured.err.strip().splitlines()[-1]
    if status == 0:  # a vLLM release that keeps the kernel's torch is the newest: nothing to say
        assert "dry run for kaggle-py312" in captured.out
        return
    assert status == 2 and error.startswith("error: vllm ")
    assert "but the kernel has" in error and "choices: " in error
    assert "--allow-replace" in error and " to download with them)" in error
    assert not (tmp_path / "house").exists()
    assert seconds < 600
