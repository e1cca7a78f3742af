"""nnU-Net's own predictor (nnunetv2's ``nnUNetPredictor``) on a trained-model folder, as the
reference for the opt-in agreement test and bench/bench_nnunet.py. Needs nnunetv2 installed.

Two things a user of nnunetv2 would otherwise trip over are handled here:

* a trainer class nnunetv2 cannot find (a custom one, such as the organizers'): the network is
  then built with ``nnUNetTrainer.build_network_architecture``, which custom trainers inherit
  (nnunetv2's own search for it imports every trainer module, and fails without timm);
* ``fp32_sums``: nnU-Net keeps its blended logits and weight sums in fp16 on every device (CPU
  included). For an exact comparison those two buffers can be made fp32, nothing else changed:
  ``torch.half`` is swapped for ``torch.float32`` in the predictor module's view of torch only
  (its Gaussian map stays fp16, as nnU-Net computes it).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch


def nnunet_predictor(
    folder: Path,
    folds: Sequence[int | str],
    *,
    mirroring: bool,
    device: str = "cpu",
    checkpoint: str = "checkpoint_final.pth",
):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        device=torch.device(device),
        verbose=False,
        allow_tqdm=False,
    )
    trainer_name = torch.load(
        folder / f"fold_{folds[0]}" / checkpoint, map_location="cpu", weights_only=False
    )["trainer_name"]
    import nnunetv2

    try:
        findable = recursive_find_python_class(
            str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"),
            trainer_name,
            "nnunetv2.training.nnUNetTrainer",
        )
    except ImportError:
        # Searching for a trainer it does not ship imports every trainer module, the Primus ones
        # too, which need timm: nnU-Net's own loader fails there without timm installed.
        findable = None
    if findable is not None:
        with contextlib.redirect_stdout(None):
            predictor.initialize_from_trained_model_folder(str(folder), folds, checkpoint)
        return predictor
    _initialize_manually(predictor, folder, folds, checkpoint)
    return predictor


def _initialize_manually(predictor, folder: Path, folds, checkpoint: str) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = load_json(str(folder / "dataset.json"))
    plans = PlansManager(load_json(str(folder / "plans.json")))
    checkpoints = [
        torch.load(folder / f"fold_{f}" / checkpoint, map_location="cpu", weights_only=False)
        for f in folds
    ]
    configuration = plans.get_configuration(checkpoints[0]["init_args"]["configuration"])
    heads = plans.get_label_manager(dataset).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(
        plans,
        configuration,
        determine_num_input_channels(plans, configuration, dataset),
        heads,
        enable_deep_supervision=False,
    )
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(
        network,
        plans,
        configuration,
        parameters,
        dataset,
        checkpoints[0]["trainer_name"],
        checkpoints[0].get("inference_allowed_mirroring_axes"),
    )


@contextlib.contextmanager
def fp32_sums() -> Iterator[None]:
    from nnunetv2.inference import predict_from_raw_data as module

    real = module.torch
    view = types.SimpleNamespace(
        **{name: getattr(real, name) for name in dir(real) if not name.startswith("__")}
    )
    view.half = torch.float32
    module.torch = view
    try:
        yield
    finally:
        module.torch = real


def nnunet_probabilities(predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segmentation, per-head probabilities) for a (Z, Y, X) volume of spacing 1."""
    with contextlib.redirect_stdout(None):
        segmentation, probabilities = predictor.predict_single_npy_array(
            image[None].astype(np.float32), {"spacing": [1.0, 1.0, 1.0]}, None, None, True
        )
    return segmentation, probabilities
