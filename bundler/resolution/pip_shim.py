"""Run pip's resolver *for a target kernel*: ``python -m bundler.resolution.pip_shim SPEC -- ARGS``.

pip's ``--platform``/``--python-version`` change only which wheel tags it accepts; markers are
still evaluated for the interpreter running pip (pip issues #11664, #13442) and the packages
installed here, not in the kernel, count as satisfied. This module patches pip in its own process
before running it, the way pex does:

1. the PEP 508 marker environment -> the target's;
2. the supported wheel tags -> exactly the profile's;
3. the Python version used for Requires-Python -> the target's;
4. the installed environment -> fake ``.dist-info`` folders for the kernel's preinstalled set (made
   once per set, kept in the cache), so a requirement the kernel satisfies is not vendored;
5. the resolver's constraints -> every kernel version (``SPEC["kernel_pins"]``) added as a pip
   constraint, looked up lazily rather than parsed from a file of a thousand lines, so the
   resolver backtracks to versions that keep the kernel's packages;
6. file fetching -> a sha256-keyed store: files already there are served without a download and
   files pip downloads (whole wheels, where the index serves no PEP 658 metadata) are kept, so the
   bundler never moves the same bytes twice.

It also records each link pip rejected and why (to name the versions and tags seen when nothing
fits). Each patch counts its calls: a patched name that pip no longer calls means the resolution
was the host's, so that is an error (exit ``EXIT_UNPATCHABLE``), never a silent wrong answer.

SPEC.json (``SPEC["mode"] == "resolve"``) is written by :mod:`bundler.resolution.resolve`; the
record goes to ``SPEC["record"]``. Downloads run in their own subprocess
(:mod:`bundler.wheelhouse.transport`); what both agree on with the bundler is
:mod:`bundler.resolution.pip_protocol`. Only pip's internals are touched, and only in these
subprocesses, never imported by the bundler itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bundler.resolution.pip_protocol import (
    EXIT_UNPATCHABLE,
    UNPATCHABLE_PREFIX,
    Unpatchable,
    main,
    require,
)

# Patches that every resolution must go through, and the pip module that must call each (None:
# any); no such call means pip bypassed the patch and resolved for this machine.
REQUIRED_CALLS = {
    "markers": None,
    "kernel-constraints": None,
    "installed": "pip._internal.resolution.resolvelib.factory",
    "target-python": None,
    "requires-python": None,
}


def _write_fake_installed(folder: Path, preinstalled: dict[str, str]) -> None:
    """One ``name-version.dist-info/METADATA`` per preinstalled distribution: all pip reads."""
    for name, version in preinstalled.items():
        dist_info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir(parents=True, exist_ok=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
        )


def fake_installed(cache: Path, scratch: Path, preinstalled: dict[str, str]) -> Path:
    """The fake installed set for ``preinstalled``, made once and kept under ``cache``.

    A thousand folders cost seconds on a busy disk; the set is keyed by its own content and
    written beside its place, then renamed in, so a reader never sees half of one.
    """
    import hashlib

    key = hashlib.sha256(json.dumps(sorted(preinstalled.items())).encode()).hexdigest()[:24]
    folder = cache / key
    if (folder / ".complete").is_file():
        return folder
    staging = scratch / "preinstalled"
    staging.mkdir(parents=True, exist_ok=True)  # an empty kernel is an empty folder
    _write_fake_installed(staging, preinstalled)
    (staging / ".complete").write_text("", encoding="utf-8")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(folder)
    except OSError:  # another build got there first, or the cache is elsewhere: use ours
        return folder if (folder / ".complete").is_file() else staging
    return folder


def _replace_everywhere(original: Any, replacement: Any) -> None:
    """Rebind every ``from x import original`` already executed inside pip's modules."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("pip."):
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, replacement)


def _python_version_info(full_version: str) -> tuple[int, ...]:
    numbers: list[int] = []
    for part in full_version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


class _Record:
    def __init__(self) -> None:
        self.rejected: list[dict[str, str]] = []
        self.captured: list[str] = []
        self.served: list[str] = []
        self.unfetched: list[dict[str, str]] = []
        self.calls: dict[str, int] = {}

    def count(self, name: str) -> None:
        caller = sys._getframe(2).f_globals.get("__name__", "")
        for key in (name, f"{name}@{caller}"):
            self.calls[key] = self.calls.get(key, 0) + 1

    def dump(self, path: str) -> None:
        data = {
            "rejected": self.rejected,
            "captured": self.captured,
            "served": self.served,
            "unfetched": self.unfetched,
            "calls": self.calls,
        }
        Path(path).write_text(json.dumps(data), encoding="utf-8")


def bypassed_patches(calls: dict[str, int]) -> list[str]:
    """The required patches that pip never called (from the module that must call them)."""
    return [
        name
        for name, caller in REQUIRED_CALLS.items()
        if not calls.get(name if caller is None else f"{name}@{caller}")
    ]


def _patch_markers(markers: dict[str, str], record: _Record) -> None:
    from pip._vendor.packaging import markers as vendored_markers

    original = require(vendored_markers, "default_environment")

    def default_environment() -> dict[str, str]:
        record.count("markers")
        return dict(markers)

    vendored_markers.default_environment = default_environment
    _replace_everywhere(original, default_environment)


def _patch_tags(tag_strings: list[str], record: _Record) -> None:
    from pip._internal.utils import compatibility_tags
    from pip._vendor.packaging.tags import Tag

    tags = [Tag(*text.split("-", 2)) for text in tag_strings]
    original = require(compatibility_tags, "get_supported")

    def get_supported(*args: Any, **kwargs: Any) -> list[Any]:
        record.count("tags")
        return list(tags)

    compatibility_tags.get_supported = get_supported
    _replace_everywhere(original, get_supported)


def _patch_python_version(version_info: tuple[int, ...], record: _Record) -> None:
    import inspect

    from pip._internal.models.target_python import TargetPython
    from pip._internal.resolution.resolvelib.candidates import RequiresPythonCandidate

    for cls, label in (
        (TargetPython, "target-python"),
        (RequiresPythonCandidate, "requires-python"),
    ):
        original_init = cls.__init__
        signature = inspect.signature(original_init)
        if "py_version_info" not in signature.parameters:
            raise Unpatchable(f"{cls.__name__}.__init__ has no py_version_info parameter")

        def patched_init(
            self: Any,
            *args: Any,
            _original: Any = original_init,
            _sig: Any = signature,
            _label: str = label,
            **kw: Any,
        ) -> None:
            bound = _sig.bind(self, *args, **kw)
            if bound.arguments.get("py_version_info") is None:
                bound.arguments["py_version_info"] = version_info
                record.count(_label)
            _original(*bound.args, **bound.kwargs)

        cls.__init__ = patched_init  # type: ignore[method-assign]


def _patch_installed(folder: Path, record: _Record) -> None:
    from pip._internal import metadata

    original = require(metadata, "get_default_environment")
    backend = require(metadata, "select_backend")()
    environment = backend.Environment.from_paths([str(folder)])

    def get_default_environment() -> Any:
        record.count("installed")
        return environment

    metadata.get_default_environment = get_default_environment
    _replace_everywhere(original, get_default_environment)


def _patch_kernel_constraints(pins: dict[str, str], record: _Record) -> None:
    """Every kernel version a constraint of the resolver, as ``-c`` lines would be."""
    import dataclasses

    from pip._internal.resolution.resolvelib.base import Constraint
    from pip._internal.resolution.resolvelib.factory import Factory
    from pip._vendor.packaging.specifiers import SpecifierSet

    original = require(Factory, "collect_root_requirements")
    empty = require(Constraint, "empty")

    class KernelConstraints(dict):  # type: ignore[type-arg]
        """The user's constraints, with the kernel's version of each name joined in on lookup."""

        def __contains__(self, name: object) -> bool:
            record.count("kernel-constraints")
            return dict.__contains__(self, name) or name in pins

        def __getitem__(self, name: str) -> Any:
            version = pins.get(name)
            if version is None:
                return dict.__getitem__(self, name)
            base = dict.get(self, name) or empty()
            operator = "===" if not _is_version(version) else "=="
            pinned = base.specifier & SpecifierSet(f"{operator}{version}")
            return dataclasses.replace(base, specifier=pinned)

        def get(self, name: str, default: Any = None) -> Any:
            record.count("kernel-constraints")
            return self[name] if name in self else default  # noqa: SIM401 (self.get is this)

    def collect_root_requirements(self: Any, root_ireqs: Any) -> Any:
        collected = original(self, root_ireqs)
        return collected._replace(constraints=KernelConstraints(collected.constraints))

    Factory.collect_root_requirements = collect_root_requirements  # type: ignore[method-assign]


def _is_version(text: str) -> bool:
    from pip._vendor.packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _patch_fetching(blob_dir: Path, serving_dir: Path, record: _Record) -> None:
    from pip._internal.operations import prepare

    from bundler.blobs import BlobStore

    store = BlobStore(blob_dir)
    original = require(prepare, "get_http_url")
    file_class = require(prepare, "File")

    def get_http_url(
        link: Any, download: Any, download_dir: str | None = None, hashes: Any = None
    ) -> Any:
        sha256 = link.hash if link.hash_name == "sha256" else None
        if sha256 and store.has(sha256):
            # A link under the real file name: pip reads wheel and archive names from paths.
            served = serving_dir / sha256 / link.filename
            served.parent.mkdir(parents=True, exist_ok=True)
            if not served.exists():
                store.link_to(sha256, served)
            if hashes:
                hashes.check_against_path(str(served))
            record.served.append(sha256)
            return file_class(str(served), None)
        fetched = original(link, download, download_dir, hashes)
        digest = store.add_file(Path(fetched.path), expected_sha256=sha256)
        record.captured.append(digest)
        return fetched

    prepare.get_http_url = get_http_url


def _patch_link_evaluation(record: _Record) -> None:
    from pip._internal.index.package_finder import LinkEvaluator, LinkType

    original = require(LinkEvaluator, "evaluate_link")
    candidate = require(LinkType, "candidate")

    def evaluate_link(self: Any, link: Any) -> Any:
        result = original(self, link)
        if result[0] is not candidate:
            record.rejected.append(
                {"project": self.project_name, "filename": link.filename, "reason": result[1]}
            )
        return result

    LinkEvaluator.evaluate_link = evaluate_link  # type: ignore[method-assign]


def _patch_index_failures(record: _Record) -> None:
    """Note index pages pip could not fetch: "unreachable" beats "no such package" in errors."""
    from pip._internal.index import collector

    original = getattr(collector, "_handle_get_simple_fail", None)
    if original is None:  # only error messages lose detail without it
        return

    def handle_get_simple_fail(link: Any, reason: Any, meth: Any = None) -> None:
        record.unfetched.append({"url": str(link), "reason": str(reason)})
        original(link, reason, meth)

    collector._handle_get_simple_fail = handle_get_simple_fail


def _assert_in_effect(spec: dict[str, Any]) -> None:
    """Each patch changes what pip's own objects say, checked through them before pip runs."""
    from pip._internal.metadata import get_default_environment
    from pip._internal.models.installation_report import default_environment
    from pip._internal.models.target_python import TargetPython
    from pip._vendor.packaging.markers import Marker

    target = TargetPython()
    tags = [str(tag) for tag in target.get_sorted_tags()]
    if tags != list(spec["tags"]):
        raise Unpatchable(
            f"TargetPython gives {len(tags)} wheel tags starting {tags[:1]}, not the target's"
        )
    version = _python_version_info(spec["python_full_version"])
    if tuple(target.py_version_info[: len(version)]) != version:
        raise Unpatchable(f"TargetPython's Python is {target.py_version_info}, not {version}")
    full = spec["markers"]["python_full_version"]
    if not Marker(f'python_full_version == "{full}"').evaluate():
        raise Unpatchable("markers are still evaluated for this machine's Python")
    if dict(default_environment()) != dict(spec["markers"]):
        raise Unpatchable("the install report would show this machine's marker environment")
    names = {dist.canonical_name for dist in get_default_environment().iter_all_distributions()}
    if names != set(spec["preinstalled"]):
        raise Unpatchable("the installed environment is not the kernel's preinstalled set")


def _resolve(spec: dict[str, Any], pip_args: list[str]) -> int:
    record = _Record()
    scratch = Path(spec["scratch"])
    installed = fake_installed(Path(spec["preinstalled_cache"]), scratch, spec["preinstalled"])
    try:
        # Order matters: names patched before pip's command modules import them need no sweep.
        _patch_markers(spec["markers"], record)
        _patch_tags(spec["tags"], record)
        _patch_installed(installed, record)
        _patch_python_version(_python_version_info(spec["python_full_version"]), record)
        _patch_kernel_constraints(spec["kernel_pins"], record)
        _patch_fetching(Path(spec["blob_dir"]), scratch / "serve", record)
        _patch_link_evaluation(record)
        _patch_index_failures(record)
        from pip._internal.cli.main import main as pip_main

        _assert_in_effect(spec)
        record.calls.clear()  # count pip's own calls only
    except (Unpatchable, ImportError) as error:
        print(f"{UNPATCHABLE_PREFIX}{error}", file=sys.stderr)
        return EXIT_UNPATCHABLE
    # pip must not mistake the host's site-packages for the kernel's: user site too.
    os.environ["PIP_USER"] = "0"
    try:
        status = int(pip_main(pip_args) or 0)
    finally:
        record.dump(spec["record"])
    bypassed = bypassed_patches(record.calls)
    if status == 0 and bypassed:
        print(
            f"{UNPATCHABLE_PREFIX}pip never called the patched {', '.join(bypassed)}; its "
            "resolution would be for this machine, not the target",
            file=sys.stderr,
        )
        return EXIT_UNPATCHABLE
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "resolve", _resolve))
