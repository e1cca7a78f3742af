"""What ``plans.json`` and ``dataset.json`` say about running one configuration.

Read as nnU-Net v2 reads them (``PlansManager``, ``ConfigurationManager``, ``LabelManager``):
``inherits_from`` chains resolved, old-style plans (``UNet_class_name``, ...) converted to the
``architecture`` block for the two classes nnU-Net converts, labels turned into segmentation heads
(``ignore`` has none; region-based when a label is a list of several values). Everything is
checked here, so a malformed file fails at load time with its name, never in the middle of a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contract.errors import ModelError
from runtime.contract.values import Values
from runtime.inference.nnunet.resampling import ResamplingRule

__all__ = ["Configuration", "Labels", "read_configuration", "read_labels"]

# Old plans name only the class; nnU-Net's conversion knows these two.
_OLD_PLANS_CLASSES = {
    "PlainConvUNet": (
        "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "n_conv_per_stage",
    ),
    "ResidualEncoderUNet": (
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "n_blocks_per_stage",
    ),
}


@dataclass(frozen=True)
class Configuration:
    """One resolved configuration of plans.json, with what inference needs from the plans."""

    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]  # in the transposed axis order
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    architecture: dict[str, Any]  # network_class_name, arch_kwargs, _kw_requires_import
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    intensity_properties: dict[str, dict[str, float]]  # channel "0" -> mean, std, percentiles
    previous_stage: str | None  # a cascade's second stage needs the first one's segmentation
    # How volumes go to ``spacing`` and the logits come back (nnU-Net's defaults: orders 3 and 1).
    data_resampling: ResamplingRule
    probability_resampling: ResamplingRule


@dataclass(frozen=True)
class Labels:
    """Segmentation heads and the foreground to report."""

    heads: int
    region_based: bool
    foreground_head: int  # index into the network's output channels
    foreground_label: int  # the label value in dataset.json (region-based: its class value)
    foreground_name: str
    ignore_label: int | None
    input_channels: int
    channel_names: tuple[str, ...]


def read_configuration(plans: dict[str, Any], name: str, source: Path) -> Configuration:
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise ModelError(f"{source}: no 'configurations' block")
    if name not in configurations:
        raise ModelError(
            f"{source}: no configuration {name!r} (it has {', '.join(map(repr, configurations))})"
        )
    config = _resolved(configurations, name, source)
    where = f"{source} configuration {name!r}"
    patch = _int_list(config.get("patch_size"), f"{where}: patch_size")
    if len(patch) != 3:
        raise ModelError(
            f"{where} is a {len(patch)}D configuration (patch {patch}); volumes run with 3D "
            "windows: use a 3d configuration (3d_fullres)"
        )
    spacing = _float_list(config.get("spacing"), f"{where}: spacing", len(patch))
    schemes = config.get("normalization_schemes")
    if not isinstance(schemes, list) or not all(isinstance(s, str) for s in schemes) or not schemes:
        raise ModelError(f"{where}: normalization_schemes must be a list of names, got {schemes!r}")
    masks = config.get("use_mask_for_norm", [False] * len(schemes))
    if (
        not isinstance(masks, list)
        or len(masks) != len(schemes)
        or not all(isinstance(m, bool) for m in masks)
    ):
        raise ModelError(
            f"{where}: use_mask_for_norm must be one true/false per channel, got {masks!r}"
        )
    transpose_forward = _permutation(
        plans.get("transpose_forward", [0, 1, 2]), source, "transpose_forward"
    )
    transpose_backward = _permutation(
        plans.get("transpose_backward", [0, 1, 2]), source, "transpose_backward"
    )
    if tuple(transpose_forward[axis] for axis in transpose_backward) != (0, 1, 2):
        raise ModelError(f"{source}: transpose_backward does not undo transpose_forward")
    return Configuration(
        name=name,
        patch_size=tuple(patch),
        spacing=tuple(spacing),
        normalization_schemes=tuple(schemes),
        use_mask_for_norm=tuple(masks),
        architecture=_architecture(config, where),
        transpose_forward=tuple(transpose_forward),
        transpose_backward=tuple(transpose_backward),
        intensity_properties=_intensity_properties(plans, source),
        previous_stage=config.get("previous_stage"),
        data_resampling=ResamplingRule.from_plans(
            config, "resampling_fn_data", where, default_order=3
        ),
        probability_resampling=ResamplingRule.from_plans(
            config, "resampling_fn_probabilities", where, default_order=1
        ),
    )


def read_labels(dataset: dict[str, Any], foreground_class: int | None, source: Path) -> Labels:
    """Heads as nnU-Net's LabelManager counts them, and the foreground head."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or "background" not in labels:
        raise ModelError(f"{source}: 'labels' must map names to values, with 'background': 0")
    if labels["background"] != 0:
        raise ModelError(f"{source}: the background label must be 0, got {labels['background']!r}")
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise ModelError(f"{source}: no 'channel_names' block")
    ignore = labels.get("ignore")
    if ignore is not None and (not isinstance(ignore, int) or isinstance(ignore, bool)):
        raise ModelError(f"{source}: the ignore label must be an integer, got {ignore!r}")
    named = {k: v for k, v in labels.items() if k != "ignore"}
    for key, value in named.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ModelError(
                f"{source}: label {key!r} must be an integer or a list of them, got {value!r}"
            )
    region_based = any(isinstance(v, list) and len(v) > 1 for v in named.values())
    common: dict[str, Any] = {
        "ignore_label": ignore,
        "input_channels": len(channels),
        "channel_names": tuple(str(channels[k]) for k in sorted(channels, key=str)),
    }
    if region_based:
        return _region_labels(dataset, named, foreground_class, source, common)
    values = sorted(
        {v for value in named.values() for v in (value if isinstance(value, list) else [value])}
    )
    if ignore is not None and ignore != max(values) + 1:
        raise ModelError(
            f"{source}: the ignore label ({ignore}) must be the highest label plus one"
        )
    names = {v if not isinstance(v, list) else v[0]: k for k, v in named.items()}
    if foreground_class is None:
        choices = [v for v in values if v != 0]
        if not choices:
            raise ModelError(f"{source}: no label besides background")
        foreground = choices[0]
    else:
        foreground = foreground_class
        if foreground not in values or foreground == 0:
            listed = ", ".join(f"{v} {names.get(v, '?')}" for v in values if v != 0)
            raise ModelError(
                f"--foreground-class {foreground}: not a foreground label of {source} "
                f"(labels: {listed})"
            )
    return Labels(
        heads=len(values),
        region_based=False,
        foreground_head=values.index(foreground),
        foreground_label=foreground,
        foreground_name=names.get(foreground, str(foreground)),
        **common,
    )


def total_strides(configuration: Configuration) -> tuple[int, ...]:
    """The network's total downsampling per axis: windows must be multiples of it."""
    strides = configuration.architecture["arch_kwargs"].get("strides")
    if not isinstance(strides, list):
        return (1,) * len(configuration.patch_size)
    totals = [1] * len(configuration.patch_size)
    for stride in strides:
        per_axis = stride if isinstance(stride, list) else [stride] * len(totals)
        for axis, value in enumerate(per_axis[: len(totals)]):
            if isinstance(value, int) and value > 0:
                totals[axis] *= value
    return tuple(totals)


def size_multiple(configuration: Configuration) -> int:
    return math.lcm(*total_strides(configuration))


# --- helpers ------------------------------------------------------------------------------------
def _resolved(configurations: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    chain = [name]
    config = configurations[name]
    if not isinstance(config, dict):
        raise ModelError(f"{source}: configuration {name!r} is not an object")
    merged = dict(config)
    while "inherits_from" in config:
        parent = config["inherits_from"]
        if not isinstance(parent, str):  # a list here was an unhashable-type traceback
            Values(source, ModelError).fail(
                f"configuration {chain[-1]!r} inherits_from",
                f"must name a configuration, not {parent!r}",
            )
        if parent in chain:
            raise ModelError(
                f"{source}: configurations inherit in a circle: {' -> '.join([*chain, parent])}"
            )
        if parent not in configurations or not isinstance(configurations[parent], dict):
            raise ModelError(
                f"{source}: configuration {chain[-1]!r} inherits from {parent!r}, which is not there"
            )
        chain.append(parent)
        config = configurations[parent]
        # The child's keys win over its parent's, at every level.
        merged = {**config, **merged}
    merged.pop("inherits_from", None)
    return merged


def _architecture(config: dict[str, Any], where: str) -> dict[str, Any]:
    architecture = _architecture_block(config, where)
    _check_arch_kwargs(architecture["arch_kwargs"], where)
    return architecture


def _check_arch_kwargs(kwargs: dict[str, Any], where: str) -> None:
    """The numbers that size the network: whole and positive, one per stage, before a build."""
    values = Values(where, ModelError)
    stages = values.whole(kwargs.get("n_stages"), "arch_kwargs.n_stages", minimum=1, maximum=64)
    features = kwargs.get("features_per_stage")
    if isinstance(features, int) and not isinstance(features, bool):
        features = [features] * stages
    values.wholes(features, "arch_kwargs.features_per_stage", minimum=1, length=stages)
    for key in ("n_conv_per_stage", "n_blocks_per_stage", "n_conv_per_stage_decoder"):
        if key in kwargs:
            given = kwargs[key]
            if isinstance(given, list):
                values.wholes(given, f"arch_kwargs.{key}", minimum=1)
            else:
                values.whole(given, f"arch_kwargs.{key}", minimum=1)
    for key in ("kernel_sizes", "strides"):
        if key in kwargs:
            for index, entry in enumerate(values.listing(kwargs[key], f"arch_kwargs.{key}")):
                field = f"arch_kwargs.{key}[{index}]"
                if isinstance(entry, list):
                    values.wholes(entry, field, minimum=1)
                else:
                    values.whole(entry, field, minimum=1)


def _architecture_block(config: dict[str, Any], where: str) -> dict[str, Any]:
    block = config.get("architecture")
    if block is None:
        return _architecture_from_old_plans(config, where)
    if not isinstance(block, dict):
        raise ModelError(f"{where}: 'architecture' must be an object")
    name = block.get("network_class_name")
    kwargs = block.get("arch_kwargs")
    imports = block.get("_kw_requires_import", [])
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ModelError(f"{where}: 'architecture' needs network_class_name and arch_kwargs")
    if not isinstance(imports, list) or not all(isinstance(k, str) for k in imports):
        raise ModelError(f"{where}: _kw_requires_import must be a list of argument names")
    return {
        "network_class_name": name,
        "arch_kwargs": dict(kwargs),
        "_kw_requires_import": list(imports),
    }


def _architecture_from_old_plans(config: dict[str, Any], where: str) -> dict[str, Any]:
    """nnU-Net's own conversion of plans written before the 'architecture' block existed."""
    class_name = config.get("UNet_class_name")
    if class_name not in _OLD_PLANS_CLASSES:
        raise ModelError(
            f"{where}: old-style plans with UNet_class_name {class_name!r}; only PlainConvUNet and "
            "ResidualEncoderUNet can be converted (as nnU-Net does); re-plan with nnU-Net v2"
        )
    required = (
        "n_conv_per_stage_encoder",
        "n_conv_per_stage_decoder",
        "UNet_base_num_features",
        "unet_max_num_features",
        "conv_kernel_sizes",
        "pool_op_kernel_sizes",
    )
    missing = [key for key in required if key not in config]
    if missing:
        raise ModelError(f"{where}: old-style plans without {', '.join(missing)}")
    network_class, blocks_key = _OLD_PLANS_CLASSES[class_name]
    stages = len(config["n_conv_per_stage_encoder"])
    base, most = config["UNet_base_num_features"], config["unet_max_num_features"]
    return {
        "network_class_name": network_class,
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [min(base * 2**i, most) for i in range(stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"],
            blocks_key: config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _region_labels(
    dataset: dict[str, Any],
    named: dict[str, Any],
    foreground_class: int | None,
    source: Path,
    common: dict[str, Any],
) -> Labels:
    order = dataset.get("regions_class_order")
    regions = [
        (key, value)
        for key, value in named.items()
        if not (value == 0 or (isinstance(value, list) and set(value) == {0}))
    ]
    if isinstance(order, list):
        Values(source, ModelError).wholes(order, "regions_class_order", minimum=1)
    if not isinstance(order, list) or len(order) != len(regions):
        raise ModelError(
            f"{source}: region-based labels need 'regions_class_order' with one value per "
            f"region ({len(regions)}), got {order!r}"
        )
    if foreground_class is None:
        head = 0
    elif foreground_class in order:
        head = order.index(foreground_class)
    else:
        raise ModelError(
            f"--foreground-class {foreground_class}: not in regions_class_order {order} of {source}"
        )
    return Labels(
        heads=len(regions),
        region_based=True,
        foreground_head=head,
        foreground_label=int(order[head]),
        foreground_name=regions[head][0],
        **common,
    )


def _intensity_properties(plans: dict[str, Any], source: Path) -> dict[str, dict[str, float]]:
    block = plans.get(
        "foreground_intensity_properties_per_channel",
        plans.get("foreground_intensity_properties_by_modality", {}),
    )
    if not isinstance(block, dict):
        raise ModelError(f"{source}: foreground_intensity_properties_per_channel must be an object")
    values = Values(source, ModelError)
    for channel, properties in block.items():
        where = f"foreground_intensity_properties_per_channel.{channel}"
        for key, value in values.mapping(properties, where).items():
            values.number(value, f"{where}.{key}")  # normalization statistics: finite numbers
    return block


def _int_list(value: Any, what: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ModelError(f"{what} must be a list of positive integers, got {value!r}")
    return value


def _float_list(value: Any, what: str, length: int) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in value
        )
    ):
        raise ModelError(f"{what} must be {length} positive numbers, got {value!r}")
    return [float(v) for v in value]


def _permutation(value: Any, source: Path, key: str) -> list[int]:
    if not isinstance(value, list) or sorted(value) != [0, 1, 2]:
        raise ModelError(f"{source}: {key} must be a permutation of 0, 1, 2, got {value!r}")
    return value
