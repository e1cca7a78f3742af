"""vLLM against the kernel's torch: the conflict said in seconds, the choices, the older release
when asked, torch replaced with its companions, dry runs, local mirrors and size limits.

A local index on 127.0.0.1 (tests/support/llm_fixtures.py) serves a vLLM-shaped family to the real
pip resolver in the bundler's shim, for the built-in kaggle-py312 profile (torch 2.10.0+cu128).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import bundler
from bundler.errors import (
    KernelConflictError,
    NoWheelForTargetError,
    ResolverTimeoutError,
    SdistBuildError,
    WheelhouseSizeError,
)
from bundler.kaggle.size_limits import SizeLimits
from tests.support.http_index import IndexServer, add_core_metadata, serve_index
from tests.support.llm_fixtures import PKG_RESOURCES, make_llm_index
from tests.support.packages import make_index, make_wheel

pytestmark = pytest.mark.slow
ANCIENT = "ko_llm-1.0.tar.gz"
NEWEST_SDIST = "ko_llm-3.0.tar.gz"


@pytest.fixture(scope="module")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_llm_index(tmp_path_factory.mktemp("llm-world"))
    add_core_metadata(root)  # as PyPI: PEP 658 metadata, so no wheel is read whole
    return root


@pytest.fixture
def server(index_root: Path) -> Iterator[IndexServer]:
    with serve_index(index_root, answer_head=True) as running:
        yield running


def _build(url: str, out: Path, requirements: list[str], **kwargs) -> bundler.BuildResult:
    kwargs.setdefault("include_self", False)
    kwargs.setdefault("dataset_id", "tester/llm-wheels")
    kwargs.setdefault("cache_dir", out.parent / "cache")
    return bundler.build(requirements, out, index_url=url, target="kaggle-py312", **kwargs)


def _wheel_gets(server: IndexServer) -> list[str]:
    return [path for path, _ in server.requests if path.endswith((".whl", ".tar.gz"))]


def test_the_conflict_is_named_within_seconds_with_both_choices(
    server: IndexServer, tmp_path: Path
) -> None:
    started = time.perf_counter()
    with pytest.raises(KernelConflictError) as caught:
        _build(server.url, tmp_path / "house", ["ko-llm"])
    seconds = time.perf_counter() - started
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "ko-llm 3.0 requires torch==2.14.0 but the kernel has torch 2.10.0+cu128 "
        "(and torchvision==0.29.0) (<user> -> ko-llm 3.0 -> torch) on kaggle-py312; choices: "
    )
    # The older release that keeps the kernel, with its size...
    size_15 = server.root / "simple" / "ko-llm" / "ko_llm-1.5-cp38-abi3-manylinux_2_28_x86_64.whl"
    assert f"ko-llm 1.5 ({size_15.stat().st_size / 1e3:.1f} kB)" in message
    assert "ask for ko-llm==1.5 or add --keep-kernel" in message
    # ... or torch replaced, with everything that moves with it and the bytes that costs.
    assert "--allow-replace torch to bundle ko-llm 3.0, which replaces torch 2.10.0+cu128 -> " in (
        message
    )
    for moved in ("torchvision 0.25.0+cu128 -> 0.29.0", "triton 3.6.0 -> 3.7.0",
                  "nvidia-cudnn-cu12 9.10.2.21 -> 9.19.0.1", "torchaudio 2.10.0+cu128 -> 2.14.0"):  # fmt: skip
        assert moved in message
    assert "(6 wheels, about 0.2 MB to download with them)" in message
    assert "--allow-replace torchvision" not in message, "a companion needs no flag of its own"
    # Said from metadata alone: no wheel or sdist fetched, nothing built, nothing written.
    assert _wheel_gets(server) == []
    assert not (tmp_path / "house").exists()
    assert seconds < 30, f"took {seconds:.1f} s"


def test_keep_kernel_bundles_the_newest_release_that_keeps_it(
    server: IndexServer, tmp_path: Path
) -> None:
    result = _build(server.url, tmp_path / "house", ["ko-llm"], keep_kernel=True)
    assert {e.name: e.version for e in result.manifest.wheels} == {"ko-llm": "1.5"}
    assert result.replacements == ()
    skipped = {entry.name: entry.installed_version for entry in result.manifest.skipped}
    assert skipped["torch"] == "2.10.0+cu128" and skipped["torchvision"] == "0.25.0+cu128"
    assert any("--keep-kernel: bundling ko-llm 1.5" in note for note in result.notes)
    # The ancient sdist (whose metadata build fails) and the newest's sdist were never fetched.
    assert server.count(ANCIENT) == 0 and server.count(NEWEST_SDIST) == 0
    assert bundler.verify(tmp_path / "house") == []


def test_the_ancient_sdist_is_never_built_even_when_it_is_all_that_fits(
    server: IndexServer, tmp_path: Path
) -> None:
    # ko-llm ships compiled wheels: the resolver gets --only-binary ko-llm, so the 2024-style
    # sdist is refused by name instead of built (vLLM 0.3.3: "No module named 'pkg_resources'").
    with pytest.raises(NoWheelForTargetError) as caught:
        _build(server.url, tmp_path / "house", ["ko-llm<1.5"])
    message = str(caught.value)
    assert "ko-llm<1.5" in message and "1.0 (sdist)" in message
    assert PKG_RESOURCES not in message
    assert server.count(ANCIENT) == 0


def test_allow_replace_torch_brings_its_companions(server: IndexServer, tmp_path: Path) -> None:
    house = tmp_path / "house"
    result = _build(server.url, house, ["ko-llm"], allow_replace=["torch"])
    versions = {e.name: e.version for e in result.manifest.wheels}
    assert versions == {
        "ko-llm": "3.0",
        "torch": "2.14.0",
        "torchvision": "0.29.0",  # ko-llm pins it
        "torchaudio": "2.14.0",  # nobody asked: the kernel's own pins torch==2.10.0
        "triton": "3.7.0",  # the new torch pins it
        "nvidia-cudnn-cu12": "9.19.0.1",
    }
    reasons = {r.name: (r.reason, r.companion_of) for r in result.replacements}
    assert reasons["torch"] == ("allowed", "")
    for name in ("torchvision", "torchaudio", "triton", "nvidia-cudnn-cu12"):
        assert reasons[name] == ("companion", "torch")
    # Every replacement is pinned in the manifest, so the installer replaces the kernel's copy.
    torchaudio = result.manifest.wheel("torchaudio")
    assert torchaudio is not None and torchaudio.specifier == "==2.14.0"
    assert torchaudio.upgrade_of == "2.10.0+cu128"
    manifest = json.loads((house / "manifest.json").read_text())
    sizes = {e.name: e.size for e in result.manifest.wheels}
    recorded = {r["name"]: r["size"] for r in manifest["replacements"]}
    assert recorded == {name: sizes[name] for name in recorded}
    assert manifest["replacement_bytes"] == sum(recorded.values())
    assert bundler.verify(house) == []


def test_dry_run_resolves_fully_and_downloads_nothing(server: IndexServer, tmp_path: Path) -> None:
    house = tmp_path / "house"
    result = _build(server.url, house, ["ko-llm"], allow_replace=["torch"], dry_run=True)
    assert result.dry_run and result.downloaded == ()
    files = {path.name: path.stat().st_size for path in (server.root / "simple").rglob("*.whl")}
    wheels = {e.filename: e.size for e in result.manifest.wheels}
    assert len(wheels) == 6 and wheels == {name: files[name] for name in wheels}
    assert result.planned_bytes == sum(wheels.values()) == result.to_download_bytes
    assert {r.name for r in result.replacements} == {
        "torch", "torchvision", "torchaudio", "triton", "nvidia-cudnn-cu12"
    }  # fmt: skip
    by_name = {e.name: e.size for e in result.manifest.wheels}
    assert all(r.size == by_name[r.name] for r in result.replacements)
    assert {s.name for s in result.manifest.skipped} >= {"numpy", "sympy", "filelock"}
    # Metadata files and HEADs only: not one byte of a wheel, and nothing written or cached.
    assert _wheel_gets(server) == []
    assert any(path.endswith(".whl") for path in server.heads)
    assert not house.exists()
    stored = {path.name for path in (tmp_path / "cache").rglob("*") if path.is_file()}
    assert not {e.sha256 for e in result.manifest.wheels} & stored, "a wheel was downloaded"


def test_the_dry_run_command_prints_the_sets_and_sizes(
    server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bundler.__main__ import main

    status = main(["build", "ko-llm", "--dry-run", "--allow-replace", "torch", "-i", server.url,
                   "--no-self", "-o", str(tmp_path / "house"), "--cache-dir", str(tmp_path / "c"),
                   "--dataset-id", "tester/llm-wheels", "-q"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("dry run for kaggle-py312 (nothing downloaded or written):")
    assert "torch==2.14.0 (69.9 kB)" in out
    assert "replaced  5 kernel packages" in out
    assert "torchaudio 2.10.0+cu128 -> 2.14.0 (companion of torch)" in out
    assert "to download" in out and not (tmp_path / "house").exists()


def test_a_wheelhouse_over_a_size_limit_is_refused_before_downloading(
    server: IndexServer, tmp_path: Path
) -> None:
    with pytest.raises(WheelhouseSizeError) as caught:
        _build(server.url, tmp_path / "a", ["ko-llm"], allow_replace=["torch"],
               size_limits=SizeLimits(file_bytes=50_000))  # fmt: skip
    message = str(caught.value)
    assert "\n" not in message
    assert "1 wheel(s) exceed the per-file limit of 50.0 kB: " in message
    assert "torch-2.14.0-cp312-cp312-manylinux_2_28_x86_64.whl (69.9 kB)" in message
    assert "nothing was downloaded" in message
    with pytest.raises(WheelhouseSizeError) as caught:
        _build(server.url, tmp_path / "b", ["ko-llm"], allow_replace=["torch"],
               size_limits=SizeLimits(dataset_bytes=100_000))  # fmt: skip
    message = str(caught.value)
    assert "the wheels total 0.2 MB, over a Kaggle dataset's limit of 0.1 MB" in message
    assert _wheel_gets(server) == []


def test_the_resolver_is_stopped_at_its_time_limit_and_says_so(
    server: IndexServer, tmp_path: Path
) -> None:
    with pytest.raises(ResolverTimeoutError) as caught:
        _build(server.url, tmp_path / "house", ["ko-llm==1.5"], resolve_timeout=0.3)
    message = str(caught.value)
    assert message.startswith("pip's resolver stopped after 0 s (--resolve-timeout)")
    assert "--resolve-timeout SECONDS" in message and "\n" not in message


def test_a_file_index_and_find_links_beside_the_default_index(
    server: IndexServer, tmp_path: Path
) -> None:
    # The mpmath case: a package served only by a file:// extra index (a local mirror) and one
    # only in a --find-links folder, beside the default (HTTP) index that serves the rest.
    mirror = make_index(
        tmp_path / "mirror",
        [make_wheel(tmp_path / "dists", "ko-mirrored", "1.3.0", requires=["ko-linked"])],
    )
    links = tmp_path / "links"
    make_wheel(links, "ko-linked", "2.0")
    result = _build(
        server.url, tmp_path / "house", ["ko-mirrored", "ko-llm==1.5"],
        extra_index_urls=[mirror], find_links=[str(links)],
    )  # fmt: skip
    versions = {e.name: e.version for e in result.manifest.wheels}
    assert versions == {"ko-mirrored": "1.3.0", "ko-linked": "2.0", "ko-llm": "1.5"}
    assert bundler.verify(tmp_path / "house") == []


def test_a_failed_build_requirement_names_the_sdist_and_the_reason(
    server: IndexServer, tmp_path: Path
) -> None:
    # pip's nested install of ko-oldbuild's build requirements fetches ko-helper, then fails:
    # the error is ko-oldbuild's, with pip's reason, never "ko-helper 1.0: ... failed".
    with pytest.raises(SdistBuildError) as caught:
        _build(server.url, tmp_path / "house", ["ko-oldbuild"])
    message = str(caught.value)
    assert message.startswith("ko-oldbuild 1.0: installing its build requirements failed (")
    assert "ko-no-such-builddep" in message
    assert "ko-helper" not in message and "\n" not in message
