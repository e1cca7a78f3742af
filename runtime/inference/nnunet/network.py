"""Building the network a configuration describes, resolving dotted names against an allow-list.

nnU-Net resolves every dotted name in plans.json with ``pydoc.locate``: any importable callable,
so a plans file could name ``os.system``. Here a name is only ever looked up in a fixed table of
the classes nnU-Net's architectures take (torch.nn convolutions, norms, dropouts, activations;
the U-Net classes and residual blocks of dynamic-network-architectures), built from the classes
themselves so both spellings nnU-Net writes (``torch.nn.LeakyReLU`` and
``torch.nn.modules.activation.LeakyReLU``) are found. Anything else is refused by name.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch

from runtime.contract.errors import ModelError

__all__ = ["allowed_names", "build_network", "resolve"]

_TORCH_CLASSES = (
    # convolutions
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    # normalizations
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "GroupNorm", "LayerNorm",
    # dropouts
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
    # activations
    "LeakyReLU", "ReLU", "ReLU6", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Hardswish", "Hardtanh", "Softplus", "Tanh", "Sigmoid", "Identity",
)  # fmt: skip
# dynamic-network-architectures: module -> classes. Its unet.py imports only torch and numpy;
# the transformer architectures (Primus) need timm and are not offered.
_DNA_CLASSES = {
    "dynamic_network_architectures.architectures.unet": (
        "PlainConvUNet",
        "ResidualEncoderUNet",
        "ResidualUNet",
    ),
    "dynamic_network_architectures.building_blocks.residual": ("BasicBlockD", "BottleneckD"),
}
_ARCHITECTURES = frozenset(_DNA_CLASSES["dynamic_network_architectures.architectures.unet"])
_INSTALL_HINT = (
    "pip install --no-deps dynamic-network-architectures (its U-Nets need only torch; --no-deps "
    "keeps its timm pin from replacing the kernel's timm)"
)


@functools.cache
def allowed_names() -> dict[str, type]:
    """Every dotted name a plans file may use, and the class it stands for."""
    names: dict[str, type] = {}
    for class_name in _TORCH_CLASSES:
        cls = getattr(torch.nn, class_name, None)
        if cls is None:  # an older torch without it
            continue
        names[f"torch.nn.{class_name}"] = cls
        names[f"{cls.__module__}.{class_name}"] = cls
    for module_name, classes in _DNA_CLASSES.items():
        module = _import_dna(module_name)
        for class_name in classes:
            names[f"{module_name}.{class_name}"] = getattr(module, class_name)
    return names


def resolve(name: Any, what: str, *, architecture: bool = False) -> type:
    """The allow-listed class ``name`` stands for; ModelError naming it otherwise."""
    if not isinstance(name, str):
        raise ModelError(f"{what}: expected a dotted class name, got {name!r}")
    table = allowed_names()
    cls = table.get(name)
    if cls is None and architecture and name.startswith("dynamic_network_architectures."):
        # nnU-Net looks a moved architecture class up by its last name (old plans say
        # ...architectures.residual_unet.ResidualEncoderUNet): the same, within the allow-list.
        short = name.rsplit(".", 1)[-1]
        if short in _ARCHITECTURES:
            cls = table[f"dynamic_network_architectures.architectures.unet.{short}"]
    if cls is None or (architecture and cls.__name__ not in _ARCHITECTURES):
        one, many = ("network class", "network classes") if architecture else ("layer", "layers")
        allowed = (
            sorted(_ARCHITECTURES) if architecture else sorted({c.__name__ for c in table.values()})
        )
        raise ModelError(
            f"{what}: {name!r} is not an allowed {one} (refused: resolving arbitrary names from "
            f"plans.json could run code); allowed {many}: {', '.join(allowed)}"
        )
    return cls


def build_network(
    architecture: dict[str, Any], input_channels: int, num_classes: int, source: str
) -> torch.nn.Module:
    """The network, as nnU-Net's get_network_from_plans builds it, in eval mode, no deep supervision."""
    network_class = resolve(
        architecture["network_class_name"], f"{source}: network_class_name", architecture=True
    )
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture["_kw_requires_import"]:
        if key not in kwargs:
            raise ModelError(f"{source}: _kw_requires_import names {key!r}, not in arch_kwargs")
        if kwargs[key] is not None:
            kwargs[key] = resolve(kwargs[key], f"{source}: arch_kwargs.{key}")
    for key in ("input_channels", "num_classes", "deep_supervision"):
        kwargs.pop(key, None)
    try:
        network = network_class(
            input_channels=input_channels,
            num_classes=num_classes,
            deep_supervision=False,
            **kwargs,
        )
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as error:
        raise ModelError(
            f"{source}: {network_class.__name__} cannot be built from its arch_kwargs "
            f"({type(error).__name__}: {error})"
        ) from None
    return network.eval()


def _import_dna(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(
            f"nnU-Net models need dynamic-network-architectures ({error}); install it with "
            f"{_INSTALL_HINT}, or bundle it into the wheelhouse"
        ) from None
