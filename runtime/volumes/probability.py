"""Saved foreground probabilities: one ``<id>.npy`` per volume and a ``probabilities.json``.

uint8 (the default) stores ``round(255 p)``: 33 MB per 320^3 volume, and thresholds in steps of
1/255 are exact on it; float16 keeps more (66 MB). Each file is written atomically and is a
plain ``.npy``, so ``numpy.load(path, mmap_mode="r")`` reads it without loading it whole.

``probabilities.json`` lists the volumes the run that wrote the folder saved, with their shapes
and encoding. ``predict`` removes it when it starts and writes it when it ends, so files left by
an earlier run (or a volume that failed this time) are never taken for this run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.contract.errors import InputError, VolumeError, first_line
from runtime.contract.settings import EnsembleSettings, ProbabilityEncoding

if TYPE_CHECKING:
    import numpy as np

    from runtime.volumes.mask_settings import MaskSettings

__all__ = [
    "MANIFEST_NAME",
    "PROBABILITY_ENCODINGS",
    "ProbabilitySet",
    "decode",
    "encode",
    "find_probabilities",
    "fuse",
    "load_probability",
    "save_probability",
    "write_manifest",
]

MANIFEST_NAME = "probabilities.json"
PROBABILITY_FORMAT = "kaggle-offline-probabilities"
PROBABILITY_ENCODINGS = tuple(ProbabilityEncoding)


@dataclasses.dataclass
class ProbabilitySet:
    """The saved probabilities of one folder."""

    folder: Path
    encoding: str
    files: dict[str, Path]  # id -> .npy
    notes: list[str] = dataclasses.field(default_factory=list)


def encode(probability: np.ndarray, encoding: str) -> np.ndarray:
    """A float probability in [0, 1] as stored: uint8 levels or float16 (NaN becomes 0)."""
    import numpy as np

    probability = np.nan_to_num(np.asarray(probability, dtype=np.float32), nan=0.0)
    if encoding == "uint8":
        return np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)
    if encoding == "float16":
        return np.clip(probability, 0.0, 1.0).astype(np.float16)
    raise ValueError(
        f"unknown probability encoding {encoding!r}: {', '.join(PROBABILITY_ENCODINGS)}"
    )


def decode(stored: np.ndarray) -> np.ndarray:
    """Stored probabilities back as float32 in [0, 1]."""
    import numpy as np

    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / np.float32(255.0)
    return np.asarray(stored, dtype=np.float32)


def encoding_of(stored: np.ndarray) -> str:
    import numpy as np

    names = {
        np.dtype(np.uint8): "uint8",
        np.dtype(np.float16): "float16",
        np.dtype(np.float32): "float32",
    }
    try:
        return names[np.dtype(stored.dtype)]
    except KeyError:
        raise VolumeError(
            f"probabilities of dtype {stored.dtype}: expected uint8, float16 or float32"
        ) from None


def save_probability(path: Path | str, stored: np.ndarray) -> None:
    """Write one volume's stored probability as ``.npy``, atomically."""
    import numpy as np

    from runtime.contract.files import replacing

    with replacing(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.ascontiguousarray(stored), allow_pickle=False)


def load_probability(path: Path | str, *, mmap: bool = True) -> np.ndarray:
    """A saved probability, memory-mapped by default; a one-line VolumeError if it is unusable."""
    import numpy as np

    path = Path(path)
    try:
        stored = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise VolumeError(
            f"{path}: not a readable .npy probability ({first_line(error)})"
        ) from None
    if stored.ndim != 3:
        raise VolumeError(f"{path}: a probability volume must be 3D, got shape {stored.shape}")
    encoding_of(stored)
    return stored


def write_manifest(
    folder: Path | str, encoding: str, volumes: dict[str, Sequence[int]], source: dict[str, Any]
) -> Path:
    from runtime.contract.files import write_json_atomically

    path = Path(folder) / MANIFEST_NAME
    write_json_atomically(
        path,
        {
            "format": PROBABILITY_FORMAT,
            "format_version": 1,
            "encoding": encoding,
            "volumes": {
                volume_id: {"file": f"{volume_id}.npy", "shape": [int(n) for n in shape]}
                for volume_id, shape in volumes.items()
            },
            "source": source,
        },
    )
    return path


def find_probabilities(folder: Path | str) -> ProbabilitySet:
    """The volumes of a probability folder: those its manifest lists, else every ``*.npy``."""
    from runtime.contract.files import check_document_format, load_json

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of saved probabilities")
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        data = load_json(manifest, kind="probabilities manifest", error=InputError)
        check_document_format(
            data,
            origin=str(manifest),
            kind="probability manifest",
            format_name=PROBABILITY_FORMAT,
            format_version=1,
            hint="save the probabilities again",
            error=InputError,
        )
        encoding = data.get("encoding")
        if encoding not in PROBABILITY_ENCODINGS:
            raise InputError(
                f"{manifest}: encoding {encoding!r} is not one of {', '.join(PROBABILITY_ENCODINGS)}"
            )
        files: dict[str, Path] = {}
        for volume_id, entry in dict(data.get("volumes") or {}).items():
            name = str(entry.get("file", "")) if isinstance(entry, dict) else ""
            if Path(name).name != name or not name.endswith(
                ".npy"
            ):  # never a path out of the folder
                raise InputError(
                    f"{manifest}: volume {volume_id} names file {name!r}; expected <id>.npy in the folder"
                )
            if not (folder / name).is_file():
                raise InputError(f"{manifest}: lists {volume_id} but {folder / name} is missing")
            files[str(volume_id)] = folder / name
        if not files:
            raise InputError(f"{manifest}: lists no volumes")
        return ProbabilitySet(folder, encoding, files)
    files = {path.name.split(".", 1)[0]: path for path in sorted(folder.glob("*.npy"))}
    if not files:
        raise InputError(f"{folder}: no {MANIFEST_NAME} and no .npy probabilities in it")
    encodings = {encoding_of(load_probability(path)) for path in files.values()}
    if len(encodings) != 1:
        raise InputError(f"{folder}: mixed probability dtypes ({', '.join(sorted(encodings))})")
    note = f"{folder}: no {MANIFEST_NAME}, using the {len(files)} .npy file(s) found (was the run that wrote them interrupted?)"
    return ProbabilitySet(folder, encodings.pop(), files, [note])


def fuse(
    inputs: Sequence[Path | str],
    output: Path | str,
    fusion: EnsembleSettings,
    *,
    encoding: ProbabilityEncoding | str = ProbabilityEncoding.UINT8,
    log: Callable[[str], None] | None = None,
) -> ProbabilitySet:
    """Fusion of several models' saved probabilities, volume by volume, with the engine's maths
    (:class:`runtime.fusion.Fusion`) and ``fusion``'s weights and mode (resolved by
    :func:`runtime.contract.settings.resolve_ensemble`, one weight per input). Every volume
    must be in every input, with one shape.
    """
    from runtime.fusion import Fusion

    log = log or (lambda message: None)
    encoding = ProbabilityEncoding(encoding)
    sets = [find_probabilities(folder) for folder in inputs]
    for found in sets:
        for note in found.notes:
            log(note)
    ids = sorted(sets[0].files)
    problems = [
        f"{found.folder} lacks {', '.join(sorted(set(ids) - set(found.files)))}"
        for found in sets[1:]
        if set(ids) - set(found.files)
    ]
    problems += [
        f"{found.folder} has {', '.join(sorted(set(found.files) - set(ids)))} that {sets[0].folder} lacks"
        for found in sets[1:]
        if set(found.files) - set(ids)
    ]
    if problems:
        raise InputError("the folders hold different volumes: " + "; ".join(problems))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_NAME).unlink(missing_ok=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for volume_id in ids:
        arrays = [load_probability(found.files[volume_id]) for found in sets]
        if len({a.shape for a in arrays}) != 1:
            listed = ", ".join(
                f"{found.files[volume_id]} {a.shape}" for found, a in zip(sets, arrays, strict=True)
            )
            raise InputError(f"{volume_id}: shapes differ ({listed})")
        fused = Fusion(fusion.mode, arrays[0].shape)
        for weight, array in zip(fusion.weights, arrays, strict=True):
            fused.add(decode(array), weight)
        save_probability(output / f"{volume_id}.npy", encode(fused.probability(), encoding))
        shapes[volume_id] = arrays[0].shape
        log(f"{volume_id}: fused {len(arrays)} inputs")
    source = {
        "fused": [str(Path(p)) for p in inputs],
        "weights": list(fusion.weights),
        "mode": str(fusion.mode),
    }
    write_manifest(output, encoding, shapes, source)
    return ProbabilitySet(output, encoding, {i: output / f"{i}.npy" for i in ids})


def finish_with_probability(
    volume_id: str,
    probability: np.ndarray | None,
    *,
    save_dir: Path | None,
    save_encoding: str,
    settings: MaskSettings | None = None,
    settings_encoding: str = "float32",
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray | None, Path | None, float | None]:
    """What ``predict`` does with a volume's probability: save it, and/or make the mask from it
    with tuned :class:`~runtime.volumes.mask_settings.MaskSettings` (compared in the encoding
    they were tuned on). Returns (mask or None, saved file or None, threshold used or None)."""
    from runtime.volumes.mask_settings import apply_settings

    if probability is None:
        raise VolumeError(f"{volume_id}: the engine kept no probability for it")
    saved = None
    stored = None
    if save_dir is not None:
        stored = encode(probability, save_encoding)
        saved = Path(save_dir) / f"{volume_id}.npy"
        save_probability(saved, stored)
    if settings is None:
        return None, saved, None
    if settings_encoding == "float32":
        compared = probability
    elif stored is not None and save_encoding == settings_encoding:
        compared = stored
    else:
        compared = encode(probability, settings_encoding)
    mask, threshold = apply_settings(compared, settings_encoding, settings, warn=warn)
    return mask, saved, threshold
