"""The ``--model`` dispatcher: a path in, a :class:`SegmentationModel` out, by what the path holds.

Three kinds of paths are accepted (``"demo"`` is resolved above this layer, by
:mod:`runtime.pipeline.models`):

* a model folder (or its ``config.json``, format ``kaggle-offline-unet``) describing the built-in
  U-Net family plus a plain ``state_dict``; the config may instead name a ``"program"``
  (TorchScript or ``.pt2``) to give it a normalization and foreground class;
* a TorchScript archive or a ``torch.export`` program (``.pt2``), read by
  :mod:`runtime.inference.checkpoints` without running anything from the file;
* an nnU-Net v2 trained-model folder (see :mod:`runtime.inference.nnunet`), which brings its own
  preprocessing and nnU-Net's blending.

Whatever the network outputs, :meth:`SegmentationModel.foreground_logits` returns one foreground
log-odds channel; C-class logits become ``logit_k - logsumexp(other logits)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.contract.errors import ModelError
from runtime.contract.settings import Checkpoint, ModelFormat
from runtime.inference.checkpoints import (
    load_program,
    load_state_dict,
    read_json,
    read_state_dict,
)
from runtime.inference.segmentation_model import SegmentationModel

__all__ = ["load_model"]

_CONFIG_NAME = "config.json"
_CONFIG_KEYS = {
    "format",
    "format_version",
    "name",
    "description",
    "architecture",
    "weights",
    "program",
    "normalization",
    "foreground_class",
    "inference",
}
_PROGRAM_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".torchscript")


def load_model(
    spec: str | Path,
    *,
    foreground_class: int | None = None,
    folds: Sequence[int | str] | None = None,
    checkpoint: Checkpoint | str = Checkpoint.FINAL,
    spacing: Sequence[float] | None = None,
) -> SegmentationModel:
    """Load a model folder or its config.json, a TorchScript file, a ``.pt2``, or an
    nnU-Net v2 trained-model folder (or a folder holding exactly one, such as a Kaggle mount).

    ``foreground_class`` picks the foreground among C-class logits and overrides the config's
    (for nnU-Net: a label value of dataset.json). ``folds`` (``0``, ``1``, ..., ``"all"`` for
    fold_all; None: every numbered fold with the checkpoint), ``checkpoint`` (``"final"`` or
    ``"best"``) and ``spacing`` (of the input volumes, Z, Y, X; None: 1, 1, 1) concern nnU-Net
    folders only. Raises ModelError naming the file and what is wrong.
    """
    path = Path(spec)
    if path.is_dir():
        config = path / _CONFIG_NAME
        if config.is_file():
            return _load_config(config, foreground_class, name=path.name)
        from runtime.inference import nnunet

        found = nnunet.find_trained_model_folder(path)
        if found is not None:
            return nnunet.load_nnunet_model(
                found,
                folds=folds,
                checkpoint=checkpoint,
                spacing=spacing,
                foreground_class=foreground_class,
            )
        return _load_program_in_folder(path, foreground_class)
    if not path.exists():
        raise ModelError(
            f"model {str(spec)!r} not found: give 'demo', a model folder with config.json, "
            "a config.json, a TorchScript file or a torch.export .pt2 file"
        )
    if path.suffix == ".json":
        return _load_config(path, foreground_class, name=path.parent.name or path.stem)
    if path.suffix == ".pth":
        from runtime.inference import nnunet

        nnunet.refuse_a_part(path)
    network, static, mover = load_program(path)
    return SegmentationModel(
        network,
        name=path.stem,
        format=ModelFormat.PROGRAM,
        foreground_class=foreground_class,
        static_input_shape=static,
        recommended=_static_recommendation(static),
        mover=mover,
    )


# --- the config format ---------------------------------------------------------------------
def _load_config(path: Path, foreground_class: int | None, *, name: str) -> SegmentationModel:
    data = read_json(path)
    from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig

    if data.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: 'format' must be {MODEL_FORMAT!r}, got {data.get('format')!r}")
    if data.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelError(
            f"{path}: format_version {data.get('format_version')!r} is not supported "
            f"(this runtime reads {MODEL_FORMAT_VERSION}); upgrade kaggle-offline"
        )
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise ModelError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(_CONFIG_KEYS))}"
        )
    normalization = _normalization(data.get("normalization"), path)
    recommended = _inference_block(data.get("inference"), path)
    fg = foreground_class if foreground_class is not None else data.get("foreground_class")
    if fg is not None and (not isinstance(fg, int) or isinstance(fg, bool) or fg < 0):
        raise ModelError(f"{path}: foreground_class must be a non-negative integer, got {fg!r}")
    display = str(data.get("name") or name)

    has_program = "program" in data
    if has_program == ("architecture" in data):
        raise ModelError(
            f"{path}: give either 'architecture' + 'weights' (U-Net family) or 'program' "
            "(a TorchScript or .pt2 file), not both or neither"
        )
    if has_program:
        program = _relative_file(path, data["program"], "program")
        network, static, mover = load_program(program)
        return SegmentationModel(
            network,
            name=display,
            normalization=normalization,
            recommended={**_static_recommendation(static), **recommended},
            foreground_class=fg,
            static_input_shape=static,
            mover=mover,
            format=ModelFormat.CONFIG,
        )

    config = UNetConfig.from_dict(data["architecture"], source=str(path))
    if config.in_channels != 1:
        raise ModelError(f"{path}: in_channels is {config.in_channels}; volumes have 1 channel")
    _check_foreground_class(fg, config.out_channels, path)
    weights_path = _relative_file(path, data.get("weights"), "weights")
    network = UNet3D(config)
    load_state_dict(network, read_state_dict(weights_path), weights_path)
    network.eval()
    return SegmentationModel(
        network,
        name=display,
        normalization=normalization,
        size_multiple=config.size_multiple,
        recommended=recommended,
        foreground_class=fg,
        format=ModelFormat.CONFIG,
    )


def _normalization(block: Any, path: Path) -> tuple[float, float]:
    if block is None:
        return (0.0, 1.0)
    if not isinstance(block, dict) or set(block) != {"mean", "std"}:
        raise ModelError(
            f'{path}: \'normalization\' must be {{"mean": M, "std": S}}, got {block!r}'
        )
    mean, std = block["mean"], block["std"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (mean, std)):
        raise ModelError(f"{path}: normalization mean and std must be numbers, got {block!r}")
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ModelError(f"{path}: normalization std must be a positive finite number, got {std!r}")
    return (float(mean), float(std))


def _inference_block(block: Any, path: Path) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ModelError(f"{path}: 'inference' must be a JSON object, got {block!r}")
    patch = block.get("patch_size")
    if patch is not None and not (
        isinstance(patch, list)
        and len(patch) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in patch)
    ):
        raise ModelError(f"{path}: inference.patch_size must be 3 positive integers, got {patch!r}")
    overlap = block.get("overlap")
    if overlap is not None and not (isinstance(overlap, int | float) and 0 <= overlap < 1):
        raise ModelError(f"{path}: inference.overlap must be in [0, 1), got {overlap!r}")
    threshold = block.get("threshold")
    if threshold is not None and not (isinstance(threshold, int | float) and 0 < threshold < 1):
        raise ModelError(f"{path}: inference.threshold must be in (0, 1), got {threshold!r}")
    return dict(block)


def _check_foreground_class(fg: int | None, out_channels: int, path: Path) -> None:
    if out_channels == 1 and fg not in (None, 0):
        raise ModelError(f"{path}: foreground_class {fg} given, but the model has one output")
    if out_channels >= 2 and fg is None:
        raise ModelError(
            f"{path}: the model outputs {out_channels} class logits but no foreground class is "
            'set; add "foreground_class": K to config.json or pass --foreground-class K'
        )
    if fg is not None and out_channels >= 2 and fg >= out_channels:
        raise ModelError(
            f"{path}: foreground_class {fg} is out of range for {out_channels} output classes"
        )


def _relative_file(config: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ModelError(f"{config}: {key!r} must name a file beside config.json, got {value!r}")
    target = config.parent / value
    if not target.is_file():
        raise ModelError(f"{config}: {key} file {value!r} not found in {config.parent}")
    return target


def _load_program_in_folder(folder: Path, foreground_class: int | None) -> SegmentationModel:
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _PROGRAM_SUFFIXES)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "no model file"
        raise ModelError(
            f"{folder}: no config.json, and {found}; add a config.json or point at one file"
        )
    return load_model(candidates[0], foreground_class=foreground_class)


def _static_recommendation(static: tuple[int | None, ...] | None) -> dict[str, Any]:
    if static is None:
        return {}
    recommended: dict[str, Any] = {}
    if all(isinstance(d, int) for d in static[2:]):
        recommended["patch_size"] = list(static[2:])
    if isinstance(static[0], int):
        recommended["batch_size"] = static[0]
    return recommended
