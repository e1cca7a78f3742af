"""The lowest and the highest pip of ``SUPPORTED_PIP``, each driving a real bundle.

Opt-in (``pytest -m network``): each pip is installed from the package registry into a fresh
venv. The bundle itself uses only a local index over HTTP, and covers every patch point of the
shim and the transport: markers, tags, Requires-Python, the kernel's installed set and its
constraints (ko-net backtracks to 1.0), an sdist, and a download through pip's session.
The suite's own environment runs the range's highest pip on every default run too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.resolution.resolve import SUPPORTED_PIP
from tests.support.bundler_fixtures import make_distributions
from tests.support.http_index import add_core_metadata, serve_index
from tests.support.packages import make_index

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parent.parent
LOWEST = min(spec.version for spec in SUPPORTED_PIP if spec.operator == ">=")
HIGHEST = "26.3"  # SUPPORTED_PIP stops below 26.4

_SCRIPT = """
import json, sys
import bundler
result = bundler.build(
    ["ko-net", "ko-app"], sys.argv[2], index_url=sys.argv[1], cache_dir=sys.argv[3],
    include_self=False, dataset_id="tester/ko-wheels", target="kaggle-py312",
)
print(json.dumps({"wheels": {e.name: e.version for e in result.manifest.wheels},
                  "problems": list(result.problems), "downloaded": list(result.downloaded)}))
"""


@pytest.mark.parametrize("pip_version", [LOWEST, HIGHEST])
def test_a_bundle_with_each_end_of_the_supported_pip_range(
    tmp_path: Path, pip_version: str
) -> None:
    assert SUPPORTED_PIP.contains(pip_version)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"pip=={pip_version}", "packaging", "build"],
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},  # pip's own configuration
    )
    make_index(tmp_path / "index", make_distributions(tmp_path / "dists"))
    add_core_metadata(tmp_path / "index")
    with serve_index(tmp_path / "index") as server:
        completed = subprocess.run(
            [python, "-c", _SCRIPT, server.url, str(tmp_path / "house"), str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
            check=False,
        )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["wheels"] == {
        "ko-net": "1.0", "ko-arch": "1.0", "ko-app": "1.0", "ko-lib": "2.0", "ko-pure": "0.5",
    }  # fmt: skip
    assert result["problems"] == []
    assert "ko_lib-2.0-py3-none-any.whl" in result["downloaded"]
