"""Session-wide fixtures (the project's own wheel, built once from the working tree) and the
opt-in markers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("pyproject.toml", "README.md", "bundler", "runtime")
# Run only when -m names them (the real registry, a CUDA device). Deselected here rather than by
# an -m in addopts, which a user's own -m (say -m "not slow") would replace and so let them in.
OPT_IN_MARKERS = ("network", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    named = set(re.findall(r"[A-Za-z_]\w*", config.getoption("markexpr") or ""))
    left_out = [marker for marker in OPT_IN_MARKERS if marker not in named]
    deselected = [i for i in items if any(i.get_closest_marker(m) for m in left_out)]
    dropped = set(deselected)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if i not in dropped]


@pytest.fixture(autouse=True)
def _isolated_pip_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's pip configuration (extra indexes, find-links) out of every test.

    Tests build their own local indexes; a pip.conf or PIP_FIND_LINKS of the developer's machine
    must neither help them pass nor make them reach a registry.
    """
    for name in list(os.environ):
        if name.startswith("PIP_") or name.startswith("UV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kaggle-offline's own wheel, built with `build` from a copy of the working tree.

    Building from a copy keeps build/ and *.egg-info out of the checkout and lets parallel test
    runs build without stepping on each other.
    """
    source = tmp_path_factory.mktemp("project-source")
    for name in _SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("project-wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("kaggle_offline-*.whl")
    return wheel


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only spin-waits, badly on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
