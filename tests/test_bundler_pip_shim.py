"""The pip shim guards itself: a patch pip no longer goes through is an error, never a silent
resolution for this machine, and the report's marker environment must be the target's.

Each test plays a future pip by changing, before the shim runs, how this pip computes one thing
(a ``sitecustomize`` on the shim's PYTHONPATH), as a pip release that moved the code would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import bundler
from bundler.errors import PipVersionError
from bundler.resolution.pip_shim import REQUIRED_CALLS, bypassed_patches
from tests.support.packages import make_index, make_wheel

_TAGS_ELSEWHERE = """
    # A pip that computes the supported tags without compatibility_tags.get_supported().
    from pip._internal.models.target_python import TargetPython
    from pip._vendor.packaging import tags

    def _tags(self):
        return list(tags.sys_tags())

    TargetPython.get_sorted_tags = _tags
    TargetPython.get_unsorted_tags = lambda self: set(_tags(self))
"""

_INSTALLED_ELSEWHERE = """
    # A pip whose resolver reads the installed distributions through another function.
    from pip._internal import metadata
    from pip._internal.resolution.resolvelib import factory

    factory.get_default_environment = lambda: metadata.get_environment(None)
"""

_REPORT_ENVIRONMENT_ELSEWHERE = """
    # A pip whose report takes the marker environment from somewhere else.
    from pip._internal.models.installation_report import InstallationReport

    original = InstallationReport.to_dict

    def to_dict(self):
        data = original(self)
        return {**data, "environment": {**data["environment"], "python_full_version": "3.11.99"}}

    InstallationReport.to_dict = to_dict
"""


@pytest.fixture
def index(tmp_path: Path) -> str:
    return make_index(tmp_path / "index", [make_wheel(tmp_path / "dists", "ko-lib", "1.0")])


def _with_sitecustomize(monkeypatch: pytest.MonkeyPatch, folder: Path, source: str) -> None:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(source))
    monkeypatch.setenv("PYTHONPATH", str(folder))


def _build(index: str, root: Path) -> bundler.BuildResult:
    return bundler.build(
        ["ko-lib"], root / "house", index_url=index, cache_dir=root / "cache",
        include_self=False, dataset_id="tester/ko-wheels",
    )  # fmt: skip


def test_every_required_patch_is_called_in_a_real_resolution(index: str, tmp_path: Path) -> None:
    assert _build(index, tmp_path).manifest.wheel("ko-lib") is not None  # the control


def test_a_patch_without_effect_is_an_error_before_pip_runs(
    index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_sitecustomize(monkeypatch, tmp_path / "site", _TAGS_ELSEWHERE)
    with pytest.raises(PipVersionError) as caught:
        _build(index, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "TargetPython gives" in message and "not the target's" in message
    assert "pip install" in message
    assert not (tmp_path / "house" / "manifest.json").exists()


def test_a_patch_that_pip_no_longer_calls_is_an_error(
    index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_sitecustomize(monkeypatch, tmp_path / "site", _INSTALLED_ELSEWHERE)
    with pytest.raises(PipVersionError) as caught:
        _build(index, tmp_path)
    assert "pip never called the patched installed" in str(caught.value)


def test_a_report_for_another_environment_is_an_error(
    index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_sitecustomize(monkeypatch, tmp_path / "site", _REPORT_ENVIRONMENT_ELSEWHERE)
    with pytest.raises(PipVersionError) as caught:
        _build(index, tmp_path)
    message = str(caught.value)
    assert "resolved for python_full_version='3.11.99', not the target's '3.12.12'" in message


def test_bypassed_patches_names_each_missing_call() -> None:
    calls = {
        name if caller is None else f"{name}@{caller}": 1 for name, caller in REQUIRED_CALLS.items()
    }
    assert bypassed_patches(calls) == []
    calls["installed@pip._internal.commands.install"] = calls.pop(
        "installed@pip._internal.resolution.resolvelib.factory"
    )
    assert bypassed_patches({**calls, "requires-python": 0}) == ["installed", "requires-python"]
