"""The output store of a whole-scroll run: arrays, run fingerprint, done markers, metrics.

Layout of ``OUT.zarr`` (same zarr format as the input, chunked like it):

* ``mask`` and/or ``probability``: uint8 arrays (0/1, and round(255 p)); when the input is an
  OME-Zarr group each is an OME-Zarr image group holding level ``0``, with the input level's
  coordinate transformations;
* the root's ``kaggle_offline_scroll`` attribute: the fingerprint (sha256 of everything that
  changes the result) and its components, so a rerun with other settings is refused by name;
* ``_scroll/done/<block>.json``: written after a block's chunks are, the only proof that they
  are finished; ``_scroll/metrics.json``: the per-block records of the last run.

No torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contract.errors import OutputError
from runtime.scroll.source import InputVolume

__all__ = ["ATTRIBUTE", "OutputStore", "file_digest", "fingerprint_of"]

ATTRIBUTE = "kaggle_offline_scroll"
KINDS = ("mask", "probability")


def fingerprint_of(components: dict[str, Any]) -> str:
    text = json.dumps(components, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file is not path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class OutputStore:
    """An opened output: its zarr group, arrays by kind, and its marker folder."""

    url: str
    group: Any
    arrays: dict[str, Any]

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        source: InputVolume,
        kinds: tuple[str, ...],
        components: dict[str, Any],
        *,
        overwrite: bool,
    ) -> tuple[OutputStore, bool]:
        """Create the output, or reopen it to resume; (store, resumed).

        An existing output of other settings is refused, naming what differs, unless
        ``overwrite`` (then it is removed and started over).
        """
        import zarr

        fingerprint = fingerprint_of(components)
        fs, root = _filesystem(url)
        if fs.exists(root) and overwrite:
            fs.rm(root, recursive=True)
        if fs.exists(root):
            try:
                group = zarr.open_group(store=url, mode="r+")
                recorded = dict(group.attrs).get(ATTRIBUTE)
            except Exception:
                recorded = None
            if not isinstance(recorded, dict):
                raise OutputError(
                    f"{url} exists and is not a whole-scroll output; use --overwrite or another path"
                )
            if recorded.get("fingerprint") != fingerprint:
                raise OutputError(
                    f"{url} was written with other settings ({_differences(recorded, components)}); "
                    "resume with the same ones, or start over with --overwrite"
                )
            arrays = {kind: group[_array_path(kind, source)] for kind in kinds}
            return cls(url, group, arrays), True
        group = zarr.open_group(
            store=url, mode="w", zarr_format=2 if source.zarr_format == 2 else 3
        )
        arrays = {}
        for kind in kinds:
            if source.ome:
                image = group.create_group(kind)
                image.attrs.update(_ome_attributes(source, kind))
            arrays[kind] = group.create_array(
                _array_path(kind, source),
                shape=source.shape,
                chunks=source.chunks,
                dtype="uint8",
                fill_value=0,
                # An all-zero chunk is not stored: air costs nothing and reads back as 0.
                config={"write_empty_chunks": False},
            )
        group.attrs[ATTRIBUTE] = {
            "fingerprint": fingerprint,
            "components": components,
            "outputs": list(kinds),
        }
        return cls(url, group, arrays), False

    # --- markers ----------------------------------------------------------------------------
    def done_names(self) -> set[str]:
        fs, root = _filesystem(self.url)
        folder = f"{root}/_scroll/done"
        if not fs.exists(folder):
            return set()
        return {Path(p).name.removesuffix(".json") for p in fs.ls(folder, detail=False)}

    def mark_done(self, name: str, record: dict[str, Any]) -> None:
        """After the block's chunks are written: write to a temporary name, then rename."""
        fs, root = _filesystem(self.url)
        folder = f"{root}/_scroll/done"
        fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.{name}.partial"
        fs.pipe_file(temporary, json.dumps(record).encode())
        fs.mv(temporary, f"{folder}/{name}.json")

    def records(self) -> list[dict[str, Any]]:
        fs, root = _filesystem(self.url)
        folder = f"{root}/_scroll/done"
        if not fs.exists(folder):
            return []
        return [
            json.loads(fs.cat_file(p))
            for p in sorted(fs.ls(folder, detail=False))
            if p.endswith(".json")
        ]

    def write_metrics(self, metrics: dict[str, Any]) -> str:
        fs, root = _filesystem(self.url)
        fs.makedirs(f"{root}/_scroll", exist_ok=True)
        path = f"{root}/_scroll/metrics.json"
        fs.pipe_file(path, json.dumps(metrics, indent=1).encode())
        return path


def _array_path(kind: str, source: InputVolume) -> str:
    return f"{kind}/0" if source.ome else kind


def _ome_attributes(source: InputVolume, kind: str) -> dict[str, Any]:
    """One-level multiscale: the input level's transformations become the output's level 0."""
    assert source.ome is not None
    multiscale = source.ome["multiscale"]
    level = multiscale["datasets"][source.level]
    carried: dict[str, Any] = {
        "name": kind,
        "axes": multiscale.get("axes"),
        "datasets": [
            {"path": "0", "coordinateTransformations": level.get("coordinateTransformations")}
        ],
    }
    if multiscale.get("coordinateTransformations"):
        carried["coordinateTransformations"] = multiscale["coordinateTransformations"]
    carried = {k: v for k, v in carried.items() if v is not None}
    version = source.ome["version"]
    if source.ome["nested"]:  # OME-Zarr 0.5 and later: under "ome"
        return {"ome": {"version": version, "multiscales": [carried]}}
    return {"multiscales": [{"version": version, **carried}]}


def _differences(recorded: dict[str, Any], components: dict[str, Any]) -> str:
    before = recorded.get("components") or {}
    differing = []
    for key in sorted(set(before) | set(components)):
        if before.get(key) == components.get(key):
            continue
        old, new = before.get(key), components.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            differing += [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in inner]
        else:
            differing.append(f"{key}: {old!r} -> {new!r}")
    return "; ".join(differing) or "fingerprint differs"


def _filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    return fs, root.rstrip("/")
