"""Offline install: discover wheelhouses, plan what is missing, verify every wheel, run pip once.

Each planned wheel is copied into a private temporary folder while its sha256 is computed, and pip
installs those copies: a wheel swapped in the dataset after it was checked cannot slip in, and a
single mismatch stops everything before pip starts. pip then runs once, with ``--no-index
--no-deps`` and its configuration cut off, so it never reaches for the network and never resolves
anything on its own. When nothing is missing no pip process starts at all. Standard library only.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.environment import Environment, installed_versions
from runtime.exceptions import HashMismatchError, InstallError, WheelhouseError
from runtime.install_report import InstallReport
from runtime.plan import Plan, PlannedWheel, make_plan
from runtime.versions import parse_version
from runtime.wheelhouses import Wheelhouse, find_wheelhouses, open_wheelhouse

_CHUNK = 1 << 20
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


def install(
    wheelhouses: Sequence[str | os.PathLike[str]] = (),
    *,
    input_root: str | os.PathLike[str] | None = None,
    search: bool | None = None,
    dry_run: bool = False,
    compile_bytecode: bool = False,
    environment: Environment | None = None,
    log: Callable[[str], None] | None = None,
) -> InstallReport:
    """Install into this interpreter whatever the attached wheelhouses hold and it lacks.

    ``wheelhouses`` names wheelhouse folders explicitly; the input root (``input_root``, else
    ``$KAGGLE_OFFLINE_INPUT_ROOT``, else ``/kaggle/input``) is searched when ``search`` is true,
    which is the default when no folder is named. ``compile_bytecode`` makes pip compile every
    module at install time (its default); off, each module is compiled when first imported, which
    in a kernel is a small part of what gets installed. Raises a :class:`KaggleOfflineError` subclass,
    with nothing installed, for anything that can be checked before pip runs.
    """
    say = log or (lambda _message: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    found, warnings = _gather(
        wheelhouses, input_root, not wheelhouses if search is None else search
    )
    timings["discover"] = time.perf_counter() - started
    mark = time.perf_counter()
    environment = environment or Environment.current()
    plan = make_plan(found, environment)
    timings["plan"] = time.perf_counter() - mark
    say(f"plan: {len(plan.install)} to install, {len(plan.skipped)} satisfied or skipped")

    installed: tuple[PlannedWheel, ...] = plan.install if dry_run else ()
    pip_ran = False
    if plan.install and not dry_run:
        installed, pip_warnings = _install_plan(plan, environment, compile_bytecode, timings, say)
        warnings.extend(pip_warnings)
        pip_ran = True
    timings["total"] = time.perf_counter() - started
    return InstallReport(
        wheelhouses=tuple(str(w.path) for w in plan.wheelhouses),
        ignored=plan.ignored,
        installed=installed,
        skipped=plan.skipped,
        warnings=tuple(warnings) + plan.warnings,
        dry_run=dry_run,
        pip_ran=pip_ran,
        timings=timings,
    )


def _gather(
    named: Sequence[str | os.PathLike[str]],
    input_root: str | os.PathLike[str] | None,
    search: bool,
) -> tuple[list[Wheelhouse], list[str]]:
    found = [open_wheelhouse(path) for path in named]
    warnings: list[str] = []
    if search:
        discovery = find_wheelhouses(input_root)
        discovery.raise_problems()
        known = {w.path.resolve() for w in found}
        found += [w for w in discovery.wheelhouses if w.path.resolve() not in known]
        if not found:
            warnings.append(f"no wheelhouse found under {discovery.root}")
    return found, warnings


def _install_plan(
    plan: Plan,
    environment: Environment,
    compile_bytecode: bool,
    timings: dict[str, float],
    say: Callable[[str], None],
) -> tuple[tuple[PlannedWheel, ...], list[str]]:
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-") as stage_name:
        mark = time.perf_counter()
        stage = Path(stage_name)
        staged = {wheel.name: stage_wheel(wheel, stage) for wheel in plan.install}
        timings["verify"] = time.perf_counter() - mark
        say(f"verified {len(staged)} wheels; running pip")

        mark = time.perf_counter()
        pip = pip_command(environment.executable, compile_bytecode=compile_bytecode)
        failure = _run_pip([*pip, *map(str, staged.values())])
        if failure is not None:
            landed = _landed(plan.install)
            retry = [w for w in plan.install if not w.optional and w.name not in landed]
            optional = [w for w in plan.install if w.optional and w.name not in landed]
            if not optional:
                raise _pip_error(failure, plan.install, landed)
            # An optional package (imagecodecs) must not sink the rest: once more without it.
            second = _run_pip([*pip, *(str(staged[w.name]) for w in retry)]) if retry else None
            if second is not None:
                raise _pip_error(second, plan.install, _landed(plan.install))
            warnings += [
                f"optional {w.name} {w.version} could not be installed: {failure}" for w in optional
            ]
        timings["pip"] = time.perf_counter() - mark
    importlib.invalidate_caches()  # so this process can import what pip just put in place
    landed = _landed(plan.install)
    missing = [w for w in plan.install if w.name not in landed and not w.optional]
    if missing:
        names = ", ".join(f"{w.name} {w.version}" for w in missing)
        raise InstallError(f"pip reported success but {names} is not installed in {sys.prefix}")
    return tuple(w for w in plan.install if w.name in landed), warnings


def stage_wheel(wheel: PlannedWheel, stage: Path) -> Path:
    """Copy ``wheel`` into ``stage`` while hashing it; raise unless it matches its manifest."""
    target = stage / wheel.filename
    digest = hashlib.sha256()
    size = 0
    try:
        with wheel.source.open("rb") as source, target.open("wb") as copy:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                copy.write(chunk)
                size += len(chunk)
    except OSError as error:  # unreadable source, or a full disk under the temporary folder
        raise WheelhouseError(
            f"{wheel.source}: cannot copy the wheel to {stage} for verification "
            f"({error.strerror or error}); nothing was installed"
        ) from None
    actual = digest.hexdigest()
    if wheel.sha256 is not None and (actual != wheel.sha256 or size != wheel.size):
        raise HashMismatchError(
            f"{wheel.source}: sha256 {actual[:16]}... ({size} bytes) does not match the "
            f"manifest's {wheel.sha256[:16]}... ({wheel.size} bytes): the wheel was altered or "
            "truncated, so nothing was installed; re-attach the dataset or rebuild the wheelhouse"
        )
    return target


def pip_command(executable: str, *, compile_bytecode: bool = False) -> list[str]:
    """The one pip invocation, less its wheel files: no index, no dependency resolution."""
    return [
        executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
        "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
        "--compile" if compile_bytecode else "--no-compile",
    ]  # fmt: skip


def pip_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(_PIP_ENVIRONMENT)
    return env


def _run_pip(argv: list[str]) -> str | None:
    """Run pip; None on success, else the line of its output that says what went wrong."""
    result = subprocess.run(
        argv,
        env=pip_environment(),
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


def _landed(planned: Sequence[PlannedWheel]) -> set[str]:
    """Names of planned wheels whose version is now installed (read fresh from disk)."""
    now = installed_versions()
    landed = set()
    for wheel in planned:
        version = now.get(wheel.name)
        if version is not None and (
            version == wheel.version or parse_version(version) == parse_version(wheel.version)
        ):
            landed.add(wheel.name)
    return landed


def _pip_error(message: str, planned: Sequence[PlannedWheel], landed: set[str]) -> InstallError:
    done = ", ".join(sorted(landed)) or "nothing"
    pending = ", ".join(w.name for w in planned if w.name not in landed)
    return InstallError(
        f"pip failed: {message} — installed before the failure: {done}; still missing: "
        f"{pending}; fix the cause and run the install again, it installs only what is missing"
    )
