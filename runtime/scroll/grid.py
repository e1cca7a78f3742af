"""Blocks of whole output chunks, and the windows of the one global grid that reach each block.

The window grid is planned once for the whole volume (never for a region or a block: a grid
anchored at a box's corner blends differently everywhere inside it). A block's windows keep the
grid's z-major order, so every voxel of the block sums the same windows in the same order as a
whole-volume run; the hull is the box those windows cover, the input a block reads.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from runtime.contract.errors import InputError
from runtime.inference.sliding_window import WindowPlan, plan_windows, window_starts
from runtime.scroll.source import Box

__all__ = ["Block", "block_shape", "blocks_in", "halo_factor", "hull", "member_plans"]

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class Block:
    """One task: a box of whole output chunks (the last ones cut by the volume's edge)."""

    index: Shape3  # position in the block grid
    box: Box

    @property
    def name(self) -> str:
        return "_".join(map(str, self.index))

    @property
    def voxels(self) -> int:
        return math.prod(b - a for a, b in self.box)


def block_shape(chunks: Shape3, block: int | Shape3) -> Shape3:
    """Whole chunks per axis, as close to ``block`` voxels as chunks allow (at least one)."""
    wanted = (block,) * 3 if isinstance(block, int) else block
    return tuple(  # type: ignore[return-value]
        c * max(1, round(w / c)) for c, w in zip(chunks, wanted, strict=True)
    )


def blocks_in(shape: Shape3, block: Shape3, region: Box) -> list[Block]:
    """Every block of the volume's block grid that meets ``region``, in z-major order."""
    ranges = [range(lo // b, math.ceil(hi / b)) for (lo, hi), b in zip(region, block, strict=True)]
    found = []
    for index in itertools.product(*ranges):
        box = tuple(
            (i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, shape, strict=True)
        )
        found.append(Block(index, box))  # type: ignore[arg-type]
    return found


def check_fits(shape: Shape3, patches: list[Shape3]) -> None:
    """Refuse a volume smaller than a window: its grid would pad, which blocks do not."""
    for patch in patches:
        if any(s < p for s, p in zip(shape, patch, strict=True)):
            raise InputError(
                f"a volume of {shape} is smaller than the window {patch} along an axis: "
                "run predict on it as a TIFF instead"
            )


def _axis_windows(size: int, patch: int, overlap: float, lo: int, hi: int) -> list[int]:
    return [s for s in window_starts(size, patch, overlap) if s < hi and s + patch > lo]


def hull(shape: Shape3, patches: list[Shape3], overlap: float, box: Box) -> Box:
    """The box every window of every member that reaches ``box`` covers (the block's input)."""
    lows, highs = list(shape), [0, 0, 0]
    for patch in patches:
        for axis in range(3):
            starts = _axis_windows(shape[axis], patch[axis], overlap, *box[axis])
            lows[axis] = min(lows[axis], starts[0])
            highs[axis] = max(highs[axis], starts[-1] + patch[axis])
    return ((lows[0], highs[0]), (lows[1], highs[1]), (lows[2], highs[2]))


def member_plans(
    shape: Shape3, patches: list[Shape3], overlap: float, box: Box, around: Box
) -> list[WindowPlan]:
    """Each member's windows reaching ``box``, in the global order, relative to ``around``."""
    origin = tuple(a for a, _ in around)
    extent = tuple(b - a for a, b in around)
    plans = []
    for patch in patches:
        per_axis = [
            [s - origin[axis] for s in _axis_windows(shape[axis], patch[axis], overlap, *box[axis])]
            for axis in range(3)
        ]
        starts = tuple(itertools.product(*per_axis))
        plans.append(WindowPlan(extent, extent, (0, 0, 0), patch, starts))  # type: ignore[arg-type]
    return plans


def halo_factor(block: Shape3, patch: Shape3, overlap: float) -> float:
    """((B + P - s) / B)^3 per axis: the forward work a block does over its own share."""
    factor = 1.0
    for b, p in zip(block, patch, strict=True):
        step = max(p * (1.0 - overlap), 1.0)
        factor *= (b + p - step) / b
    return factor


def global_plan(shape: Shape3, patch: Shape3, overlap: float) -> WindowPlan:
    """The whole volume's grid (what a whole-volume run uses), for records and checks."""
    return plan_windows(shape, patch, overlap)
