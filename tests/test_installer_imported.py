"""A replacement of a package the running process already imported is refused, in one line.

A venv stands in for the kernel (beta 1.0 preinstalled); the wheelhouse replaces it with 2.0, as
``--allow-replace torch`` replaces the kernel's torch. A process that imported beta first (a
notebook that ran ``import torch`` before bootstrap) is refused before pip starts; a fresh one
installs. Real wheels, real pip, no network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runtime.installer.imported import imported_distributions
from tests.support.netns import offline, require_netns
from tests.support.venvs import Venv, copy_venv, run_checked, runtime_source_path, session_template
from tests.support.wheelhouses import bundle, kernel_profile, session_index

pytestmark = [pytest.mark.netns, pytest.mark.slow]

_INSTALL = (
    "from runtime.installer.core import install\n"
    "from runtime.contract.errors import KaggleOfflineError\n"
    "try:\n"
    "    print(install([{house!r}], search=False, dry_run={dry_run}).summary())\n"
    "except KaggleOfflineError as error:\n"
    "    print('error:', error)\n"
)


@pytest.fixture
def kernel(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path]:
    require_netns()
    index, wheels = session_index(tmp_path_factory.getbasetemp())
    venv = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    run_checked(
        offline([str(venv.python), "-m", "pip", "install", "-q", "--no-index",
                 str(wheels["beta-1.0"])])
    )  # fmt: skip
    house = tmp_path / "house"
    bundle(house, ["beta>=2"], index, cache_dir=tmp_path_factory.getbasetemp() / "bundler-cache",
           target=kernel_profile({"beta": "1.0"}))  # fmt: skip
    return venv, house


def _python(venv: Venv, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}
    return run_checked(offline([str(venv.python), "-c", code]), check=False, env=env)


def test_replacing_an_imported_package_is_refused_before_pip(kernel: tuple[Venv, Path]) -> None:
    venv, house = kernel
    code = "import beta\n" + _INSTALL.format(house=str(house), dry_run=False)
    refused = _python(venv, code)
    line = refused.stdout.strip()
    assert line.startswith("error: beta 1.0 is already imported in this process (module 'beta')")
    assert "restart the kernel and run bootstrap.py before anything imports it" in line
    assert "\n" not in line
    assert venv.distributions()["beta"] == "1.0", "nothing was installed"
    # A dry run in the same state says it, as a warning, and the plan with its size.
    planned = _python(venv, "import beta\n" + _INSTALL.format(house=str(house), dry_run=True))
    assert "replacing beta 1.0 -> 2.0 (1 wheels, " in planned.stdout
    assert "1 warning" in planned.stdout
    # The first thing a fresh process does: the install goes through.
    done = _python(venv, _INSTALL.format(house=str(house), dry_run=False))
    assert done.stdout.startswith("kaggle-offline: installed 1 (beta 2.0), replacing beta 1.0")
    assert venv.distributions()["beta"] == "2.0"


def test_imported_distributions_maps_modules_to_their_distribution() -> None:
    import packaging.version  # noqa: F401 (imported, so it counts as loaded)

    found = imported_distributions(["packaging", "no-such-dist"])
    assert found == {"packaging": ["packaging"]}
    assert imported_distributions(["packaging"], modules=["json"]) == {}
