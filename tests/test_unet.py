"""The built-in 3D U-Net family: config validation, round trips, shapes and real training."""

from __future__ import annotations

import io
import json

import pytest
import torch

from runtime.contract.errors import ModelError
from runtime.inference.unet import UNet3D, UNetConfig

SMALL = UNetConfig(channels=(4, 8), convs_per_level=1)


def _output(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(torch.randn(shape, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(),
        UNetConfig(channels=(4,), out_channels=3, norm="none"),
        UNetConfig(channels=(4, 8, 8), norm="batch", activation="relu"),
        UNetConfig(channels=(4, 8), norm="group", norm_groups=2, upsample="trilinear"),
        UNetConfig(in_channels=2, channels=(4, 8), kernel_size=5, convs_per_level=1),
    ],
    ids=["default", "one-level-3-classes", "batch", "group-trilinear", "two-in-k5"],
)
def test_output_shape_follows_input(config: UNetConfig) -> None:
    shape = (2, config.in_channels, 8, 12, 4 * config.size_multiple)  # anisotropic
    out = _output(UNet3D(config), shape)
    assert out.shape == (2, config.out_channels, *shape[2:])
    assert torch.isfinite(out).all()


def test_size_multiple_is_two_to_the_levels_below_the_top() -> None:
    assert UNetConfig(channels=(4,)).size_multiple == 1
    assert UNetConfig(channels=(8, 16, 32)).size_multiple == 4
    assert UNetConfig(channels=(8, 16, 32, 64, 128)).size_multiple == 16


def test_dict_round_trip_through_json() -> None:
    config = UNetConfig(out_channels=3, channels=(4, 8, 16), norm="group", norm_groups=4)
    text = json.dumps(config.to_dict())
    assert UNetConfig.from_dict(json.loads(text)) == config
    assert UNetConfig.from_dict({}) == UNetConfig()  # every field has a default


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ModelError, match=r"m/config\.json: unknown .*'chanels'.*'depht'") as info:
        UNetConfig.from_dict({"chanels": [4], "depht": 2, "norm": "batch"}, source="m/config.json")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"channels": []}, "'channels'"),
        ({"channels": [8, 0]}, "'channels'"),
        ({"channels": "8,16"}, "'channels'"),
        ({"norm": "layer"}, "'norm'"),
        ({"out_channels": 0}, "'out_channels'"),
        ({"in_channels": 1.0}, "'in_channels'"),
        ({"kernel_size": 4}, "'kernel_size'"),
        ({"activation": "tanh"}, "'activation'"),
        ({"upsample": "nearest"}, "'upsample'"),
        ({"norm": "group", "channels": [6, 8], "norm_groups": 4}, "'norm_groups'"),
    ],
)
def test_bad_values_are_named(data: dict[str, object], named: str) -> None:
    with pytest.raises(ModelError, match=named) as info:
        UNetConfig.from_dict(data)
    assert "\n" not in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ModelError) as info:
        UNetConfig.from_dict({"norm": "layer", "kernel_size": 2})
    assert "'norm'" in str(info.value)
    assert "'kernel_size'" in str(info.value)


def test_architecture_must_be_an_object() -> None:
    with pytest.raises(ModelError, match="JSON object"):
        UNetConfig.from_dict([8, 16], source="x.json")  # type: ignore[arg-type]


def test_forward_refuses_bad_shapes_with_a_hint() -> None:
    model = UNet3D(UNetConfig(channels=(4, 8, 16)))
    with pytest.raises(ModelError, match=r"not divisible by 4"):
        model(torch.zeros(1, 1, 8, 10, 8))
    with pytest.raises(ModelError, match=r"\(N, 1, Z, Y, X\)"):
        model(torch.zeros(1, 2, 8, 8, 8))


def test_state_dict_survives_weights_only_load() -> None:
    torch.manual_seed(0)
    model = UNet3D(SMALL)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = UNet3D(SMALL)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    shape = (1, 1, 8, 8, 8)
    torch.testing.assert_close(_output(model, shape), _output(clone, shape), rtol=0, atol=0)


@pytest.mark.slow
def test_it_learns_to_find_a_bright_slab() -> None:
    # A real optimisation run: the net must learn where the bright slab is, beyond chance.
    torch.manual_seed(0)
    image = torch.randn(4, 1, 8, 16, 16) * 0.5
    target = torch.zeros_like(image)
    for index in range(4):
        start = 2 + 3 * index
        target[index, :, :, start : start + 3, :] = 1
    image = image + 2 * target
    model = UNet3D(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    first = loss_fn(model(image), target).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(image) > 0) == (target > 0.5)).float().mean().item()
    assert loss.item() < first / 2
    assert accuracy > 0.95


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.slow
def test_torch_export_and_script_work() -> None:
    # The engine may run the family through torch.export (.pt2) or TorchScript.
    model = UNet3D(SMALL).eval()
    sample = torch.randn(1, 1, 8, 8, 8)
    exported = torch.export.export(model, (sample,))
    torch.testing.assert_close(exported.module()(sample), model(sample))
    traced = torch.jit.trace(model, sample)
    torch.testing.assert_close(traced(sample), model(sample))
