"""Offline install: discover wheelhouses, plan what is missing, verify every wheel, run pip once.

Each planned wheel is copied into a private temporary folder while its sha256 is computed, and pip
installs those copies: a wheel swapped in the dataset after it was checked cannot slip in, and a
single mismatch stops everything before pip starts. pip then runs once, with ``--no-index
--no-deps`` and its configuration cut off, so it never reaches for the network and never resolves
anything on its own. When nothing is missing no pip process starts at all. Standard library only.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.contract.errors import InstallError
from runtime.installer.discovery import Wheelhouse, find_wheelhouses, open_wheelhouse
from runtime.installer.interpreter import Interpreter, installed_versions
from runtime.installer.pip_step import pip_command, run_pip
from runtime.installer.plan import InstallPlan, PlannedWheel, make_plan
from runtime.installer.report import InstallReport
from runtime.installer.staging import stage_wheel
from runtime.installer.versions import parse_version


def install(
    wheelhouses: Sequence[str | os.PathLike[str]] = (),
    *,
    input_root: str | os.PathLike[str] | None = None,
    search: bool | None = None,
    dry_run: bool = False,
    compile_bytecode: bool = False,
    interpreter: Interpreter | None = None,
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
    interpreter = interpreter or Interpreter.current()
    plan = make_plan(found, interpreter)
    timings["plan"] = time.perf_counter() - mark
    say(f"plan: {len(plan.install)} to install, {len(plan.skipped)} satisfied or skipped")

    installed: tuple[PlannedWheel, ...] = plan.install if dry_run else ()
    pip_ran = False
    if plan.install and not dry_run:
        installed, pip_warnings = _install_plan(plan, interpreter, compile_bytecode, timings, say)
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
    plan: InstallPlan,
    interpreter: Interpreter,
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
        pip = pip_command(interpreter.executable, compile_bytecode=compile_bytecode)
        failure = run_pip([*pip, *map(str, staged.values())])
        if failure is not None:
            landed = _landed(plan.install)
            retry = [w for w in plan.install if not w.optional and w.name not in landed]
            optional = [w for w in plan.install if w.optional and w.name not in landed]
            if not optional:
                raise _pip_error(failure, plan.install, landed)
            # An optional package (imagecodecs) must not sink the rest: once more without it.
            second = run_pip([*pip, *(str(staged[w.name]) for w in retry)]) if retry else None
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
