"""The noxfile's simulated Kaggle image: it has the torch of the Python that runs nox.

`python -m nox -s kaggle` is often run by a Python inside a virtual environment that has torch.
The image must then have *that* torch (a ``--system-site-packages`` venv would see the base
interpreter's packages instead, and predict would fail with "No module named torch").
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

import noxfile
from tests.support.packages import make_wheel
from tests.support.venvs import Venv, copy_venv, run_checked, session_template


@pytest.fixture(scope="module")
def host_with_torch(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv (over a base interpreter without torch) that has torch installed in it.

    Its torch is this test run's own, linked entry by entry as its RECORD lists them, so the
    venv has a real installed distribution without a second copy of a gigabyte of files.
    """
    torch = importlib.metadata.distribution("torch")
    host = copy_venv(
        session_template(tmp_path_factory.getbasetemp()), tmp_path_factory.mktemp("host") / "venv"
    )
    root = Path(str(torch.locate_file("")))
    for top in sorted({file.parts[0] for file in torch.files or () if file.parts[0] != ".."}):
        if top != "__pycache__":
            (host.site_packages / top).symlink_to(root / top)
    return host


def test_the_image_built_by_a_venv_python_has_that_venvs_torch(
    host_with_torch: Venv, tmp_path: Path
) -> None:
    base = run_checked([str(host_with_torch.python), "-c", "import sys; print(sys.base_prefix)"])
    image = tmp_path / "image"
    logged: list[str] = []

    paths = noxfile.build_kaggle_image(
        image, host_with_torch.python, run=run_checked, log=logged.append, packages=()
    )

    probe = (
        "import importlib.metadata as m, importlib.util as u, json, sys;"
        "print(json.dumps([m.version('torch'), u.find_spec('torch').origin, sys.prefix]))"
    )
    version, origin, prefix = json.loads(
        run_checked([str(image / "bin" / "python"), "-c", probe]).stdout
    )
    assert version == importlib.metadata.version("torch")
    assert Path(origin).parent.parent in {Path(p) for p in paths}  # in the image's site-packages
    assert os.path.realpath(origin) == os.path.realpath(
        host_with_torch.site_packages / "torch" / "__init__.py"
    )
    assert prefix == str(image) and base.stdout.strip() != str(host_with_torch.path)
    assert "host torch" in logged[0]

    # A second build with the same host reuses the image.
    logged.clear()
    assert (
        noxfile.build_kaggle_image(
            image, host_with_torch.python, run=run_checked, log=logged.append, packages=()
        )
        == paths
    )
    assert logged == []


def test_the_image_install_shows_pips_progress(host_with_torch: Venv, tmp_path: Path) -> None:
    """The image's packages install with pip's own output, not a minute of `pip -q` silence."""
    links = tmp_path / "links"
    make_wheel(links, "ko-image-package", "1.0")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}
    said: list[str] = []
    logged: list[str] = []

    def run(argv: list[str]) -> None:
        result = run_checked(argv, env=env)
        said.append(result.stdout)

    noxfile.build_kaggle_image(
        tmp_path / "image", host_with_torch.python, run=run, log=logged.append,
        packages=("ko-image-package",),
    )  # fmt: skip

    assert "ko-image-package" in logged[0] and "pip's progress follows" in logged[0]
    assert "Successfully installed ko-image-package-1.0" in "".join(said)
