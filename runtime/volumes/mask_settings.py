"""How a foreground probability becomes a submitted mask: one definition for ``tune`` and ``predict``.

A :class:`MaskSettings` names a thresholding rule and the clean-up after it:

* a plain threshold: foreground where the probability exceeds ``threshold``;
* hysteresis: seeds where it exceeds ``hysteresis_high``, grown 26-connectedly through voxels
  above ``threshold`` (the low threshold), so faint stretches of a sheet survive when they
  touch a confident part, and faint specks alone do not;
* a per-volume threshold: each volume gets the threshold that makes ``foreground_fraction`` of
  it foreground (clipped to ``fraction_bounds``), for models whose calibration drifts between
  scrolls;

then :class:`~runtime.volumes.postprocess.PostprocessOptions` (small components, closing, holes).

Probabilities are compared as they are stored (saved uint8 probabilities as their integer
levels), so a setting tuned on saved probabilities gives the very same masks when ``predict``
applies it to fresh ones encoded the same way. ``postprocess.json`` (written by ``tune``, read by
``predict --postprocess``) holds the settings and that encoding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.contract.errors import InputError
from runtime.contract.settings import ProbabilityEncoding
from runtime.volumes.postprocess import PostprocessOptions

if TYPE_CHECKING:
    import numpy as np

    from runtime.contract.values import Values

__all__ = [
    "POSTPROCESS_FORMAT",
    "MaskSettings",
    "apply_settings",
    "read_postprocess_file",
    "volume_threshold",
]

POSTPROCESS_FORMAT = "kaggle-offline-postprocess"
# what probabilities are compared as: a saved encoding, or the engine's float32
ENCODINGS = (*ProbabilityEncoding, "float32")
UINT8_LEVELS = 255  # a uint8 probability q stands for q / 255


@dataclasses.dataclass(frozen=True)
class MaskSettings:
    threshold: float = 0.5  # foreground: probability > threshold (with hysteresis: the low one)
    hysteresis_high: float | None = None  # seeds above this grow through voxels above threshold
    foreground_fraction: float | None = None  # per-volume threshold giving this foreground share
    fraction_bounds: tuple[float, float] = (0.05, 0.95)  # where a per-volume threshold may go
    postprocess: PostprocessOptions = dataclasses.field(default_factory=PostprocessOptions)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.hysteresis_high is not None and not self.threshold < self.hysteresis_high < 1.0:
            raise ValueError(
                f"hysteresis high {self.hysteresis_high} must lie between the low threshold {self.threshold} and 1"
            )
        if self.foreground_fraction is not None:
            if not 0.0 < self.foreground_fraction < 1.0:
                raise ValueError(
                    f"foreground fraction must be in (0, 1), got {self.foreground_fraction}"
                )
            if self.hysteresis_high is not None:
                raise ValueError("a per-volume threshold and hysteresis cannot be combined")
        low, high = self.fraction_bounds
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(
                f"fraction bounds must satisfy 0 <= low <= high < 1, got {self.fraction_bounds}"
            )

    @property
    def rule(self) -> str:
        if self.hysteresis_high is not None:
            return "hysteresis"
        return "per-volume" if self.foreground_fraction is not None else "threshold"

    @property
    def is_plain_threshold(self) -> bool:
        return self.rule == "threshold" and not self.postprocess.steps

    def describe(self) -> str:
        if self.rule == "hysteresis":
            text = f"hysteresis {self.threshold:g}-{self.hysteresis_high:g}"
        elif self.foreground_fraction is not None:  # the per-volume rule
            low, high = self.fraction_bounds
            text = f"per-volume threshold for {100 * self.foreground_fraction:g}% foreground (in {low:g}-{high:g})"
        else:
            text = f"threshold {self.threshold:g}"
        steps = self.postprocess.steps
        return text + (", " + ", ".join(steps) if steps else "")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fraction_bounds"] = list(self.fraction_bounds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "settings") -> MaskSettings:
        """Settings from JSON, every value checked for type and range (one line naming it)."""
        from runtime.contract.values import Values

        values = Values(origin, InputError)
        values.mapping(data, "settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{origin}: unknown setting(s) {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        if "threshold" in data:
            checked["threshold"] = values.number(
                data["threshold"], "settings.threshold", low=0.0, high=1.0, open_high=True
            )
        for key in ("hysteresis_high", "foreground_fraction"):
            if data.get(key) is not None:
                checked[key] = values.fraction(data[key], f"settings.{key}")
        if "fraction_bounds" in data:
            bounds = values.numbers(
                data["fraction_bounds"], "settings.fraction_bounds", length=2, low=0.0, high=1.0
            )
            checked["fraction_bounds"] = tuple(bounds)
        if "postprocess" in data:
            checked["postprocess"] = postprocess_from_dict(
                data["postprocess"], values, "settings.postprocess"
            )
        try:
            return cls(**checked)
        except ValueError as error:
            raise InputError(f"{origin}: {error}") from None


def postprocess_from_dict(data: Any, values: Values, where: str) -> PostprocessOptions:
    """Clean-up options from JSON: booleans are booleans, sizes and radii whole numbers >= 0."""
    values.mapping(data, where)
    known = {f.name for f in dataclasses.fields(PostprocessOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        values.fail(where, f"has unknown key(s) {', '.join(unknown)}")
    checked: dict[str, Any] = {}
    for key in ("min_component_voxels", "closing_radius"):
        if key in data:
            checked[key] = values.whole(data[key], f"{where}.{key}")
    if "fill_holes" in data:
        checked["fill_holes"] = values.boolean(data["fill_holes"], f"{where}.fill_holes")
    try:
        return PostprocessOptions(**checked)
    except ValueError as error:  # the closing radius's cost
        values.fail(where, str(error))


def read_postprocess_file(path: Path | str) -> tuple[MaskSettings, str]:
    """The settings and the probability encoding they were tuned on, from a postprocess.json."""
    from runtime.contract.files import check_document_format, load_json
    from runtime.contract.values import Values

    path = Path(path)
    data = load_json(path, kind="post-processing settings file", error=InputError)
    check_document_format(
        data,
        origin=str(path),
        kind="post-processing file",
        format_name=POSTPROCESS_FORMAT,
        format_version=1,
        hint="write it again with this version's `runtime tune`",
        error=InputError,
    )
    values = Values(path, InputError)
    encoding = values.choice(
        data.get("probability_encoding", "float32"), "probability_encoding", ENCODINGS
    )
    for index, volume_id in enumerate(values.listing(data.get("volumes", []), "volumes")):
        values.name(volume_id, f"volumes[{index}]")
    return MaskSettings.from_dict(data.get("settings"), origin=str(path)), encoding


def volume_threshold(stored: np.ndarray, encoding: str, settings: MaskSettings) -> float:
    """The threshold this volume gets: the fixed one, or the per-volume rule's choice."""
    import numpy as np

    if settings.foreground_fraction is None:
        return settings.threshold
    low, high = settings.fraction_bounds
    wanted = settings.foreground_fraction * stored.size
    if encoding == "uint8":
        counts = np.bincount(np.asarray(stored).ravel(), minlength=UINT8_LEVELS + 1)
        above = counts[::-1].cumsum()[::-1]  # above[k]: voxels at level >= k
        # the lowest level k whose "q > k" keeps at most the wanted share
        levels = np.flatnonzero(np.append(above[1:], 0) <= wanted)
        chosen = int(levels[0]) / UINT8_LEVELS
    else:
        chosen = float(
            np.quantile(np.asarray(stored, dtype=np.float32), 1.0 - settings.foreground_fraction)
        )
    return min(max(chosen, low), high)


def apply_settings(
    stored: np.ndarray,
    encoding: str,
    settings: MaskSettings,
    *,
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, float]:
    """The uint8 0/1 mask for a stored probability, and the (low) threshold it used."""
    import numpy as np

    from runtime.volumes.postprocess import postprocess

    if encoding not in ENCODINGS:
        raise ValueError(f"unknown probability encoding {encoding!r}")
    if encoding != "uint8":
        # once here, not in each comparison and quantile below (a no-op for float32)
        stored = np.asarray(stored, dtype=np.float32)
    threshold = volume_threshold(stored, encoding, settings)
    mask = _above(stored, encoding, threshold)
    if settings.hysteresis_high is not None:
        mask = _grow_from_seeds(mask, _above(stored, encoding, settings.hysteresis_high))
    return postprocess(mask, settings.postprocess, warn=warn), threshold


def _above(stored: np.ndarray, encoding: str, threshold: float) -> np.ndarray:
    import numpy as np

    if encoding == "uint8":
        # q / 255 > t  <=>  q > 255 t; rounded first so that t = 0.2 means level 51 exactly
        return np.asarray(stored) > int(math.floor(round(threshold * UINT8_LEVELS, 6)))
    return np.asarray(stored, dtype=np.float32) > np.float32(threshold)


def _grow_from_seeds(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 26-connected components of ``candidates`` that hold a seed."""
    import numpy as np

    from runtime.volumes.metric.components import label

    labels, count = label(candidates, 26)
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[seeds & candidates])] = True
    keep[0] = False
    return keep[labels]
