"""Fresh, real virtual environments for install tests, cheap enough to make one per test.

``python -m venv`` with pip costs seconds; a copy of one template costs tens of milliseconds.
A copy stays valid because a venv finds its prefix from the ``pyvenv.cfg`` beside its
``bin/python`` symlink, and every call goes through ``bin/python -m ...`` (the copied console
scripts keep the template's shebang, so they are never used).
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_LIST_DISTRIBUTIONS = """
import json, importlib.metadata as m, re
print(json.dumps({re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version
                  for d in m.distributions()}))
"""


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        (site,) = (self.path / "lib").glob("python3*/site-packages")
        return site

    def run(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # The venv's own folder as the default working directory: the checkout may hold a
        # kaggle_offline.egg-info that would otherwise show up as an installed distribution.
        return run_checked([str(self.python), *args], check=check, env=env, cwd=cwd or self.path)

    def distributions(self) -> dict[str, str]:
        """Canonical name -> version, as this venv's own importlib.metadata reports them."""
        return json.loads(self.run("-c", _LIST_DISTRIBUTIONS).stdout)


def run_checked(
    argv: list[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    # Never the checkout by default: `python -m` and `-c` put the working directory on sys.path.
    cwd = cwd or runtime_source_path()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr}"
        )
    return result


def make_template(path: Path) -> Venv:
    """A venv with pip (so that real pip does the installing), built with the base interpreter."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    run_checked([str(base), "-m", "venv", str(path)])
    return Venv(path)


def copy_venv(template: Venv, path: Path) -> Venv:
    shutil.copytree(template.path, path, symlinks=True)
    return Venv(path)


_TEMPLATES: dict[Path, Venv] = {}


def session_template(base_temp: Path) -> Venv:
    """One template venv per test session (keyed by pytest's base temp folder), made on demand."""
    if base_temp not in _TEMPLATES:
        _TEMPLATES[base_temp] = make_template(base_temp / "template-venv")
    return _TEMPLATES[base_temp]


@cache
def runtime_source_path() -> Path:
    """A folder holding only ``runtime`` (linked to the checkout), to put on PYTHONPATH.

    Putting the checkout itself there would also expose whatever build leftovers it holds (a
    kaggle_offline.egg-info makes kaggle-offline look installed in every venv).
    """
    folder = Path(tempfile.mkdtemp(prefix="kaggle-offline-source-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "runtime").symlink_to(Path(__file__).resolve().parents[2] / "runtime")
    return folder
