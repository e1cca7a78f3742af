"""The weighted mean of several models' foreground probabilities, or of their log-odds."""

from __future__ import annotations

import math

import numpy as np

from runtime.contract.settings import EnsembleMode

# Probabilities are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before their log-odds are averaged
# (as log-odds within +-LOGIT_LIMIT, symmetric in float32): a saved uint8 probability of 0 or 1
# (or a float32 sigmoid that rounded to it) would otherwise be an infinite log-odds that vetoes
# every other member (and +inf beside -inf is NaN).
LOGIT_CLIP = 1e-4
LOGIT_LIMIT = math.log((1 - LOGIT_CLIP) / LOGIT_CLIP)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 probabilities of log-odds; -inf (outside an nnU-Net crop) gives exactly 0.

    Written with tanh, which never overflows, instead of 1 / (1 + exp(-x)).
    """
    half = np.float32(0.5)
    return half + half * np.tanh(np.asarray(logits, dtype=np.float32) * half)


class Fusion:
    """The running weighted mean of one volume's member probabilities, one member at a time,
    so that only one accumulator of the volume's shape is held whatever the member count.

    ``add`` takes each member's probability and weight (the weights should sum to 1, as
    :func:`runtime.contract.settings.resolve_ensemble` makes them); ``probability`` is the
    fused foreground probability (float32).
    """

    def __init__(self, mode: EnsembleMode | str, shape: tuple[int, ...]) -> None:
        self.mode = EnsembleMode(mode)
        self._total = np.zeros(shape, dtype=np.float32)

    def add(self, probability: np.ndarray, weight: float) -> None:
        value = np.asarray(probability, dtype=np.float32)
        if self.mode == EnsembleMode.LOGITS:
            with np.errstate(divide="ignore"):  # 0 and 1 give -inf and inf, clipped below
                value = np.log(value) - np.log1p(-value)
            value = np.clip(value, np.float32(-LOGIT_LIMIT), np.float32(LOGIT_LIMIT))
        self._total += np.float32(weight) * value

    def probability(self) -> np.ndarray:
        if self.mode == EnsembleMode.LOGITS:
            return sigmoid(self._total)
        return self._total
