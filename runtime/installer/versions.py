"""PEP 440 versions, specifiers and PEP 508 requirements, from ``packaging``.

A standalone ``packaging`` (>= 22) is preferred; every kernel has pip, so ``pip._vendor.packaging``
is the fallback that is always there. Not the other way round: on Python < 3.12, importing ``pip``
makes setuptools' distutils shim switch itself off for the rest of the process, and a later
``torch.compile`` then fails inside its C++ toolchain (setuptools asserts on stdlib distutils).
The import is deferred: the "nothing to install" path often needs no version arithmetic at all.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from functools import cache
from types import ModuleType
from typing import Any

from runtime.contract.profile import canonical_name


@cache
def packaging_module(module: str) -> ModuleType:
    """``packaging.<module>``: the standalone copy when recent enough, else pip's vendored one.

    Modules are imported one by one: ``markers`` (so ``requirements`` too) pulls in pyparsing in
    older versions, which costs more than all the rest, and most plans never need it.
    """
    if _standalone_packaging_is_usable():
        return importlib.import_module(f"packaging.{module}")
    return importlib.import_module(f"pip._vendor.packaging.{module}")


@cache
def _standalone_packaging_is_usable() -> bool:
    try:
        from importlib.metadata import version

        major = int(version("packaging").split(".")[0])
        importlib.import_module("packaging")
    except Exception:  # absent, unreadable metadata, or a broken install: use pip's copy
        return False
    return major >= 22  # LegacyVersion and non-PEP 440 parsing went away in 22


def parse_version(text: str) -> Any | None:
    """A comparable ``Version``, or None for a legacy string that PEP 440 cannot order."""
    version = packaging_module("version")
    try:
        return version.Version(text)
    except version.InvalidVersion:
        return None


# Shapes that are valid PEP 440 by construction ("2.1.0", ">=1.26", "<3,>=2"): checking them
# needs no import of packaging, which costs more than the whole "nothing to install" path.
# Anything else is parsed by packaging, which stays the authority.
_PLAIN_VERSION = re.compile(r"\d+(?:\.\d+)*")
_PLAIN_CLAUSE = re.compile(r"\s*(?:==|!=|<=|>=|<|>)\s*\d+(?:\.\d+)*\s*")


def is_valid_version(text: str) -> bool:
    return bool(_PLAIN_VERSION.fullmatch(text)) or parse_version(text) is not None


def is_valid_specifier(text: str) -> bool:
    """Whether ``text`` is a PEP 440 specifier set ("" is: it allows any version)."""
    if not text.strip() or all(_PLAIN_CLAUSE.fullmatch(part) for part in text.split(",")):
        return True
    specifiers = packaging_module("specifiers")
    try:
        specifiers.SpecifierSet(text)
    except specifiers.InvalidSpecifier:
        return False
    return True


def same_version(first: str, second: str) -> bool:
    """Equal as PEP 440 versions ("1.0" and "1.0.0" are); two unparsable strings only if equal."""
    if first == second:
        return True
    parsed = parse_version(first)
    return parsed is not None and parsed == parse_version(second)


def combine(specifiers: Iterable[str]) -> str:
    """One specifier string holding every clause of ``specifiers`` (empty ones dropped)."""
    clauses: list[str] = []
    for text in specifiers:
        for clause in text.split(","):
            clause = clause.strip()
            if clause and clause not in clauses:
                clauses.append(clause)
    return ",".join(clauses)


def satisfies(installed: str, specifier: str) -> bool:
    """Whether ``installed`` meets ``specifier``; local versions (``2.10.0+cu128``) match ``==2.10.0``.

    Pre-releases count: an installed pre-release is what the kernel has, and refusing it would
    only make us replace a preinstalled package.
    """
    if not specifier.strip():
        return True
    specifiers = packaging_module("specifiers")
    parsed = parse_version(installed)
    if parsed is None:
        return False
    return specifiers.SpecifierSet(specifier).contains(parsed, prereleases=True)


def dependencies(
    requires_dist: Iterable[str], environment: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(canonical name, specifier) of each Requires-Dist line that applies without extras.

    Lines behind an ``extra == ...`` marker are left out: which extras a dependent asked for is
    not recorded, and the bundler already vendored whatever they pulled in.
    """
    requirements, markers = packaging_module("requirements"), packaging_module("markers")
    applicable: list[tuple[str, str]] = []
    for line in requires_dist:
        try:
            requirement = requirements.Requirement(line)
        except requirements.InvalidRequirement:
            continue  # the bundler read it with the same parser; an unparsable line is not ours to judge
        if requirement.marker is not None:
            try:
                if not requirement.marker.evaluate({**environment, "extra": ""}):
                    continue
            except markers.UndefinedEnvironmentName:
                continue
        applicable.append((canonical_name(requirement.name), str(requirement.specifier)))
    return applicable


def marker_environment() -> dict[str, str]:
    return dict(packaging_module("markers").default_environment())
