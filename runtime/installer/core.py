"""Offline install: discover wheelhouses, plan what is missing, verify every wheel, run pip once.

Each planned wheel is copied into a private temporary folder while its sha256 is computed, and pip
installs those copies: a wheel swapped in the dataset after it was checked cannot slip in, and a
single mismatch stops everything before pip starts. pip then runs once, with ``--no-index
--no-deps`` and its configuration cut off, so it never reaches for the network and never resolves
anything on its own. When nothing is missing no pip process starts and no lock is taken at all.

The failure policy, case by case:

* a wheelhouse named explicitly (``--wheelhouse``, bootstrap.py's own folder) that is broken is
  an error; one found by the search is left out with a warning and the others are used, unless
  it is all the search found (then it is the error);
* a folder of wheels without a manifest is installed from only with ``allow_unverified``;
* an install that has something to do takes the environment's install lock (waiting up to
  ``lock_timeout`` for another one), then plans again, so a second install at the same time
  reports what it really did; pip's debris of an interrupted install is removed under that lock,
  and only reported (with the command that removes it) by a run that has nothing to install,
  which stays read-only;
* an optional wheel that pip cannot install is dropped and the rest installed, unless a required
  wheel needs it; any other pip failure names what landed and what is still missing.
* before pip starts, the verified copies must be what their names say (METADATA's name and
  version) and fit: the copies the temporary folder's free space, their unpacked size and file
  count site-packages' (:mod:`prechecks`);
* what pip is handed is written to a journal first (:mod:`journal`): a package it left unfinished,
  by failing or by being killed, is never counted as installed, and is installed again.

Standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from runtime.contract.errors import InstallError, WheelhouseError
from runtime.installer import journal
from runtime.installer.discovery import Wheelhouse, find_wheelhouses, open_wheelhouse
from runtime.installer.interpreter import Interpreter, installed_versions
from runtime.installer.lock import DEFAULT_TIMEOUT, install_lock, lock_path
from runtime.installer.pip_step import pip_command, remove_pip_debris, run_pip
from runtime.installer.plan import InstallPlan, PlannedWheel, make_plan
from runtime.installer.prechecks import (
    check_space,
    checked_archive,
    install_folder,
    space_needed,
    staging_need,
)
from runtime.installer.report import InstallReport
from runtime.installer.staging import stage_wheel
from runtime.installer.versions import same_version


def install(
    wheelhouses: Sequence[str | os.PathLike[str]] = (),
    *,
    input_root: str | os.PathLike[str] | None = None,
    search: bool | None = None,
    dry_run: bool = False,
    compile_bytecode: bool = False,
    allow_unverified: bool = False,
    lock_timeout: float = DEFAULT_TIMEOUT,
    interpreter: Interpreter | None = None,
    log: Callable[[str], None] | None = None,
) -> InstallReport:
    """Install into this interpreter whatever the attached wheelhouses hold and it lacks.

    ``wheelhouses`` names wheelhouse folders explicitly; the input root (``input_root``, else
    ``$KAGGLE_OFFLINE_INPUT_ROOT``, else ``/kaggle/input``) is searched when ``search`` is true,
    which is the default when no folder is named. ``compile_bytecode`` makes pip compile every
    module at install time (its default); off, each module is compiled when first imported, which
    in a kernel is a small part of what gets installed. ``allow_unverified`` lets folders of
    wheels without a manifest be installed from. ``log`` hears progress; a wait for another
    install's lock is told to it, or printed to stderr without one (a silent wait looks like a
    hang). Raises a :class:`KaggleOfflineError` subclass, with nothing installed, for anything
    that can be checked before pip runs.
    """
    say = log or (lambda _message: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    found, warnings = _gather(
        wheelhouses, input_root, not wheelhouses if search is None else search
    )
    timings["discover"] = time.perf_counter() - started
    mark = time.perf_counter()
    lock = lock_path()
    pending = journal.journal_path(lock)
    interpreter, unfinished = _finished_only(interpreter or Interpreter.current(), pending)
    plan = make_plan(found, interpreter, allow_unverified=allow_unverified)
    timings["plan"] = time.perf_counter() - mark
    say(f"plan: {len(plan.install)} to install, {len(plan.skipped)} satisfied or skipped")

    installed: tuple[PlannedWheel, ...] = plan.install if dry_run else ()
    pip_ran = False
    if dry_run or not plan.install:
        warnings += _debris_warnings(interpreter.debris)
        warnings += _unfinished_warnings(unfinished, removed=False)
    else:
        notice = log or (lambda message: print(message, file=sys.stderr, flush=True))
        with install_lock(lock, timeout=lock_timeout, on_wait=notice) as waited:
            if waited:
                timings["lock"] = waited
                warnings.append(
                    f"waited {waited:.1f} s for another kaggle-offline install into this "
                    "environment, then planned again"
                )
            # Whatever another install did before we got the lock is no longer missing.
            interpreter, unfinished = _finished_only(interpreter.rescanned(), pending)
            plan = make_plan(found, interpreter, allow_unverified=allow_unverified)
            warnings += _remove_debris(interpreter.debris)
            warnings += _unfinished_warnings(unfinished, removed=True)
            if plan.install:
                installed, pip_warnings = _install_plan(
                    plan, interpreter, compile_bytecode, timings, say, pending
                )
                warnings.extend(pip_warnings)
                pip_ran = True
            elif not unfinished:
                journal.clear(pending)  # every distribution it named is whole: nothing pending
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
    """The named wheelhouses (each must be sound) and, when searching, every one found."""
    found = [open_wheelhouse(path) for path in named]
    warnings: list[str] = []
    if search:
        discovery = find_wheelhouses(input_root)
        known = {w.path.resolve() for w in found}
        found += [w for w in discovery.wheelhouses if w.path.resolve() not in known]
        if discovery.problems and not found:
            discovery.raise_problems()  # all there is is broken: that is the error, not a shrug
        warnings += [
            f"left out a broken wheelhouse, the others were used: {problem}"
            for problem in discovery.problems
        ]
        if not found:
            warnings.append(f"no wheelhouse found under {discovery.root}")
    return found, warnings


def _debris_warnings(debris: Sequence[str]) -> list[str]:
    if not debris:
        return []
    return [
        "pip's leftovers of an interrupted install, which make every pip run warn: "
        f"{', '.join(debris)}; remove them with: rm -rf {' '.join(map(shlex.quote, debris))}"
    ]


def _finished_only(
    interpreter: Interpreter, pending: Path
) -> tuple[Interpreter, list[journal.Incomplete]]:
    """``interpreter`` less what an earlier pip run left unfinished (named in its journal)."""
    if interpreter.scanned is None:
        return interpreter, []  # given by hand: nothing on disk to check
    unfinished = journal.find_incomplete(interpreter.scanned, journal.read(pending))
    return interpreter.without(item.name for item in unfinished), unfinished


def _unfinished_warnings(unfinished: Sequence[journal.Incomplete], *, removed: bool) -> list[str]:
    """Under the lock, the unfinished ``.dist-info`` folders go (pip installs them afresh)."""
    if not unfinished:
        return []
    names = ", ".join(map(str, unfinished))
    if not removed:
        return [f"an earlier install did not finish {names}: counted as not installed"]
    left = journal.remove(unfinished)
    warnings = [f"an earlier install did not finish {names}: installing again"]
    if left:
        warnings.append(f"could not remove {', '.join(left)}; delete it by hand (rm -rf)")
    return warnings


def _remove_debris(debris: Sequence[str]) -> list[str]:
    removed, left = remove_pip_debris(debris)
    warnings = []
    if removed:
        warnings.append(f"removed pip's leftovers of an interrupted install: {', '.join(removed)}")
    if left:
        warnings.append(
            f"could not remove pip's leftovers of an interrupted install: {', '.join(left)}; "
            "delete them by hand (rm -rf), or pip warns about them on every run"
        )
    return warnings


def _install_plan(
    plan: InstallPlan,
    interpreter: Interpreter,
    compile_bytecode: bool,
    timings: dict[str, float],
    say: Callable[[str], None],
    pending: Path,
) -> tuple[tuple[PlannedWheel, ...], list[str]]:
    warnings: list[str] = []
    temporary = Path(tempfile.gettempdir())
    check_space(staging_need(plan.install, temporary))
    with _stage_folder(temporary) as stage:
        mark = time.perf_counter()
        staged = {wheel.name: stage_wheel(wheel, stage) for wheel in plan.install}
        # What pip would install and what unpacking costs, read from the verified copies.
        archives = [checked_archive(wheel, staged[wheel.name]) for wheel in plan.install]
        check_space(space_needed(archives, install_folder(), compile_bytecode=compile_bytecode))
        timings["verify"] = time.perf_counter() - mark
        say(f"verified {len(staged)} wheels; running pip")

        mark = time.perf_counter()
        try:
            journal.write(pending, [(wheel.name, wheel.version) for wheel in plan.install])
        except OSError as error:
            raise InstallError(
                f"{pending}: cannot write the install journal ({error.strerror or error}); "
                "nothing was installed"
            ) from None
        pip = pip_command(interpreter.executable, compile_bytecode=compile_bytecode)
        failure = run_pip([*pip, *map(str, staged.values())])
        if failure is not None:
            landed = _landed(plan.install, pending)
            optional = [w for w in plan.install if w.optional and w.name not in landed]
            if not optional:
                raise _pip_error(failure, plan.install, landed)
            # An optional package (imagecodecs) must not sink the rest: once more without it,
            # unless a required wheel needs it (then the rest would be installed broken).
            dropped = {w.name for w in optional}
            needing = sorted(
                w.name
                for w in plan.install
                if w.name in plan.dependents(dropped) and not w.optional
            )
            if needing:
                raise _pip_error(
                    f"{failure} (optional {', '.join(sorted(dropped))} failed, and "
                    f"{', '.join(needing)} need(s) it)",
                    plan.install,
                    landed,
                )
            retry = [w for w in plan.install if not w.optional and w.name not in landed]
            second = run_pip([*pip, *(str(staged[w.name]) for w in retry)]) if retry else None
            if second is not None:
                raise _pip_error(second, plan.install, _landed(plan.install, pending))
            warnings += [
                f"optional {w.name} {w.version} could not be installed: {failure}" for w in optional
            ]
        timings["pip"] = time.perf_counter() - mark
    importlib.invalidate_caches()  # so this process can import what pip just put in place
    landed = _landed(plan.install, pending)
    missing = [w for w in plan.install if w.name not in landed and not w.optional]
    if missing:
        names = ", ".join(f"{w.name} {w.version}" for w in missing)
        raise InstallError(f"pip reported success but {names} is not installed in {sys.prefix}")
    journal.clear(pending)
    return tuple(w for w in plan.install if w.name in landed), warnings


@contextlib.contextmanager
def _stage_folder(temporary: Path) -> Iterator[Path]:
    """A private folder for the verified copies; a temporary folder that refuses it is one line."""
    try:
        folder = tempfile.TemporaryDirectory(prefix="kaggle-offline-")
    except OSError as error:
        raise WheelhouseError(
            f"{temporary}: cannot create a folder for the wheels' copies "
            f"({error.strerror or error}); nothing was installed"
        ) from None
    with folder as name:
        yield Path(name)


def _landed(planned: Sequence[PlannedWheel], pending: Path) -> set[str]:
    """Names of planned wheels whose version is now installed whole (read fresh from disk).

    A ``.dist-info`` that pip left unfinished does not count, and is removed (the caller holds
    the install lock), so that no later run counts it either.
    """
    unfinished = journal.find_incomplete(sys.path, journal.read(pending))
    journal.remove(unfinished)
    broken = {item.name for item in unfinished}
    now = installed_versions()
    return {
        wheel.name
        for wheel in planned
        if wheel.name in now
        and wheel.name not in broken
        and same_version(now[wheel.name], wheel.version)
    }


def _pip_error(message: str, planned: Sequence[PlannedWheel], landed: set[str]) -> InstallError:
    done = ", ".join(sorted(landed)) or "nothing"
    pending = ", ".join(w.name for w in planned if w.name not in landed)
    return InstallError(
        f"pip failed: {message} — installed before the failure: {done}; still missing: "
        f"{pending}; fix the cause and run the install again, it installs only what is missing"
    )
