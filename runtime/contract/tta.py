"""Test-time augmentation: named transforms of a window, each inverted exactly on the way back.

Standard library only (the settings resolve it, the bundler checks it); the engine applies them
with ``runtime.inference.tta``.

A transform is a composition, applied in this order: flips of some spatial axes, then ``k``
quarter turns in one plane (``torch.rot90``), then a swap of two axes. Its inverse undoes them in
the opposite order, so ``invert(apply(w)) == w`` bit for bit (these are permutations of voxels).

Presets:

* ``mirror8``: the identity and every combination of flips of z, y and x (nnU-Net's mirroring);
* ``rot7``: the identity, the 3 single flips and 3 quarter turns in the y-x plane (the public
  Vesuvius notebooks').

``--tta`` takes a preset, a list of axes to mirror (``0,1,2``: today's form, all their flip
combinations), or named transforms separated by ``+`` (``flip_z+rot90_yx_1+transpose_yx``);
the identity always runs first. A rotation or transpose that would change the window's shape (a
quarter turn of a non-square y-x patch) is refused by name, since the window must go through
the same network input shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "IDENTITY",
    "PRESETS",
    "Transform",
    "check_patch",
    "describe",
    "mirror_transforms",
    "parse_tta",
]

_AXIS_NAMES = "zyx"
_PLANES = {"zy": (0, 1), "zx": (0, 2), "yx": (1, 2)}


@dataclass(frozen=True)
class Transform:
    """Flips, then ``turns`` quarter turns in ``plane``, then a swap of ``swap``'s two axes."""

    flips: tuple[int, ...] = ()
    turns: int = 0
    plane: tuple[int, int] = (1, 2)
    swap: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        parts = []
        if self.flips:
            parts.append("flip_" + "".join(_AXIS_NAMES[a] for a in self.flips))
        if self.turns:
            parts.append(f"rot90_{_plane_name(self.plane)}_{self.turns}")
        if self.swap:
            parts.append("transpose_" + _plane_name(self.swap))
        return "+".join(parts) or "identity"

    @property
    def is_identity(self) -> bool:
        return not self.flips and not self.turns and not self.swap

    def __post_init__(self) -> None:
        axes = (*self.flips, *self.plane, *(self.swap or ()))
        if any(axis not in (0, 1, 2) for axis in axes) or len(set(self.flips)) != len(self.flips):
            raise ValueError(f"TTA axes must be distinct among 0, 1, 2 (z, y, x), got {self!r}")
        if self.turns not in (0, 1, 2, 3) or self.plane[0] == self.plane[1]:
            raise ValueError(f"a TTA rotation needs 0-3 quarter turns in a plane, got {self!r}")

    def keeps_shape(self, patch: Sequence[int]) -> bool:
        odd_turn = self.turns % 2 == 1
        if odd_turn and patch[self.plane[0]] != patch[self.plane[1]]:
            return False
        return not (self.swap and patch[self.swap[0]] != patch[self.swap[1]])


IDENTITY = Transform()


def mirror_transforms(axes: Sequence[int]) -> tuple[Transform, ...]:
    """Every combination of flips of ``axes``, the identity first (2 ** len(axes))."""
    unique = sorted(set(axes))
    return tuple(
        Transform(flips=tuple(combination))
        for count in range(len(unique) + 1)
        for combination in itertools.combinations(unique, count)
    )


PRESETS: dict[str, tuple[Transform, ...]] = {
    "mirror8": mirror_transforms((0, 1, 2)),
    "rot7": (
        Transform(),
        Transform(flips=(0,)),
        Transform(flips=(1,)),
        Transform(flips=(2,)),
        Transform(turns=1),
        Transform(turns=2),
        Transform(turns=3),
    ),
}


def parse_tta(text: str) -> tuple[Transform, ...] | None:
    """A preset, mirror axes (``0,2``; ``all``), named transforms joined by ``+``, ``none`` (the
    identity alone) or ``auto`` (None: each model's own mirror axes); ValueError names what is
    wrong."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if text in ("", "none", "off"):
        return (IDENTITY,)
    if text == "all":
        return PRESETS["mirror8"]
    if text in PRESETS:
        return PRESETS[text]
    if text and all(part.strip().isdigit() for part in text.split(",")):
        axes = tuple(int(part) for part in text.split(","))
        if any(axis not in (0, 1, 2) for axis in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"mirror axes must be distinct among 0, 1, 2 (z, y, x), got {text!r}")
        return mirror_transforms(axes)
    transforms = [Transform()]
    for name in text.split("+"):
        transform = _named(name.strip())
        if transform in transforms:
            raise ValueError(f"TTA transform {transform.name!r} is listed twice")
        transforms.append(transform)
    return tuple(transforms)


def check_patch(transforms: Sequence[Transform], patch: Sequence[int]) -> None:
    """ValueError naming the first transform that cannot keep ``patch``'s shape."""
    for transform in transforms:
        if not transform.keeps_shape(patch):
            raise ValueError(
                f"TTA transform {transform.name!r} would turn the {'x'.join(map(str, patch))} "
                "window into another shape; it needs equal sizes in its plane (choose a cubic "
                "or square patch with --patch-size, or another transform)"
            )


def describe(transforms: Sequence[Transform]) -> str:
    """For decisions and logs: ``off``, or the transforms and how many passes they cost."""
    if all(t.is_identity for t in transforms):
        return "off"
    for preset, members in PRESETS.items():
        if tuple(transforms) == members:
            return f"{preset} ({len(members)} passes)"
    return f"{', '.join(t.name for t in transforms)} ({len(transforms)} passes)"


def _named(name: str) -> Transform:
    known = "flip_<axes> (flip_z, flip_yx, ...), rot90_<plane>_<1|2|3>, transpose_<plane>"
    if name.startswith("flip_") and name[5:] and set(name[5:]) <= set(_AXIS_NAMES):
        axes = tuple(sorted(_AXIS_NAMES.index(c) for c in name[5:]))
        if len(set(axes)) == len(axes):
            return Transform(flips=axes)
    parts = name.split("_")
    if len(parts) == 3 and parts[0] == "rot90" and parts[1] in _PLANES and parts[2] in "123":
        return Transform(turns=int(parts[2]), plane=_PLANES[parts[1]])
    if len(parts) == 2 and parts[0] == "transpose" and parts[1] in _PLANES:
        return Transform(swap=_PLANES[parts[1]])
    presets = ", ".join(PRESETS)
    raise ValueError(
        f"unknown TTA transform {name!r}: use a preset ({presets}), mirror axes (0,1,2), or {known}"
    )


def _plane_name(axes: tuple[int, int]) -> str:
    return "".join(_AXIS_NAMES[a] for a in axes)
