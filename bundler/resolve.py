"""Resolve requirements for a target profile with pip's own resolver, run through the shim.

The result is pip's ``--dry-run --report``: one item per distribution to fetch, with its URL,
sha256 and core metadata. Errors are turned into one line that names the package and, when no
file fits the target, the versions and tags that pip saw and rejected.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bundler import pip_shim
from bundler.errors import NoWheelForTargetError, PipVersionError, ResolutionError
from bundler.wheels import python_full_version
from runtime.contract.profile import TargetProfile, canonical_name

# The pip releases whose internals the shim's patch points were read from and tested with.
SUPPORTED_PIP = SpecifierSet(">=24.2,<27")

# Transport settings survive an isolated run: they say how to reach an index, not which one.
_TRANSPORT_ENV = {
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_PROXY",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_TIMEOUT",
    "PIP_RETRIES",
}


@dataclass(frozen=True)
class IndexSettings:
    """Where packages come from. ``index_url=None`` means pip's own configuration."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        # An explicit index means "exactly these sources": pip.conf's extra indexes and
        # find-links must not leak in, or the result would depend on the machine.
        return self.index_url is not None

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url is not None:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for location in self.find_links:
            args += ["--find-links", location]
        return args

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.isolated:
            for key in list(env):
                if key.startswith("PIP_") and key not in _TRANSPORT_ENV:
                    del env[key]
            env["PIP_CONFIG_FILE"] = os.devnull
        return env

    def cache_identity(self) -> dict[str, Any]:
        """Everything about the sources that can change a resolution, for the cache key."""
        identity: dict[str, Any] = {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
        }
        if not self.isolated:
            identity["pip_env"] = {
                k: v for k, v in sorted(os.environ.items()) if k.startswith("PIP_")
            }
            identity["pip_config"] = _pip_config_text()
        return identity


@dataclass(frozen=True)
class ResolvedItem:
    """One distribution pip would install on the target."""

    name: str  # canonical
    version: str
    url: str
    filename: str
    sha256: str | None
    requested: bool
    requires_dist: tuple[str, ...]
    requires_python: str
    provides_extra: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "url": self.url,
            "filename": self.filename,
            "sha256": self.sha256,
            "requested": self.requested,
            "requires_dist": list(self.requires_dist),
            "requires_python": self.requires_python,
            "provides_extra": list(self.provides_extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedItem:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            url=str(data["url"]),
            filename=str(data["filename"]),
            sha256=None if data.get("sha256") is None else str(data["sha256"]),
            requested=bool(data["requested"]),
            requires_dist=tuple(data.get("requires_dist", ())),
            requires_python=str(data.get("requires_python", "")),
            provides_extra=tuple(data.get("provides_extra", ())),
        )


@dataclass
class Resolution:
    items: list[ResolvedItem]
    captured: set[str] = field(default_factory=set)  # sha256 of files pip downloaded
    served: set[str] = field(default_factory=set)  # sha256 of files served from the store


def check_pip_version() -> str:
    try:
        version = metadata.version("pip")
    except metadata.PackageNotFoundError:
        raise PipVersionError(
            f"pip is not installed for {sys.executable}; install kaggle-offline[bundler]"
        ) from None
    if Version(version) not in SUPPORTED_PIP:
        raise PipVersionError(
            f"pip {version} is outside the range the bundler is tested with ({SUPPORTED_PIP}); "
            f'run `{sys.executable} -m pip install "pip{SUPPORTED_PIP}"`'
        )
    return version


def resolve(
    requirements: Sequence[str],
    profile: TargetProfile,
    *,
    index: IndexSettings,
    blob_dir: Path,
    log: Callable[[str], None] = lambda line: None,
) -> Resolution:
    """pip's resolution of ``requirements`` for ``profile`` (raises ResolutionError)."""
    check_pip_version()
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-resolve-") as scratch:
        scratch_dir = Path(scratch)
        spec = {
            "markers": dict(profile.markers),
            "tags": list(profile.tags),
            "python_full_version": python_full_version(profile),
            "preinstalled": dict(profile.preinstalled),
            "blob_dir": str(blob_dir),
            "record": str(scratch_dir / "record.json"),
        }
        spec_path = scratch_dir / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        report_path = scratch_dir / "report.json"
        command = [
            sys.executable,
            "-m",
            "bundler.pip_shim",
            str(spec_path),
            "--",
            "install",
            "--dry-run",
            "--no-input",
            "--report",
            str(report_path),
            "--prefer-binary",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            *index.pip_args(),
            *requirements,
        ]
        log(f"resolving {len(requirements)} requirement(s) for {profile.name} with pip")
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=index.environment(os.environ),
            check=False,
        )
        record = _read_record(scratch_dir / "record.json")
        if completed.returncode == pip_shim.EXIT_UNPATCHABLE:
            raise PipVersionError(completed.stderr.strip().splitlines()[-1])
        if completed.returncode != 0:
            output = f"{completed.stdout}\n{completed.stderr}"
            raise _resolution_error(output, record, profile)
        report = json.loads(report_path.read_text(encoding="utf-8"))
    items = [_item_from_report(entry) for entry in report.get("install", [])]
    return Resolution(items=items, captured=set(record["captured"]), served=set(record["served"]))


def _pip_config_text() -> str:
    """The text of every pip configuration file that applies here (it can change the index)."""
    try:
        from pip._internal.configuration import get_configuration_files

        paths = [path for group in get_configuration_files().values() for path in group]
    except (ImportError, AttributeError):  # pip moved it: fall back to the usual places
        paths = ["/etc/pip.conf", str(Path.home() / ".config" / "pip" / "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        paths.append(os.environ["PIP_CONFIG_FILE"])
    texts = []
    for path in paths:
        try:
            texts.append(f"{path}\n{Path(path).read_text(encoding='utf-8')}")
        except (OSError, UnicodeDecodeError):
            continue
    return "\n".join(texts)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"rejected": [], "captured": [], "served": [], "unfetched": []}


def _item_from_report(entry: Mapping[str, Any]) -> ResolvedItem:
    info = entry["metadata"]
    download = entry["download_info"]
    url = str(download["url"])
    hashes = dict(download.get("archive_info", {}).get("hashes", {}))
    sha256 = hashes.get("sha256")
    if sha256 is None:
        legacy = str(download.get("archive_info", {}).get("hash", ""))
        if legacy.startswith("sha256="):
            sha256 = legacy.removeprefix("sha256=")
    return ResolvedItem(
        name=canonical_name(str(info["name"])),
        version=str(info["version"]),
        url=url,
        filename=_filename_from_url(url),
        sha256=sha256,
        requested=bool(entry.get("requested", False)),
        requires_dist=tuple(str(req) for req in info.get("requires_dist", ()) or ()),
        requires_python=str(info.get("requires_python", "") or ""),
        provides_extra=tuple(str(extra) for extra in info.get("provides_extra", ()) or ()),
    )


def _filename_from_url(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_CONFLICT_START = "The conflict is caused by:"
_ERRNO = re.compile(r"\[Errno -?\d+\][^\"')]*")


def _short_reason(entry: Mapping[str, str]) -> str:
    """``http://host/simple/x/: [Errno 111] Connection refused`` from urllib3's long repr."""
    errno = _ERRNO.search(entry["reason"])
    reason = errno.group(0).strip() if errno else entry["reason"][:200]
    return f"{entry['url']}: {reason}"


def _resolution_error(
    output: str, record: Mapping[str, Any], profile: TargetProfile
) -> ResolutionError:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    target = f"{profile.name} (Python {profile.python_version})"
    missing = _NO_MATCH.search(output)
    if missing:
        requirement = missing.group(1)
        name = canonical_name(re.split(r"[<>=!~;\[ (]", requirement, maxsplit=1)[0])
        seen = _describe_rejected(name, record.get("rejected", []))
        unreachable = [
            entry for entry in record.get("unfetched", []) if "404" not in entry["reason"]
        ]
        if unreachable and not seen:
            return ResolutionError(
                f"cannot resolve {requirement} for {target}: the package index could not be "
                f"reached ({_short_reason(unreachable[0])}); check the network and --index-url"
            )
        if seen:
            return NoWheelForTargetError(
                f"no file of {requirement} fits {target}: {seen}; "
                f"pin a version that has a wheel for it, or mark it --optional"
            )
        return ResolutionError(
            f"cannot resolve {requirement} for {target}: no version found on the configured "
            "index(es); check the name and --index-url/--find-links"
        )
    if _CONFLICT_START in output:
        start = lines.index(_CONFLICT_START) + 1
        causes = []
        for line in lines[start:]:
            if line.startswith(("To fix", "ERROR", "Additionally")):
                break
            causes.append(line)
        return ResolutionError(
            f"conflicting requirements for {target}: {'; '.join(causes)}; "
            "loosen one of them (the kernel's preinstalled versions count as installed)"
        )
    errors = [line for line in lines if line.startswith("ERROR:")]
    detail = (errors or lines or ["pip exited without a message"])[-1].removeprefix("ERROR: ")
    return ResolutionError(f"pip could not resolve the requirements for {target}: {detail}")


def _describe_rejected(name: str, rejected: list[dict[str, str]]) -> str:
    """``2026.10.10 (cp312-abi3-manylinux_2_28_x86_64), 2026.3.6 (...)``: what pip turned down.

    Files refused for their Requires-Python are summarised by it rather than by their tags.
    """
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    by_version: dict[str, set[str]] = {}
    for entry in rejected:
        if canonical_name(entry["project"]) != name:
            continue
        filename, reason = entry["filename"], entry["reason"]
        try:
            if filename.endswith(".whl"):
                _, version, _, tags = parse_wheel_filename(filename)
                what = ".".join(sorted({str(tag) for tag in tags}))
            else:
                _, version = parse_sdist_filename(filename)
                what = "sdist"
        except ValueError:
            continue
        python = _REQUIRES_PYTHON.search(reason)
        if python:
            what = f"Requires-Python {python.group(1)}"
        elif "none of the wheel's tags" not in reason and what != "sdist":
            what = f"{what}: {reason}"
        by_version.setdefault(str(version), set()).add(what)
    if not by_version:
        return ""
    ordered = sorted(by_version, key=Version, reverse=True)
    shown = [f"{version} ({', '.join(sorted(by_version[version]))})" for version in ordered[:5]]
    more = f" and {len(ordered) - 5} older" if len(ordered) > 5 else ""
    return "versions seen: " + ", ".join(shown) + more


_REQUIRES_PYTHON = re.compile(r"Requires-Python (\S+)")
