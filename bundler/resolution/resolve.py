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

from bundler.errors import (
    MetadataBuildError,
    NoWheelForTargetError,
    PipVersionError,
    ResolutionError,
)
from bundler.resolution import pip_protocol
from bundler.resolution.requirement_files import RequirementLine
from bundler.resolution.wheels import python_full_version
from runtime.contract.profile import TargetProfile, canonical_name

# The pip releases whose internals the shim's patch points were read from and tested with: the
# lowest and the highest run in the test suite (tests/test_bundler_pip_range.py).
SUPPORTED_PIP = SpecifierSet(">=24.2,<26.4")

# Transport settings survive an isolated run: they say how to reach an index, not which one.
_TRANSPORT_ENV = {
    "PIP_" + option.upper().replace("-", "_") for option in pip_protocol.TRANSPORT_OPTIONS
} | {"PIP_DISABLE_PIP_VERSION_CHECK"}


@dataclass(frozen=True)
class IndexSettings:
    """Where packages come from. ``index_url=None`` means pip's own configuration."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        # An explicit index means "exactly these sources": pip.conf's extra indexes and
        # find-links must not leak in, or the result would depend on the machine. Its transport
        # settings (certificates, proxy, keyring) still apply: see pip_protocol.isolate_sources.
        return self.index_url is not None or self.no_index

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url is not None:
            args += ["--index-url", self.index_url]
        if self.no_index:
            args.append("--no-index")
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for location in self.find_links:
            args += ["--find-links", location]
        for host in self.trusted_hosts:
            args += ["--trusted-host", host]
        return args

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.isolated:
            for key in list(env):
                if (
                    key.startswith("PIP_")
                    and key not in _TRANSPORT_ENV
                    and key != "PIP_CONFIG_FILE"
                ):
                    del env[key]
        return env

    def build_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """For the pip that installs an sdist's build requirements: these same sources."""
        env = self.environment(base)
        settings = {
            "PIP_INDEX_URL": self.index_url or "",
            "PIP_NO_INDEX": "1" if self.no_index else "",
            "PIP_EXTRA_INDEX_URL": " ".join(self.extra_index_urls),
            "PIP_FIND_LINKS": " ".join(self.find_links),
            "PIP_TRUSTED_HOST": " ".join(self.trusted_hosts),
        }
        env.update({key: value for key, value in settings.items() if value})
        return env

    def cache_identity(self) -> dict[str, Any]:
        """Everything about the sources that can change a resolution, for the cache key."""
        identity: dict[str, Any] = {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
            "no_index": self.no_index,
        }
        if not self.isolated:
            identity["pip_env"] = {
                k: v for k, v in sorted(os.environ.items()) if k.startswith("PIP_")
            }
            identity["pip_config"] = _pip_config_text()
        return identity


@dataclass(frozen=True)
class ResolverOptions:
    """How pip chooses among the versions it finds (``--pre``, ``--only-binary``...)."""

    pre: bool = False
    only_binary: tuple[str, ...] = ()
    no_binary: tuple[str, ...] = ()

    def pip_args(self) -> list[str]:
        args = ["--pre"] if self.pre else []
        for value in self.only_binary:
            args += ["--only-binary", value]
        for value in self.no_binary:
            args += ["--no-binary", value]
        return args


def run_shim(
    spec: Mapping[str, Any],
    scratch: Path,
    pip_args: Sequence[str],
    index: IndexSettings,
    *,
    progress: str = "none",
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE SPEC -- PIP_ARGS`` with the index's environment (MODULE: the mode's,
    :data:`~bundler.resolution.pip_protocol.ENTRY_MODULES`).

    A download shows its progress on this process's stderr; everything else is captured.
    """
    spec_path = scratch / "spec.json"
    full = {**spec, "scratch": str(scratch), "isolate_sources": index.isolated}
    spec_path.write_text(json.dumps(full), encoding="utf-8")
    module = pip_protocol.ENTRY_MODULES[spec["mode"]]
    command = [sys.executable, "-m", module, str(spec_path), "--", *pip_args]
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=None if progress != "none" else subprocess.PIPE,
        text=True,
        env=index.environment(os.environ),
        check=False,
    )


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
    requirements: Sequence[RequirementLine],
    profile: TargetProfile,
    *,
    index: IndexSettings,
    blob_dir: Path,
    constraints: Sequence[str] = (),
    kernel_pins: Mapping[str, str] | None = None,
    options: ResolverOptions | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Resolution:
    """pip's resolution of ``requirements`` for ``profile`` (raises ResolutionError).

    ``constraints`` are requirement lines for pip's ``-c``; ``kernel_pins`` (name -> version,
    default: every preinstalled version) are constraints too, and keep the resolver to solutions
    that leave the kernel's packages as they are.
    """
    check_pip_version()
    with tempfile.TemporaryDirectory(prefix="kaggle-offline-resolve-") as scratch:
        scratch_dir = Path(scratch)
        requirements_path = scratch_dir / "requirements.txt"
        requirements_path.write_text(
            "".join(line.pip_line() + "\n" for line in requirements), encoding="utf-8"
        )
        constraints_path = scratch_dir / "constraints.txt"
        constraints_path.write_text("".join(f"{line}\n" for line in constraints), encoding="utf-8")
        spec = {
            "mode": "resolve",
            "markers": dict(profile.markers),
            "tags": list(profile.tags),
            "python_full_version": python_full_version(profile),
            "preinstalled": dict(profile.preinstalled),
            "preinstalled_cache": str(blob_dir.parent / "preinstalled"),
            "kernel_pins": dict(profile.preinstalled if kernel_pins is None else kernel_pins),
            "blob_dir": str(blob_dir),
            "record": str(scratch_dir / "record.json"),
        }
        report_path = scratch_dir / "report.json"
        pip_args = [
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
            *(options or ResolverOptions()).pip_args(),
            "-r",
            str(requirements_path),
            "-c",
            str(constraints_path),
        ]
        log(f"resolving {len(requirements)} requirement(s) for {profile.name} with pip")
        completed = run_shim(spec, scratch_dir, pip_args, index)
        record = _read_record(scratch_dir / "record.json")
        if completed.returncode == pip_protocol.EXIT_UNPATCHABLE:
            raise PipVersionError(_unpatchable_message(completed.stderr))
        if completed.returncode != 0:
            output = f"{completed.stdout}\n{completed.stderr}"
            raise _resolution_error(_own_names(output, requirements), record, profile)
        report = json.loads(report_path.read_text(encoding="utf-8"))
    _check_environment(report, profile)
    items = [_item_from_report(entry) for entry in report.get("install", [])]
    return Resolution(items=items, captured=set(record["captured"]), served=set(record["served"]))


def _unpatchable_message(stderr: str) -> str:
    lines = [
        line for line in stderr.splitlines() if line.startswith(pip_protocol.UNPATCHABLE_PREFIX)
    ]
    detail = (lines or stderr.strip().splitlines() or ["no message"])[-1]
    version = metadata.version("pip")
    return (
        f"{detail.removeprefix(pip_protocol.UNPATCHABLE_PREFIX)} (pip {version}); "
        f'run `{sys.executable} -m pip install "pip{SUPPORTED_PIP}"`'
    )


def _check_environment(report: Mapping[str, Any], profile: TargetProfile) -> None:
    """pip's report says which marker environment it resolved for: it must be the target's."""
    environment = report.get("environment")
    if not isinstance(environment, Mapping):
        return  # reports before pip 23.0 had none; the supported range always has one
    differing = sorted(
        key for key, value in profile.markers.items() if environment.get(key) != value
    )
    if differing:
        key = differing[0]
        raise PipVersionError(
            f"pip {metadata.version('pip')} resolved for {key}={environment.get(key)!r}, not the "
            f"target's {profile.markers[key]!r} ({len(differing)} marker(s) differ): the shim's "
            f'patches did not take; run `{sys.executable} -m pip install "pip{SUPPORTED_PIP}"`'
        )


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
        return {"rejected": [], "captured": [], "served": [], "unfetched": [], "calls": {}}


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
        kept = _kernel_conflict(causes, lines, profile)
        if kept:
            return ResolutionError(f"no solution keeps the packages of {target}: {kept}")
        return ResolutionError(
            f"conflicting requirements for {target}: {'; '.join(causes)}; loosen one of them"
        )
    if any("DO NOT MATCH THE HASHES" in line for line in lines):
        return ResolutionError(f"{_hash_mismatch(lines)}; update the lock file, or check the index")
    build_failure = _build_failure(lines)
    if build_failure:
        return MetadataBuildError(f"{build_failure} (while pip read its metadata for {target})")
    errors = [line for line in lines if line.startswith("ERROR:")]
    detail = (errors or lines or ["pip exited without a message"])[-1].removeprefix("ERROR: ")
    return ResolutionError(f"pip could not resolve the requirements for {target}: {detail}")


_FROM_FILE = re.compile(r"-r \S+requirements\.txt \(line (\d+)\)")
_KERNEL_PIN = re.compile(r"The user requested \(constraint\) ([^=<>!~ ]+)===?(\S+)")
_DEPENDS = re.compile(r"(\S+) (\S+) depends on ([A-Za-z0-9][A-Za-z0-9._-]*)(.*)")
_FETCHING = re.compile(r"^(?:Collecting|Processing|Downloading|Obtaining) (\S+).*\(from (.+)\)$")


def _own_names(output: str, requirements: Sequence[RequirementLine]) -> str:
    """pip's "-r /tmp/.../requirements.txt (line 3)" becomes the requirement the user wrote."""

    def named(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return requirements[number - 1].text if 0 < number <= len(requirements) else match.group(0)

    return _FROM_FILE.sub(named, output)


def _kernel_conflict(causes: Sequence[str], lines: Sequence[str], profile: TargetProfile) -> str:
    """``ko-arch 2.0 requires tifffile<2026, the kernel has 2026.3.3 (<user> -> ...)``, or ""."""
    pinned = {}
    for cause in causes:
        match = _KERNEL_PIN.fullmatch(cause)
        if match and profile.preinstalled_version(match.group(1)) == match.group(2):
            pinned[canonical_name(match.group(1))] = match.group(2)
    found = []
    for cause in causes:
        match = _DEPENDS.fullmatch(cause)
        if not match or canonical_name(match.group(3)) not in pinned:
            continue
        parent, version, name, specifier = match.groups()
        name = canonical_name(name)
        chain = " -> ".join([*_pip_chain(parent, lines), f"{parent} {version}", name])
        found.append(
            f"{parent} {version} requires {name}{specifier.strip()} but the kernel has {name} "
            f"{pinned[name]} ({chain}); let the resolver replace it with --allow-replace {name}, "
            f"or ask for another version of {chain.split(' -> ')[1].split(' ')[0]}"
        )
    return "; ".join(found[:2])


def _pip_chain(name: str, lines: Sequence[str]) -> list[str]:
    """``["<user>", "ko-net"]``: who pip says brought ``name`` in ("(from ko-net->ko-app)")."""
    wanted = canonical_name(name)
    for line in lines:
        match = _FETCHING.match(line)
        if not match:
            continue
        what = match.group(1).rsplit("/", 1)[-1]
        fetched = canonical_name(re.split(r"[<>=!~;\[ (]|-\d", what, maxsplit=1)[0])
        if fetched.replace("_", "-") != wanted:
            continue
        parents = [part.strip() for part in match.group(2).split("->")]
        names = [re.split(r"[<>=!~;\[ (]", part, maxsplit=1)[0] for part in parents[:-1]]
        return ["<user>", *reversed(names)]
    return ["<user>"]


def _package_of(what: str) -> str:
    """``ko-badmeta 1.0`` from a file name pip prints, or the requirement it printed."""
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    try:
        if what.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(what)
        else:
            name, version = parse_sdist_filename(what)
        return f"{canonical_name(str(name))} {version}"
    except ValueError:
        return what


def _hash_mismatch(lines: Sequence[str]) -> str:
    """``ko-lib==2.0: sha256 abc... is not one of the --hash values (1111...)``."""
    start = next(i for i, line in enumerate(lines) if "DO NOT MATCH THE HASHES" in line)
    what, expected, got = "a requirement", "", ""
    for line in lines[start + 1 :]:
        if line.startswith("Expected"):
            expected = line.split()[-1]
        elif line.startswith("Got"):
            got = line.split()[-1]
            break
        elif " from " in line:
            what = line.split(" from ", 1)[0]
    return (
        f"{what}: the file's sha256 {got} is not one of the --hash values given for it ({expected})"
    )


_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit)\b.*:")


def _build_failure(lines: Sequence[str]) -> str:
    """``ko-badmeta 1.0: building its metadata failed (RuntimeError: ...)`` from pip's output."""
    if not any("metadata-generation-failed" in line or "subprocess-exited-with-error" in line
               or "Failed to build" in line for line in lines):  # fmt: skip
        return ""
    package = "a package"
    reason = ""
    for line in lines:
        match = re.match(r"^(?:Collecting|Processing|Downloading) (\S+)", line)
        if match:
            package = _package_of(match.group(1).rsplit("/", 1)[-1])
        elif _EXCEPTION_LINE.match(line.lstrip("│ ").strip()):
            reason = line.lstrip("│ ").strip()
        if "error" in line.lower() and package != "a package" and reason:
            break
    step = (
        "building its metadata failed"
        if any("metadata" in line for line in lines)
        else "its build failed"
    )
    return f"{package}: {step}" + (f" ({reason[:200]})" if reason else "")


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
