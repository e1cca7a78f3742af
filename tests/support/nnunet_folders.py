"""nnU-Net v2 trained-model folders, written as nnU-Net writes them, with real networks.

The networks are dynamic-network-architectures' own classes (what nnU-Net trains), with seeded
random weights; checkpoints hold what nnU-Net's trainer saves (numpy scalars in the logging,
init_args with a torch.device), so the safe reader meets a real checkpoint's contents.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

LABELS_WITH_IGNORE = {"background": 0, "surface": 1, "ignore": 2}


def plain_architecture(
    features: Sequence[int] = (4, 8), *, dims: int = 3, nonlin: str = "torch.nn.LeakyReLU"
) -> dict[str, Any]:
    stages = len(features)
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": list(features),
            "conv_op": conv,
            "kernel_sizes": [[3] * dims] * stages,
            "strides": [[1] * dims] + [[2] * dims] * (stages - 1),
            "n_conv_per_stage": [1] * stages,
            "n_conv_per_stage_decoder": [1] * (stages - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": nonlin,
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def residual_architecture(
    features: Sequence[int] = (4, 8),
    blocks: Sequence[int] | None = None,
    strides: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """A ResidualEncoderUNet as nnU-Net's ResEnc planners write it (ResEnc M: features
    32..320, blocks 1, 3, 4, 6, 6, 6)."""
    stages = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * stages,
            "strides": [list(s) for s in strides]
            if strides
            else [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
            "n_blocks_per_stage": list(blocks or [1] * stages),
            "n_conv_per_stage_decoder": [1] * (stages - 1),
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


def resenc_m_architecture(patch: int) -> dict[str, Any]:
    """nnU-Net's ResEnc M preset for a cubic patch (stages while the feature map is >= 4)."""
    stages = 1
    while patch // 2**stages >= 4 and stages < 6:
        stages += 1
    features = [min(32 * 2**i, 320) for i in range(stages)]
    return residual_architecture(features, [1, 3, 4, 6, 6, 6][:stages])


def make_plans(
    architecture: dict[str, Any] | None = None,
    *,
    patch: Sequence[int] = (16, 16, 16),
    normalization: str = "ZScoreNormalization",
    use_mask_for_norm: bool = False,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    transpose_forward: Sequence[int] = (0, 1, 2),
    configuration: str = "3d_fullres",
    intensity: dict[str, float] | None = None,
) -> dict[str, Any]:
    """plans.json for one configuration (plus a 2d one, as nnU-Net writes both)."""
    architecture = copy.deepcopy(architecture or plain_architecture())
    config: dict[str, Any] = {
        "data_identifier": f"nnUNetPlans_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch),
        "median_image_size_in_voxels": [64, 64, 64],
        "spacing": list(spacing),
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [use_mask_for_norm],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False,
            "order": 3,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_seg_kwargs": {
            "is_seg": True,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "batch_dice": False,
    }
    config["architecture"] = architecture
    backward = [int(i) for i in np.argsort(transpose_forward)]
    return {
        "dataset_name": "Dataset901_Synthetic",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "Tiff3DIO",
        "transpose_forward": list(transpose_forward),
        "transpose_backward": backward,
        "configurations": {
            "2d": {**config, "patch_size": list(patch[1:]), "spacing": list(spacing[1:])},
            configuration: config,
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": intensity
            or {
                "max": 255.0,
                "mean": 120.0,
                "median": 118.0,
                "min": 0.0,
                "percentile_00_5": 20.0,
                "percentile_99_5": 230.0,
                "std": 40.0,
            }
        },
    }


def make_dataset(
    labels: dict[str, Any] | None = None,
    *,
    channel: str = "papyrus",
    regions_class_order: Sequence[int] | None = None,
) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "channel_names": {"0": channel},
        "labels": labels or dict(LABELS_WITH_IGNORE),
        "numTraining": 4,
        "file_ending": ".tif",
        "overwrite_image_reader_writer": "Tiff3DIO",
    }
    if regions_class_order is not None:
        dataset["regions_class_order"] = list(regions_class_order)
    return dataset


def heads_of(dataset: dict[str, Any]) -> int:
    labels = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
    if any(isinstance(v, list) and len(v) > 1 for v in labels.values()):
        return len(dataset["regions_class_order"])
    return len(labels)


def build_network(plans: dict[str, Any], dataset: dict[str, Any], configuration: str, seed: int):
    """The network, built directly with dynamic-network-architectures (not through our code)."""
    import pydoc

    configurations = plans["configurations"]
    config = configurations[configuration]
    while "inherits_from" in config:
        config = {
            **configurations[config["inherits_from"]],
            **{k: v for k, v in config.items() if k != "inherits_from"},
        }
    architecture = config["architecture"]
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls = pydoc.locate(architecture["network_class_name"])
    torch.manual_seed(seed)
    network = cls(input_channels=1, num_classes=heads_of(dataset), deep_supervision=False, **kwargs)
    # Non-trivial norm affines, so that a wrong weight mapping cannot go unnoticed.
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return network.eval()


def write_trained_model_folder(
    root: Path,
    plans: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    *,
    configuration: str = "3d_fullres",
    trainer: str = "nnUNetTrainer",
    folds: Sequence[int | str] = (0,),
    mirror_axes: Sequence[int] | None = (0, 1, 2),
    seed: int = 0,
    checkpoint: str = "checkpoint_final.pth",
    old_style: bool = False,
) -> tuple[Path, list[torch.nn.Module]]:
    """``root/<trainer>__nnUNetPlans__<configuration>/`` and the fold networks, in fold order.

    ``old_style`` writes plans.json as nnU-Net did before the 'architecture' block existed (the
    networks are built from the plans given, which must be new-style).
    """
    plans = plans or make_plans()
    dataset = dataset or make_dataset()
    folder = root / f"{trainer}__{plans['plans_name']}__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    written = to_old_style(plans) if old_style else plans
    (folder / "plans.json").write_text(json.dumps(written, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "dataset_fingerprint.json").write_text("{}")
    networks = []
    for index, fold in enumerate(folds):
        network = build_network(plans, dataset, configuration, seed + index)
        networks.append(network)
        fold_dir = folder / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        torch.save(
            _checkpoint(network, plans, dataset, configuration, fold, trainer, mirror_axes),
            fold_dir / checkpoint,
        )
    return folder, networks


def _checkpoint(network, plans, dataset, configuration, fold, trainer, mirror_axes) -> dict:
    """What nnUNetTrainer.save_checkpoint writes."""
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": np.float64(0.01), "params": []}]},
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float64(0.41)],
            "ema_fg_dice": [np.float64(0.41)],
            "dice_per_class_or_region": [[np.float64(0.41)]],
            "train_losses": [np.float32(-0.2)],
            "val_losses": [np.float32(-0.1)],
            "lrs": [0.01],
            "epoch_start_timestamps": [1.0],
            "epoch_end_timestamps": [2.0],
        },
        "_best_ema": np.float64(0.41),
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": configuration,
            "fold": fold,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes is not None else None,
    }


def to_old_style(plans: dict[str, Any]) -> dict[str, Any]:
    """The plans as nnU-Net wrote them before the 'architecture' block (UNet_class_name, ...)."""
    plans = copy.deepcopy(plans)
    for config in plans["configurations"].values():
        architecture = config.pop("architecture", None)
        if architecture is None:
            continue
        kwargs = architecture["arch_kwargs"]
        config.update(
            {
                "UNet_class_name": architecture["network_class_name"].rsplit(".", 1)[-1],
                "UNet_base_num_features": kwargs["features_per_stage"][0],
                "unet_max_num_features": kwargs["features_per_stage"][-1],
                "n_conv_per_stage_encoder": kwargs.get("n_conv_per_stage")
                or kwargs["n_blocks_per_stage"],
                "n_conv_per_stage_decoder": kwargs["n_conv_per_stage_decoder"],
                "conv_kernel_sizes": kwargs["kernel_sizes"],
                "pool_op_kernel_sizes": kwargs["strides"],
                "num_pool_per_axis": [kwargs["n_stages"] - 1] * len(kwargs["kernel_sizes"][0]),
            }
        )
    return plans
