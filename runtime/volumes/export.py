"""Writing one volume's outputs: its mask TIFF (after post-processing or a tuned rule), its saved
probability and its preview PNG.

This is the export step, kept apart from prediction as nnU-Net keeps it: the pipeline hands over
what the engine returned and :func:`export_volume` records on the volume's
:class:`~runtime.volumes.run_metrics.VolumeRecord` what was written. Its failure policy is the
volume's own: a volume that failed but whose shape is known gets an all-zero mask; a failed
post-processing keeps the raw mask; a preview that cannot be written is only a warning.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.contract.errors import VolumeError, first_line
from runtime.volumes.postprocess import PostprocessOptions

if TYPE_CHECKING:
    import numpy as np

    from runtime.volumes.mask_settings import MaskSettings
    from runtime.volumes.run_metrics import VolumeRecord

__all__ = ["Export", "export_volume"]

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Export:
    """Where and how each volume's outputs are written (the same for every volume of a run)."""

    workdir: Path  # <id>.tif masks, zipped afterwards
    postprocess: PostprocessOptions = dataclasses.field(default_factory=PostprocessOptions)
    # A rule that decides the mask from the probability (hysteresis, per-volume, a tuned file),
    # compared in ``mask_encoding`` as tune compared it; None: the engine's mask, post-processed.
    mask_settings: MaskSettings | None = None
    mask_encoding: str = "float32"
    save_probabilities: Path | None = None  # <id>.npy probabilities
    probability_encoding: str = "uint8"
    preview_dir: Path | None = None  # <id>.png previews

    @property
    def keeps_probability(self) -> bool:
        return self.save_probabilities is not None or self.mask_settings is not None


def export_volume(
    record: VolumeRecord,
    mask: np.ndarray | None,
    probability: np.ndarray | None,
    preview_slice: np.ndarray | None,
    export: Export,
    *,
    warn: Log,
    log: Log,
) -> None:
    """Post-process and write one volume's mask (all zeros if ``mask`` is None but the shape is
    known), its probability and preview; ``record`` gets the status, timings and errors."""
    import numpy as np

    from runtime.volumes.postprocess import postprocess
    from runtime.volumes.tiff import write_mask

    if record.shape is None:
        record.status = "no-mask"
        return
    engine_mask = mask
    if mask is not None:
        started = time.perf_counter()
        try:
            if export.keeps_probability:
                mask = _from_probability(record, mask, probability, export, warn)
            else:
                mask = postprocess(mask, export.postprocess, warn=warn)
        except Exception as error:  # keep the raw mask rather than lose the volume
            _fail(record, f"{record.path}: post-processing failed: {first_line(error)}", log)
        record.postprocess_seconds = time.perf_counter() - started
    else:
        try:
            mask = np.zeros(record.shape, dtype=np.uint8)
        except MemoryError:
            _fail(record, f"{record.id}: its all-zero stand-in does not fit in memory", log)
            record.status = "no-mask"
            return
    record.foreground_fraction = float(np.count_nonzero(mask)) / max(mask.size, 1)
    started = time.perf_counter()
    try:
        write_mask(export.workdir / f"{record.id}.tif", mask)
        record.status = "zero-mask" if engine_mask is None else "ok"
    except (VolumeError, OSError) as error:
        _fail(record, f"{record.id}: cannot write its mask: {first_line(error)}", log)
        record.status = "no-mask"
    record.write_seconds = time.perf_counter() - started
    if export.preview_dir is not None and preview_slice is not None:
        _preview(export.preview_dir, record, preview_slice, mask, log)


def _from_probability(
    record: VolumeRecord,
    mask: np.ndarray,
    probability: np.ndarray | None,
    export: Export,
    warn: Log,
) -> np.ndarray:
    """Save the probability and/or decide the mask from it with the rule."""
    from runtime.volumes.postprocess import postprocess
    from runtime.volumes.probability import finish_with_probability

    decided, saved, threshold = finish_with_probability(
        record.id,
        probability,
        save_dir=export.save_probabilities,
        save_encoding=export.probability_encoding,
        settings=export.mask_settings,
        settings_encoding=export.mask_encoding,
        warn=warn,
    )
    record.probability_file = str(saved) if saved else None
    record.threshold = threshold
    return decided if decided is not None else postprocess(mask, export.postprocess, warn=warn)


def _preview(
    folder: Path, record: VolumeRecord, plane: np.ndarray, mask: np.ndarray, log: Log
) -> None:
    from runtime.volumes.preview import write_preview

    middle = mask.shape[0] // 2
    try:
        write_preview(folder / f"{record.id}.png", plane[None], mask[middle : middle + 1])
    except Exception as error:  # a preview is a nicety; never fail a volume for it
        log(f"warning: {record.id}: preview not written: {first_line(error)}")


def _fail(record: VolumeRecord, message: str, log: Log) -> None:
    record.errors.append(message)
    log(f"error: {message}")
