"""sdists: built in isolation from the bundler's own sources; every failure names package and why."""

from __future__ import annotations

from pathlib import Path

import pytest

import bundler
from bundler.errors import SdistBuildError
from tests.support.packages import make_index, make_wheel
from tests.support.sdists import make_sdist

pytestmark = pytest.mark.slow  # every test builds sdists into wheels with pip


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> str:
    dists = tmp_path_factory.mktemp("sdist-dists")
    return make_index(
        tmp_path_factory.mktemp("sdist-index"),
        [
            # Like a setuptools project in a plain `python -m venv`: the host has *a* setuptools
            # (this test environment has one), but the backend asks for one more requirement
            # at build time (old setuptools asked for "wheel") that the host lacks.
            make_sdist(
                dists, "ko-legacy", "1.0",
                build_requires=["setuptools>=40.8.0"], dynamic_build_requires=["ko-wheel"],
            ),
            # Build requirements come from the bundler's index, never from the host or PyPI.
            make_wheel(dists, "setuptools", "99.0"),
            make_wheel(dists, "ko-wheel", "1.0"),
            make_sdist(dists, "ko-badmeta", "1.0", fail_metadata="ko-badmeta needs gfortran"),
            make_wheel(dists, "ko-lib", "1.0"),
        ],
    )  # fmt: skip


def _build(index: str, requirements: list[str], root: Path, **kwargs) -> bundler.BuildResult:
    return bundler.build(
        requirements, root / "house", index_url=index, cache_dir=root / "cache",
        include_self=False, dataset_id="tester/ko-wheels", **kwargs,
    )  # fmt: skip


def test_an_sdist_whose_backend_needs_more_than_the_host_has_builds_in_isolation(
    index: str, tmp_path: Path
) -> None:
    result = _build(index, ["ko-legacy"], tmp_path)
    assert result.built == ("ko_legacy-1.0-py3-none-any.whl",)
    entry = result.manifest.wheel("ko-legacy")
    assert entry is not None and entry.filename == "ko_legacy-1.0-py3-none-any.whl"
    assert bundler.verify(result.output_dir) == []


def test_a_failed_metadata_build_names_the_package_and_the_reason(
    index: str, tmp_path: Path
) -> None:
    with pytest.raises(SdistBuildError) as caught:
        _build(index, ["ko-badmeta"], tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ko-badmeta 1.0: building its metadata failed")
    assert "RuntimeError: ko-badmeta needs gfortran" in message


def test_an_optional_whose_metadata_fails_is_recorded_with_package_and_reason(
    index: str, tmp_path: Path
) -> None:
    result = _build(index, ["ko-lib", "ko-badmeta"], tmp_path, optional=["ko-badmeta"])
    (missing,) = result.manifest.missing_optional
    assert missing.name == "ko-badmeta"
    assert missing.reason.startswith("ko-badmeta 1.0: building its metadata failed")
    assert "ko-badmeta needs gfortran" in missing.reason
