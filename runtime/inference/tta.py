"""Test-time transforms applied to window tensors and undone (``runtime.contract.tta`` names
them): flips, then quarter turns, then a swap; the inverse in the opposite order, so a voxel comes
back exactly where it was."""

from __future__ import annotations

import torch

from runtime.contract.tta import Transform

__all__ = ["apply", "invert"]


def apply(transform: Transform, window: torch.Tensor, offset: int) -> torch.Tensor:
    """``window``'s spatial axes start at ``offset`` (0 for (Z, Y, X), 2 for (N, C, Z, Y, X))."""
    if transform.flips:
        window = torch.flip(window, [axis + offset for axis in transform.flips])
    if transform.turns:
        window = torch.rot90(window, transform.turns, [axis + offset for axis in transform.plane])
    if transform.swap:
        window = window.transpose(transform.swap[0] + offset, transform.swap[1] + offset)
    return window


def invert(transform: Transform, window: torch.Tensor, offset: int) -> torch.Tensor:
    if transform.swap:
        window = window.transpose(transform.swap[0] + offset, transform.swap[1] + offset)
    if transform.turns:
        window = torch.rot90(window, -transform.turns, [axis + offset for axis in transform.plane])
    if transform.flips:
        window = torch.flip(window, [axis + offset for axis in transform.flips])
    return window
