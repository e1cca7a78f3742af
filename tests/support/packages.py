"""Build tiny but real wheels and a PEP 503 "simple" index on disk, so tests never need a registry."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    extras: Mapping[str, Sequence[str]] | None = None,
    module_source: str | None = None,
    metadata_version: str | None = None,
    dist_info_first: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``name-version-tag.whl`` holding an importable module named after the project.

    The module exposes ``__version__`` so tests can check which version was really installed.
    For the installer's refusals: ``metadata_version`` makes METADATA claim another version than
    the file name, ``dist_info_first`` puts the ``.dist-info`` members before the module (pip
    unpacks in archive order, so a failure half-way leaves a ``.dist-info`` behind), and
    ``extra_files`` adds members (a large, well-compressing one costs little on disk).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dist = re.sub(r"[-_.]+", "_", name)
    module = dist.lower()
    dist_info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {metadata_version or version}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {req}" for req in requires]
    for extra, extra_requires in (extras or {}).items():
        metadata.append(f"Provides-Extra: {extra}")
        for req in extra_requires:
            joiner = " and " if ";" in req else "; "
            metadata.append(f'Requires-Dist: {req}{joiner}extra == "{extra}"')
    purelib = "true" if tag.endswith("-none-any") else "false"
    module_files = {
        f"{module}/__init__.py": (module_source or f'__version__ = "{version}"\n').encode(),
        **(extra_files or {}),
    }
    files: dict[str, bytes] = {
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: kaggle-offline-tests\nRoot-Is-Purelib: {purelib}\n"
            + "".join(f"Tag: {t}\n" for t in _expand_tag(tag))
        ).encode(),
    }
    files = {**files, **module_files} if dist_info_first else {**module_files, **files}
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    path = dest_dir / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            # A fixed timestamp keeps fixture wheels byte-identical between runs.
            info = zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _expand_tag(tag: str) -> list[str]:
    interpreters, abis, platforms = tag.split("-")
    return [
        f"{i}-{a}-{p}"
        for i in interpreters.split(".")
        for a in abis.split(".")
        for p in platforms.split(".")
    ]


def make_index(root: Path, distributions: Iterable[Path]) -> str:
    """Lay out a PEP 503 simple index under ``root`` and return its ``file://`` URL.

    Each link carries its ``#sha256=`` fragment, as real indexes do.
    """
    simple = root / "simple"
    by_project: dict[str, list[Path]] = {}
    for dist in distributions:
        project = _normalized(_project_of(dist.name))
        target_dir = simple / project
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / dist.name
        if dist.resolve() != target.resolve():
            shutil.copyfile(dist, target)
        by_project.setdefault(project, []).append(target)
    for project, files in by_project.items():
        links = []
        for file in sorted(files):
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            links.append(
                f'<a href="{html.escape(file.name)}#sha256={digest}">{html.escape(file.name)}</a><br/>'
            )
        (simple / project / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )
    projects = sorted(p.name for p in simple.iterdir() if p.is_dir())
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n"
        + "\n".join(f'<a href="{p}/">{p}</a><br/>' for p in projects)
        + "\n</body></html>\n"
    )
    return simple.resolve().as_uri()


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return filename.split("-")[0]
    stem = filename.removesuffix(".tar.gz").removesuffix(".zip")
    return stem.rsplit("-", 1)[0]
