"""Segmentation models the engine can run, loaded without arbitrary unpickling.

Four formats are accepted:

* a model folder (or its ``config.json``, format ``kaggle-offline-unet``) describing the built-in
  U-Net family plus a plain ``state_dict`` read with ``torch.load(weights_only=True)``; the config
  may instead name a ``"program"`` (TorchScript or ``.pt2``) to give it a normalization and
  foreground class;
* a TorchScript archive (``torch.jit.save``);
* a ``torch.export`` program (``torch.export.save``, ``.pt2``), read and run by
  :mod:`runtime.inference.pt2`, which unpickles and evaluates nothing from the file;
* an nnU-Net v2 trained-model folder (see :mod:`runtime.inference.nnunet`), which brings its own
  preprocessing (:meth:`SegmentationModel.prepare_volume`) and nnU-Net's blending.

A checkpoint that pickles Python objects (``torch.save(model)``) is refused: unpickling it can run
any code; so is a ``.pt2`` whose payloads need unpickling. Whatever the network outputs, :meth:`SegmentationModel.foreground_logits` returns one
foreground log-odds channel; C-class logits become ``logit_k - logsumexp(other logits)``.
Several models make an :class:`Ensemble`: each member runs on its own (its patch, normalization and
preprocessing) and the engine fuses their per-volume probabilities or logits.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.contract.errors import ModelError, first_line

__all__ = [
    "ENSEMBLE_MODES",
    "Ensemble",
    "PreparedVolume",
    "SegmentationModel",
    "load_ensemble",
    "load_model",
]

ENSEMBLE_MODES = ("probabilities", "logits")

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
_SAVE_HINT = (
    "save model.state_dict() beside a config.json (format kaggle-offline-unet), or export the "
    "model with torch.jit.script(model).save(path) or torch.export.save(torch.export.export(...))"
)


@dataclass(frozen=True)
class PreparedVolume:
    """A volume as a model's windows see it, and where results go back in the input volume.

    ``data`` is the input itself for most models; a model with its own preprocessing (nnU-Net's:
    transpose, crop to the non-zero box, normalize) returns the transposed crop, and
    :meth:`restore` pastes a result into ``fill`` at the crop and transposes it back.
    """

    data: np.ndarray
    shape: tuple[int, ...]  # the input volume's shape
    crop: tuple[slice, ...] | None = None  # where ``data`` lies in the transposed input
    transpose_forward: tuple[int, ...] | None = None  # input axes in the order ``data`` has them
    # ``data`` was resampled (a model trained at another spacing): this takes a float result
    # (logits) back to the crop's shape. A mask cannot be resampled: the engine then blends logits.
    resample_back: Callable[[np.ndarray], np.ndarray] | None = None

    def restore(self, array: np.ndarray, fill: float) -> np.ndarray:
        """``array`` (the shape of ``data``) in the input's shape and axis order."""
        if self.resample_back is not None:
            if array.dtype.kind != "f":
                raise ValueError("only logits or probabilities can be resampled back")
            array = self.resample_back(array)
        if self.crop is None and self.transpose_forward is None:
            return array
        order = self.transpose_forward or tuple(range(len(self.shape)))
        full = np.full(tuple(self.shape[axis] for axis in order), fill, dtype=array.dtype)
        full[self.crop or ...] = array
        if order == tuple(range(len(order))):
            return full
        return np.ascontiguousarray(full.transpose(np.argsort(order)))


class SegmentationModel:
    """A network plus what the engine needs to run it: normalization, shape rules, defaults.

    ``foreground_logits`` maps a normalized ``(N, 1, Z, Y, X)`` batch to ``(N, window_channels,
    Z, Y, X)`` foreground log-odds: one channel, or one per softmax rival (then the foreground's
    log-odds after blending are ``-logsumexp(-channels)``, see sliding_window).
    ``replicate(device)`` gives an independent copy for another device. Models with their own
    preprocessing override :meth:`prepare_volume`; ``importance`` and ``padding`` say how their
    windows are blended (see :class:`runtime.inference.sliding_window.BlendSettings`).
    """

    window_channels = 1
    importance = "gaussian"
    padding = "reflect"
    # Mirror axes the model was trained for, used by --tta auto (None: none recommended).
    mirror_axes: tuple[int, ...] | None = None

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        name: str,
        normalization: tuple[float, float] = (0.0, 1.0),
        size_multiple: int = 1,
        recommended: Mapping[str, Any] | None = None,
        foreground_class: int | None = None,
        static_input_shape: tuple[int | None, ...] | None = None,
        mover: Callable[[torch.nn.Module, torch.device], torch.nn.Module] | None = None,
    ) -> None:
        self.network = network
        self.name = name
        self.normalization = (float(normalization[0]), float(normalization[1]))
        self.size_multiple = int(size_multiple)
        self.recommended: dict[str, Any] = dict(recommended or {})
        self.foreground_class = foreground_class
        # (N, C, Z, Y, X) of a program exported with static shapes; None entries are dynamic.
        self.static_input_shape = static_input_shape
        self._mover = mover or _move_module
        if self.normalization[1] <= 0 or not all(map(math.isfinite, self.normalization)):
            raise ModelError(
                f"model {name}: normalization std must be a positive number, got {normalization}"
            )

    def __repr__(self) -> str:
        return f"SegmentationModel({self.name!r})"

    def foreground_logits(self, x: torch.Tensor) -> torch.Tensor:
        return _foreground_log_odds(_first_tensor(self.network(x), self.name), self)

    def replicate(self, device: torch.device | str) -> SegmentationModel:
        """An independent copy on ``device``; this model stays where it is."""
        clone = copy.copy(self)
        clone.network = self._mover(self.network, torch.device(device))
        return clone

    def to_channels_last(self, on: bool = True) -> SegmentationModel:
        """Store 5D weights as channels_last_3d (in place), what tensor-core Conv3d prefers;
        ``on=False`` stores them contiguous again."""
        _set_layout(self.network, torch.channels_last_3d if on else torch.contiguous_format)
        return self

    def prepare_volume(self, volume: np.ndarray) -> PreparedVolume:
        """The volume the windows are cut from: the input itself, normalized window by window."""
        return PreparedVolume(volume, tuple(volume.shape))

    def describe_normalization(self) -> tuple[str, str]:
        """(what, why) for the engine's normalization decision."""
        mean, std = self.normalization
        if (mean, std) == (0.0, 1.0):
            # A model whose file carries no config gets raw voxel values: say so, since a model
            # trained on [0, 1] or standardised inputs then gives silently wrong masks.
            return (
                "none",
                "raw voxel values: the model has no config.json normalization; add one if it "
                "was trained on scaled inputs",
            )
        return f"(v - {mean:g}) / {std:g}", f"from model {self.name}"

    def warm_up_batch(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """A normalized batch like the real ones, for the probe's warm-up forwards.

        CT-like noise in the uint8 range, normalized as the windows will be.
        """
        raw = torch.randint(0, 256, shape, generator=generator).float()
        mean, std = self.normalization
        return (raw - mean) / std

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        *,
        name: str = "module",
        normalization: tuple[float, float] = (0.0, 1.0),
        size_multiple: int = 1,
        recommended: Mapping[str, Any] | None = None,
        foreground_class: int | None = None,
    ) -> SegmentationModel:
        """Wrap an in-memory module (put in eval mode) that maps (N, 1, ...) to logits."""
        module.eval()
        return cls(
            module,
            name=name,
            normalization=normalization,
            size_multiple=size_multiple,
            recommended=recommended,
            foreground_class=foreground_class,
        )


@dataclass
class Ensemble:
    """Several models run one after another on each volume, their results fused per volume.

    Each member keeps its own patch size, normalization and preprocessing (and, with --tta
    auto, its own mirror axes); the engine blends each member's foreground log-odds over the
    whole volume, then takes the weighted mean of the probabilities (``mode="probabilities"``,
    what nnU-Net's ensembling and the Vesuvius winners did) or of the log-odds (``"logits"``).
    ``weights`` are normalized to sum to 1.
    """

    members: list[SegmentationModel]
    weights: list[float] | None = None  # None: equal; normalized to sum to 1 either way
    mode: str = "probabilities"

    @property
    def name(self) -> str:
        return "+".join(member.name for member in self.members)

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ModelError("an ensemble needs at least two models")
        if self.mode not in ENSEMBLE_MODES:
            raise ModelError(
                f"unknown ensemble mode {self.mode!r}: use one of {', '.join(ENSEMBLE_MODES)}"
            )
        self.weights = _normalized_weights(self.weights, len(self.members))


def _normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise ModelError(f"{len(weights)} ensemble weights given for {count} models")
    if not all(
        isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        for w in weights
    ):
        raise ModelError(f"ensemble weights must be positive numbers, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def load_model(
    spec: str | Path,
    *,
    foreground_class: int | None = None,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = "final",
    spacing: Sequence[float] | None = None,
) -> SegmentationModel:
    """Load ``"demo"``, a model folder or its config.json, a TorchScript file, a ``.pt2``, or an
    nnU-Net v2 trained-model folder (or a folder holding exactly one, such as a Kaggle mount).

    ``foreground_class`` picks the foreground among C-class logits and overrides the config's
    (for nnU-Net: a label value of dataset.json). ``folds`` (``0``, ``1``, ..., ``"all"`` for
    fold_all; None: every numbered fold with the checkpoint), ``checkpoint`` (``"final"`` or
    ``"best"``) and ``spacing`` (of the input volumes, Z, Y, X; None: 1, 1, 1) concern nnU-Net
    folders only. Raises ModelError naming the file and what is wrong.
    """
    if str(spec) == "demo":
        from runtime.samples.demo import DEMO_DIR

        return _load_config(DEMO_DIR / _CONFIG_NAME, foreground_class, name="demo")
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
    network, static, mover = _load_program(path)
    return SegmentationModel(
        network,
        name=path.stem,
        foreground_class=foreground_class,
        static_input_shape=static,
        recommended=_static_recommendation(static),
        mover=mover,
    )


def load_ensemble(
    specs: Sequence[str | Path],
    *,
    weights: Sequence[float] | None = None,
    mode: str = "probabilities",
    **options: Any,
) -> SegmentationModel | Ensemble:
    """Load several models as an :class:`Ensemble` (one spec: just that model).

    ``mode="probabilities"`` fuses the members' per-volume foreground probabilities,
    ``mode="logits"`` their log-odds; weights default to equal and are normalized. ``options``
    (foreground_class, folds, checkpoint, spacing) go to every :func:`load_model`.
    """
    if not specs:
        raise ModelError("an ensemble needs at least one model")
    if mode not in ENSEMBLE_MODES:
        raise ModelError(f"unknown ensemble mode {mode!r}: use one of {', '.join(ENSEMBLE_MODES)}")
    _normalized_weights(weights, len(specs))  # fail before loading anything
    members = [load_model(spec, **options) for spec in specs]
    if len(members) == 1:
        return members[0]
    return Ensemble(members, list(weights) if weights is not None else None, mode)


# --- the config format ---------------------------------------------------------------------
def _load_config(path: Path, foreground_class: int | None, *, name: str) -> SegmentationModel:
    data = _read_json(path)
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
        network, static, mover = _load_program(program)
        return SegmentationModel(
            network,
            name=display,
            normalization=normalization,
            recommended={**_static_recommendation(static), **recommended},
            foreground_class=fg,
            static_input_shape=static,
            mover=mover,
        )

    config = UNetConfig.from_dict(data["architecture"], source=str(path))
    if config.in_channels != 1:
        raise ModelError(f"{path}: in_channels is {config.in_channels}; volumes have 1 channel")
    _check_foreground_class(fg, config.out_channels, path)
    weights_path = _relative_file(path, data.get("weights"), "weights")
    network = UNet3D(config)
    _load_state_dict(network, _read_state_dict(weights_path), weights_path)
    network.eval()
    return SegmentationModel(
        network,
        name=display,
        normalization=normalization,
        size_multiple=config.size_multiple,
        recommended=recommended,
        foreground_class=fg,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


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


# --- checkpoints and programs ---------------------------------------------------------------
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(_refusal(path, error)) from None
    except Exception as error:  # torch raises RuntimeError/EOFError/... for unreadable files
        raise ModelError(f"{path}: not a readable torch checkpoint ({first_line(error)})") from None
    state = _unwrap_state_dict(data)
    if state is None:
        raise ModelError(
            f"{path}: expected a state_dict (a mapping of parameter names to tensors), "
            f"got {type(data).__name__}; {_SAVE_HINT}"
        )
    return state


def _unwrap_state_dict(data: Any) -> dict[str, torch.Tensor] | None:
    """Accept a plain state_dict, or one nested under "state_dict" / prefixed by "module."."""
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        return None
    state = dict(data)
    for prefix in ("module.", "model."):
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _load_state_dict(
    network: torch.nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    *,
    described_by: str = "the architecture in config.json",
    hint: str = "",
) -> None:
    """Load strictly; a mismatch names the first missing, unexpected and mis-shaped tensors."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    problems = [
        f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if items
    ]
    if problems:
        raise ModelError(
            f"{path}: weights do not match {described_by} ({'; '.join(problems)}){hint}"
        )
    network.load_state_dict(state, strict=True)


def _load_program_in_folder(folder: Path, foreground_class: int | None) -> SegmentationModel:
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _PROGRAM_SUFFIXES)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "no model file"
        raise ModelError(
            f"{folder}: no config.json, and {found}; add a config.json or point at one file"
        )
    return load_model(candidates[0], foreground_class=foreground_class)


def _load_program(
    path: Path,
) -> tuple[torch.nn.Module, tuple[int | None, ...] | None, Callable[..., torch.nn.Module]]:
    kind = _archive_kind(path)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                # Deprecated in recent torch, but competitors' TorchScript files still exist.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise ModelError(
                f"{path}: not a loadable TorchScript archive ({first_line(error)})"
            ) from None
        module.eval()
        return module, None, _move_module
    if kind == "export":
        return _load_exported(path)
    _refuse_checkpoint(path)
    raise AssertionError("unreachable")


def _archive_kind(path: Path) -> str:
    """'torchscript', 'export' or 'checkpoint' (a torch.save file), judged by content."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "checkpoint"  # legacy torch.save format, or not torch at all: torch.load judges
    parts = [name.split("/") for name in names]
    if any(len(p) > 2 and p[1] == "code" for p in parts):
        return "torchscript"
    if any(len(p) == 2 and p[1] == "archive_format" for p in parts) or any(
        len(p) > 2 and p[1] == "models" for p in parts
    ):
        return "export"
    return "checkpoint"


def _refuse_checkpoint(path: Path) -> None:
    """Explain why a torch.save file cannot be used on its own, reading it only safely."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(_refusal(path, error)) from None
    except Exception as error:
        raise ModelError(
            f"{path}: not a TorchScript, torch.export or torch checkpoint file ({first_line(error)})"
        ) from None
    if _unwrap_state_dict(data) is not None:
        raise ModelError(
            f"{path}: a bare state_dict has no architecture; put it beside a config.json "
            "(format kaggle-offline-unet) naming it as 'weights', and point --model at the folder"
        )
    raise ModelError(f"{path}: holds a {type(data).__name__}, not a model; {_SAVE_HINT}")


def _refusal(path: Path, error: Exception, hint: str = _SAVE_HINT) -> str:
    text = str(error)
    if not re.search(r"global|reduce|class", text, re.IGNORECASE):
        # The safe unpickler met bytes that are no pickle at all ("Unsupported operand").
        return f"{path}: not a TorchScript, torch.export or torch checkpoint file"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f"the Python object {found.group(1)}" if found else "Python objects"
    return f"{path}: refused: it pickles {what}, and unpickling it could run arbitrary code; {hint}"


def _load_exported(
    path: Path,
) -> tuple[torch.nn.Module, tuple[int | None, ...] | None, Callable[..., torch.nn.Module]]:
    # Not torch.export.load: it unpickles payloads and evaluates strings from the file.
    from runtime.inference.pt2 import load_pt2

    network, static = load_pt2(path)
    return network, static, _move_module


def _static_recommendation(static: tuple[int | None, ...] | None) -> dict[str, Any]:
    if static is None:
        return {}
    recommended: dict[str, Any] = {}
    if all(isinstance(d, int) for d in static[2:]):
        recommended["patch_size"] = list(static[2:])
    if isinstance(static[0], int):
        recommended["batch_size"] = static[0]
    return recommended


# --- helpers ------------------------------------------------------------------------------
def _move_module(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    with warnings.catch_warnings():
        # Moving a TorchScript module reads each parameter's .grad, which warns for nothing.
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor")
        return copy.deepcopy(network).to(device)


def _set_layout(network: torch.nn.Module, memory_format: torch.memory_format) -> None:
    for parameter in network.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=memory_format)


def _first_tensor(output: Any, name: str) -> torch.Tensor:
    # Deep-supervision networks return a list with the full-resolution output first.
    if isinstance(output, list | tuple) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"model {name} returned {type(output).__name__}, not a tensor")
    return output


def _foreground_log_odds(output: torch.Tensor, model: SegmentationModel) -> torch.Tensor:
    if output.dim() != 5:
        raise ModelError(
            f"model {model.name} returned shape {tuple(output.shape)}; expected (N, C, Z, Y, X)"
        )
    classes = output.shape[1]
    fg = model.foreground_class
    if classes == 1:
        if fg not in (None, 0):
            raise ModelError(
                f"model {model.name} has one output, but foreground class {fg} was asked"
            )
        return output
    if fg is None:
        raise ModelError(
            f"model {model.name} outputs {classes} class logits but no foreground class is set; "
            "pass --foreground-class K (competition models: usually 1 = surface)"
        )
    if fg >= classes:
        raise ModelError(
            f"model {model.name}: foreground class {fg} is out of range for {classes} classes"
        )
    others = torch.cat([output[:, :fg], output[:, fg + 1 :]], dim=1)
    return output[:, fg : fg + 1] - torch.logsumexp(others, dim=1, keepdim=True)
