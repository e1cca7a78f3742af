"""Test-time augmentation transforms: each one inverted exactly, presets as documented, shapes
that a transform cannot keep refused by name."""

from __future__ import annotations

import pytest
import torch

from runtime.contract.tta import PRESETS, Transform, check_patch, mirror_transforms, parse_tta
from runtime.inference.tta import apply, invert


def _window(shape=(2, 1, 6, 6, 6)) -> torch.Tensor:
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_transform_is_inverted_exactly(preset) -> None:
    window = _window()
    for transform in PRESETS[preset]:
        moved = apply(transform, window, 2)
        if not transform.is_identity:
            assert not torch.equal(moved, window), transform.name  # it does move voxels
        assert torch.equal(invert(transform, moved, 2), window), transform.name


def test_named_transforms_compose_and_invert() -> None:
    window = _window((1, 1, 4, 6, 6))
    for text in ("flip_zx+rot90_yx_3+transpose_yx", "rot90_zx_2", "transpose_yx+flip_y"):
        for transform in parse_tta(text) or ():
            assert torch.equal(invert(transform, apply(transform, window, 2), 2), window)


def test_presets_are_the_documented_ones() -> None:
    assert len(PRESETS["mirror8"]) == 8 and PRESETS["mirror8"][0].is_identity
    assert [t.name for t in PRESETS["rot7"]] == [
        "identity", "flip_z", "flip_y", "flip_x", "rot90_yx_1", "rot90_yx_2", "rot90_yx_3",
    ]  # fmt: skip
    assert parse_tta("0,2") == mirror_transforms((0, 2)) == mirror_transforms((2, 0))
    assert [t.name for t in mirror_transforms((0, 2))] == [
        "identity",
        "flip_z",
        "flip_x",
        "flip_zx",
    ]
    assert parse_tta("auto") is None and parse_tta("none") == parse_tta("off") == (Transform(),)
    assert parse_tta("all") == PRESETS["mirror8"]
    # a quarter turn in y-x equals transposing y and x after flipping one of them
    window = _window((1, 1, 3, 5, 5))
    turned = apply(Transform(turns=1), window, 2)
    assert torch.equal(turned, apply(Transform(flips=(2,), swap=(1, 2)), window, 2))


def test_a_rotation_of_a_non_square_patch_is_refused_by_name() -> None:
    check_patch(PRESETS["rot7"], (32, 64, 64))
    with pytest.raises(ValueError, match=r"'rot90_yx_1' would turn the 32x64x48 window"):
        check_patch(PRESETS["rot7"], (32, 64, 48))
    check_patch(parse_tta("rot90_yx_2") or (), (32, 64, 48))  # a half turn keeps any shape


@pytest.mark.parametrize(
    ("text", "message"),
    [("0,3", "mirror axes"), ("0,0", "mirror axes"), ("rot90_yx_4", "unknown TTA transform"),
     ("flip_w", "unknown TTA transform"), ("flip_z+flip_z", "listed twice")],
)  # fmt: skip
def test_bad_tta_text_says_what_is_wrong(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tta(text)
