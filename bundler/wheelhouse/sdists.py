"""Turn a resolved sdist into a wheel the target can install, or say clearly why it cannot.

Nothing can be built inside a Kaggle kernel, so an sdist is built here with ``build``, in an
isolated environment (``build``'s default) whose build requirements pip installs from the same
sources the bundler resolves from: what this Python happens to have installed (an old setuptools,
no ``wheel``) never decides whether a build works. Only a pure-Python result (``*-none-any``) is
kept: a wheel with compiled code is tied to this machine's interpreter, compiler and glibc, not
the kernel's, even when its tag happens to match.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from bundler.blobs import BlobStore
from bundler.errors import SdistBuildError
from bundler.resolution.wheels import describe_target, fits_tags, wheel_tags
from runtime.contract.profile import TargetProfile


def build_wheel_from_sdist(
    sdist_sha256: str,
    sdist_filename: str,
    project: str,
    version: str,
    store: BlobStore,
    builds_dir: Path,
    profile: TargetProfile,
    log: Callable[[str], None] = lambda line: None,
    environment: Mapping[str, str] | None = None,
) -> tuple[str, str, bool]:
    """(wheel filename, sha256, built now?) from the stored sdist; cached by the sdist's hash."""
    record_path = builds_dir / f"{sdist_sha256}.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if store.has(record["sha256"]):
            _check_fits(record["filename"], project, version, sdist_filename, profile)
            return record["filename"], record["sha256"], False
    log(f"building a wheel from {sdist_filename}")
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-sdist-") as scratch:
        scratch_dir = Path(scratch)
        source = _unpack(store.path(sdist_sha256), sdist_filename, scratch_dir / "src")
        out = scratch_dir / "dist"
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)]
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, env=environment
        )
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if completed.returncode != 0 or len(wheels) != 1:
            detail = build_failure_reason(f"{completed.stdout}\n{completed.stderr}")
            raise SdistBuildError(
                f"{project} {version}: building a wheel from {sdist_filename} failed ({detail or f'exit status {completed.returncode}'}); "
                "it has no wheel for the target either"
            )
        wheel = wheels[0]
        _check_fits(wheel.name, project, version, sdist_filename, profile)
        digest = store.add_file(wheel)
    builds_dir.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"filename": wheel.name, "sha256": digest}), encoding="utf-8")
    return wheel.name, digest, True


def _check_fits(
    wheel_filename: str, project: str, version: str, sdist_filename: str, profile: TargetProfile
) -> None:
    tags = wheel_tags(wheel_filename)
    pure = all(tag.endswith("-none-any") for tag in tags)
    if not pure or not fits_tags(tags, profile):
        raise SdistBuildError(
            f"{project} {version} needs compiling for {describe_target(profile)}; it has no "
            f"wheel for the target and its sdist {sdist_filename} builds {wheel_filename} on this "
            "machine only; pin a version with a wheel for the target, or mark it --optional"
        )


def _unpack(archive: Path, filename: str, destination: Path) -> Path:
    destination.mkdir(parents=True)
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(destination)
        else:
            with tarfile.open(archive) as tarred:
                tarred.extractall(destination, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        raise SdistBuildError(f"{filename}: unreadable sdist ({error})") from None
    entries = [path for path in destination.iterdir() if path.is_dir()]
    root = entries[0] if len(entries) == 1 else destination
    if not (root / "pyproject.toml").is_file() and not (root / "setup.py").is_file():
        raise SdistBuildError(f"{filename}: no pyproject.toml or setup.py at its top level")
    return root


_EXCEPTION = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Failure)\b:? ?.*")


def build_failure_reason(output: str) -> str:
    """The line that says why a build failed: the backend's exception, else build's ERROR line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    exceptions = [line for line in lines if _EXCEPTION.match(line) and not line.startswith("ERROR")]
    errors = [line.removeprefix("ERROR").strip() for line in lines if line.startswith("ERROR")]
    reason = exceptions[-1] if exceptions else errors[0] if errors else (lines[-1] if lines else "")
    return reason[:300]
