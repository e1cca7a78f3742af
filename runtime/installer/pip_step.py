"""The one pip run of an install: offline by construction, no resolution, no index.

pip installs the verified copies with ``--no-index --no-deps`` and its configuration cut off, so
it never reaches for the network and never resolves anything on its own. What a killed pip left
behind (its ``~name`` stash folders) is removed here too, under the install lock.
Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable

__all__ = ["offline_pip_environment", "pip_command", "remove_pip_debris", "run_pip"]

# pip reads these from the environment; a kernel (or a user's shell) may point them at an index.
# Every PIP_* variable is dropped and these are set, so the one pip run is offline by construction.
_PIP_ENVIRONMENT = {
    "PIP_NO_INDEX": "1",
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "PIP_ROOT_USER_ACTION": "ignore",
    "PIP_NO_WARN_SCRIPT_LOCATION": "1",
}


def pip_command(executable: str, *, compile_bytecode: bool = False) -> list[str]:
    """The one pip invocation, less its wheel files: no index, no dependency resolution."""
    return [
        executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
        "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
        "--compile" if compile_bytecode else "--no-compile",
    ]  # fmt: skip


def offline_pip_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(_PIP_ENVIRONMENT)
    return env


def run_pip(argv: list[str]) -> str | None:
    """Run pip; None on success, else the line of its output that says what went wrong."""
    result = subprocess.run(
        argv,
        env=offline_pip_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return None
    return _pip_error_line(result.stderr, result.stdout)


def _pip_error_line(stderr: str, stdout: str) -> str:
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    if any("No module named pip" in line for line in lines):
        return "pip is not installed for this interpreter (python -m ensurepip can add it)"
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip exited with an error and printed nothing"])[0]


def remove_pip_debris(folders: Iterable[str]) -> tuple[list[str], list[str]]:
    """Delete pip's leftover ``~name`` folders: (removed, "path (why)" for those that stay).

    pip moves what an upgrade uninstalls to ``~name`` beside it and deletes that once the new
    version is in place; a pip killed in between leaves it, and every later pip run warns
    "Ignoring invalid distribution ~name". Call it only while holding the install lock, so that
    no pip of ours is using the stash right now.
    """
    removed: list[str] = []
    left: list[str] = []
    for folder in folders:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except OSError as error:
            left.append(f"{folder} ({error.strerror or error})")
        else:
            removed.append(folder)
    return removed, left
