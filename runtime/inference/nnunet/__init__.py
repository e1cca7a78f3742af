"""nnU-Net v2 trained-model folders, run without nnunetv2.

``load_nnunet_model(folder)`` reads ``dataset.json`` and ``plans.json``, builds the configuration's
network with dynamic-network-architectures (dotted names through an allow-list), reads each fold's
checkpoint without arbitrary unpickling and returns an :class:`NNUNetModel`: nnU-Net's
preprocessing, its Gaussian blending and zero padding, folds averaged as nnU-Net averages them,
the foreground probability of the first foreground label (or ``foreground_class``).

Modules: ``folder`` (discovery, folds), ``plans`` (configurations, labels), ``network`` (the
allow-list, building), ``checkpoint`` (the safe reader), ``preprocessing``, ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from runtime.contract.errors import ModelError
from runtime.contract.settings import Checkpoint as CheckpointChoice
from runtime.inference.checked_build import build_matching
from runtime.inference.checkpoints import read_json
from runtime.inference.nnunet.checkpoint import Checkpoint, read_checkpoint
from runtime.inference.nnunet.folder import (
    CHECKPOINTS,
    TrainedModelFolder,
    find_trained_model_folder,
    open_trained_model_folder,
    refuse_a_part,
)
from runtime.inference.nnunet.model import FoldAverage, NNUNetModel
from runtime.inference.nnunet.network import build_network
from runtime.inference.nnunet.plans import Labels, read_configuration, read_labels, size_multiple
from runtime.inference.nnunet.preprocessing import Preprocessing

__all__ = [
    "CHECKPOINTS",
    "NNUNetModel",
    "TrainedModelFolder",
    "find_trained_model_folder",
    "load_nnunet_model",
    "open_trained_model_folder",
    "refuse_a_part",
]


def load_nnunet_model(
    path: Path | str,
    *,
    folds: Sequence[int | str] | None = None,
    checkpoint: CheckpointChoice | str = CheckpointChoice.FINAL,
    spacing: Sequence[float] | None = None,
    foreground_class: int | None = None,
) -> NNUNetModel:
    """Load a trained-model folder (see the module docstring); ModelError names what is wrong."""
    folder = open_trained_model_folder(Path(path), folds=folds, checkpoint=checkpoint)
    dataset = read_json(folder.path / "dataset.json")
    plans_path = folder.path / "plans.json"
    plans = read_json(plans_path)
    checkpoints = {fold: read_checkpoint(file) for fold, file in folder.checkpoints.items()}
    first = next(iter(checkpoints.values()))
    configuration_name = folder.configuration or first.configuration
    if configuration_name is None:
        raise ModelError(
            f"{folder.path}: neither the folder name (Trainer__Plans__configuration) nor the "
            "checkpoint says which configuration of plans.json it was trained with"
        )
    configuration = read_configuration(plans, configuration_name, plans_path)
    labels = read_labels(dataset, foreground_class, folder.path / "dataset.json")
    _check_inputs(folder, configuration.previous_stage, labels.input_channels, labels.channel_names)
    preprocessing = Preprocessing.from_configuration(
        configuration,
        spacing,
        str(folder.path),
        heads=labels.heads,
        region_based=labels.region_based,
    )
    networks = []
    for fold, state in checkpoints.items():
        # plans.json's widths meet the checkpoint's shapes on the meta device first
        network = _load_weights(
            lambda: build_network(
                configuration.architecture, labels.input_channels, labels.heads, str(plans_path)
            ),
            state,
            folder,
            fold,
            configuration_name,
        )
        networks.append(network)
    mirror_axes = _mirror_axes(checkpoints)
    name = folder.path.name
    if name.startswith("fold_") or not folder.trainer:
        name = configuration_name
    return NNUNetModel(
        FoldAverage(networks).eval(),
        name=name,
        labels=labels,
        preprocessing=preprocessing,
        patch_size=configuration.patch_size,
        size_multiple=size_multiple(configuration),
        mirror_axes=mirror_axes,
        summary=_summary(folder, configuration_name, first, labels, mirror_axes, checkpoint),
    )


def _check_inputs(
    folder: TrainedModelFolder,
    previous_stage: str | None,
    channels: int,
    names: tuple[str, ...],
) -> None:
    if previous_stage:
        raise ModelError(
            f"{folder.path}: a cascade stage (it needs the segmentation of {previous_stage!r} as "
            "input); cascades are not supported, use a 3d_fullres model"
        )
    if channels != 1:
        raise ModelError(
            f"{folder.path}: the model takes {channels} input channels ({', '.join(names)}); "
            "volumes have one"
        )


def _load_weights(
    build: Callable[[], torch.nn.Module],
    state: Checkpoint,
    folder: TrainedModelFolder,
    fold: str,
    configuration: str,
) -> torch.nn.Module:
    trainer = state.trainer_name or folder.trainer or "its trainer"
    return build_matching(
        build,
        state.weights,
        folder.checkpoints[fold],
        described_by=f"the network plans.json describes for {configuration!r}",
        hint=f"; {trainer} may build its own network",
    )


def _mirror_axes(checkpoints: dict[str, Checkpoint]) -> tuple[int, ...] | None:
    # nnU-Net takes the first fold's; folds of one training share them.
    return next(iter(checkpoints.values())).mirroring_axes


def _summary(
    folder: TrainedModelFolder,
    configuration: str,
    first: Checkpoint,
    labels: Labels,
    mirror_axes: tuple[int, ...] | None,
    checkpoint: str,
) -> str:
    trainer = first.trainer_name or folder.trainer or "?"
    kind = (
        f"sigmoid of region {labels.foreground_name!r} ({labels.heads} regions)"
        if labels.region_based
        else f"softmax of label {labels.foreground_label} {labels.foreground_name!r} ({labels.heads} heads)"
    )
    mirror = f"mirror axes {mirror_axes}" if mirror_axes else "no mirroring"
    folds = ", ".join(folder.folds)
    skipped = f" ({'; '.join(folder.skipped)})" if folder.skipped else ""
    return (
        f"nnU-Net {trainer} / {configuration}, folds {folds}{skipped}, checkpoint {checkpoint}, "
        f"{kind}, {mirror}"
    )
