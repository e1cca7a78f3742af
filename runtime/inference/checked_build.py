"""A network is built only once its checkpoint is known to fit it.

Widths and depths come from a few bytes of JSON (``config.json``, ``plans.json``); built and
initialised as they say, ``channels: [100000]`` allocates gigabytes before the checkpoint's
shapes are even looked at. The architecture is therefore built first on torch's ``meta``
device, where no memory is allocated and nothing is computed, and its tensor shapes are
compared with the checkpoint's; the real network is built only when they match, and then
costs what the checkpoint itself holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from runtime.contract.errors import ModelError

__all__ = ["build_matching", "check_weights_match"]


def check_weights_match(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    path: Path,
    *,
    described_by: str,
    hint: str = "",
) -> None:
    """Raise ModelError naming the first missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    problems = [
        f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if items
    ]
    if problems:
        raise ModelError(
            f"{path}: weights do not match {described_by} ({'; '.join(problems)}){hint}"
        )


def build_matching(
    build: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor],
    path: Path,
    *,
    described_by: str,
    hint: str = "",
) -> torch.nn.Module:
    """``build()`` on the meta device, compared with ``state``; then for real, with ``state`` loaded."""
    with torch.device("meta"):
        skeleton = build()
    check_weights_match(skeleton.state_dict(), state, path, described_by=described_by, hint=hint)
    del skeleton
    network = build()
    network.load_state_dict(state, strict=True)
    return network
