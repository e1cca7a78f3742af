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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.contract.errors import InputError, OutputError, VolumeError, first_line
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
    folder: Path | str, encoding: str, volumes: Mapping[str, Sequence[int]], source: dict[str, Any]
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
    """The volumes of a probability folder, as its manifest lists them; every value checked.

    A folder without ``probabilities.json`` is refused, never guessed from its ``*.npy`` files:
    ``predict``, ``fuse`` remove the manifest when they start and write it when they end, so a
    missing one means the run that wrote the folder was killed, and its files may be an earlier
    run's. Each listed file must be there with the manifest's dtype and shape.
    """
    from runtime.contract.files import check_document_format, load_json
    from runtime.contract.values import Values

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of saved probabilities")
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        found = sum(1 for _ in folder.glob("*.npy"))
        raise InputError(
            f"{folder}: no {MANIFEST_NAME} (beside {found} .npy file(s)): the run that wrote "
            "it did not finish, so its files may be an earlier run's; save the probabilities again"
        )
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
    values = Values(manifest, InputError)
    encoding = values.choice(data.get("encoding"), "encoding", PROBABILITY_ENCODINGS)
    files: dict[str, Path] = {}
    for volume_id, entry in values.mapping(data.get("volumes"), "volumes").items():
        where = f"volumes.{volume_id}"
        values.name(volume_id, f"volumes key {volume_id!r}")  # ids become output paths in fuse
        values.mapping(entry, where)
        name = entry.get("file")
        if name != f"{volume_id}.npy":  # never a path out of the folder, never another's file
            values.fail(f"{where}.file", f"must be {volume_id + '.npy'!r}, not {name!r}")
        shape = values.wholes(entry.get("shape"), f"{where}.shape", minimum=1, length=3)
        path = folder / name
        if not path.is_file():
            raise InputError(f"{manifest}: lists {volume_id} but {path} is missing")
        stored = load_probability(path)
        if encoding_of(stored) != encoding or tuple(stored.shape) != tuple(shape):
            raise InputError(
                f"{path}: holds {encoding_of(stored)} of shape {tuple(stored.shape)}, but "
                f"{manifest} says {encoding} of shape {tuple(shape)}; save the probabilities again"
            )
        files[volume_id] = path
    if not files:
        raise InputError(f"{manifest}: lists no volumes")
    return ProbabilitySet(folder, encoding, files)


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
    _check_fuse_output(sets, ids, output, encoding)
    (output / MANIFEST_NAME).unlink(missing_ok=True)  # back at the end: a killed fuse leaves none
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


def stored_bytes(shape: Sequence[int], encoding: str) -> int:
    """The size of one saved probability file (the .npy header is at most a few hundred bytes)."""
    import math

    return math.prod(shape) * (1 if encoding == "uint8" else 2) + 512


def _check_fuse_output(
    sets: Sequence[ProbabilitySet], ids: Sequence[str], output: Path, encoding: str
) -> None:
    """predict's outputs-versus-inputs check: ``fuse A B -o A`` would overwrite A's files."""
    from runtime.volumes.outputs import Output, check_outputs

    reads = [path for found in sets for path in found.files.values()]
    reads += [found.folder / MANIFEST_NAME for found in sets]
    size = sum(stored_bytes(load_probability(sets[0].files[i]).shape, encoding) for i in ids)
    writes = (*(f"{volume_id}.npy" for volume_id in ids), MANIFEST_NAME)
    check_outputs([Output("-o", output, writes, bytes=size)], reads)


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
        try:
            save_probability(saved, stored)
        except OSError as error:  # asked for and not saved: the run failed, not a note
            raise OutputError(
                f"--save-probabilities {save_dir}: cannot write {saved.name} "
                f"({error.strerror or first_line(error)})"
            ) from None
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
