"""Segmentation models the engine can run, loaded without arbitrary unpickling.

Three formats are accepted:

* a model folder (or its ``config.json``, format ``kaggle-offline-unet``) describing the built-in
  U-Net family plus a plain ``state_dict`` read with ``torch.load(weights_only=True)``; the config
  may instead name a ``"program"`` (TorchScript or ``.pt2``) to give it a normalization and
  foreground class;
* a TorchScript archive (``torch.jit.save``);
* a ``torch.export`` program (``torch.export.save``, ``.pt2``), read and run by
  :mod:`runtime.inference.pt2`, which unpickles and evaluates nothing from the file.

A checkpoint that pickles Python objects (``torch.save(model)``) is refused: unpickling it can run
any code; so is a ``.pt2`` whose payloads need unpickling. Whatever the network outputs, :meth:`SegmentationModel.foreground_logits` returns one
foreground log-odds channel; C-class logits become ``logit_k - logsumexp(other logits)``.
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
from pathlib import Path
from typing import Any

import torch

from runtime.contract.errors import ModelError, first_line

__all__ = [
    "ENSEMBLE_MODES",
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


class SegmentationModel:
    """A network plus what the engine needs to run it: normalization, shape rules, defaults.

    ``foreground_logits`` maps a normalized ``(N, 1, Z, Y, X)`` batch to ``(N, 1, Z, Y, X)``
    foreground log-odds. ``replicate(device)`` gives an independent copy for another device.
    """

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

    def to_channels_last(self) -> SegmentationModel:
        """Store 5D weights as channels_last_3d (in place), what tensor-core Conv3d prefers."""
        _channels_last(self.network)
        return self

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


class _Ensemble(SegmentationModel):
    """A weighted mean of members' foreground probabilities or logits, as one log-odds channel."""

    def __init__(
        self, members: Sequence[SegmentationModel], weights: Sequence[float], mode: str
    ) -> None:
        norms = {member.normalization for member in members}
        shared = norms.pop() if len(norms) == 1 else None
        statics = {m.static_input_shape for m in members if m.static_input_shape is not None}
        if len(statics) > 1:
            raise ModelError(
                "ensemble members were exported for different fixed input shapes "
                f"{sorted(map(str, statics))}; re-export them with one shape or dynamic shapes"
            )
        super().__init__(
            torch.nn.ModuleList([m.network for m in members]),
            name="+".join(m.name for m in members),
            # Members that disagree get raw voxels and normalize themselves.
            normalization=shared or (0.0, 1.0),
            size_multiple=math.lcm(*(m.size_multiple for m in members)),
            recommended=members[0].recommended,
            static_input_shape=statics.pop() if statics else None,
        )
        self.members = list(members)
        self._own_normalization = shared is None
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]
        self._log_weights = [math.log(w) for w in self.weights]
        self.mode = mode

    def foreground_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = []
        for member in self.members:
            inputs = x
            if self._own_normalization:
                mean, std = member.normalization
                inputs = (x - mean) / std
            logits.append(member.foreground_logits(inputs).float())
        stacked = torch.stack(logits)
        if self.mode == "logits":
            weights = stacked.new_tensor(self.weights).view(-1, *([1] * (stacked.dim() - 1)))
            return (stacked * weights).sum(0)
        # log of the weighted mean probability minus log of its complement, all in log space so
        # confident members never saturate to 0 or 1.
        log_w = stacked.new_tensor(self._log_weights).view(-1, *([1] * (stacked.dim() - 1)))
        log_p = torch.logsumexp(log_w + torch.nn.functional.logsigmoid(stacked), dim=0)
        log_q = torch.logsumexp(log_w + torch.nn.functional.logsigmoid(-stacked), dim=0)
        return log_p - log_q

    def replicate(self, device: torch.device | str) -> SegmentationModel:
        clone = copy.copy(self)
        clone.members = [member.replicate(device) for member in self.members]
        clone.network = torch.nn.ModuleList([m.network for m in clone.members])
        return clone

    def to_channels_last(self) -> SegmentationModel:
        for member in self.members:
            member.to_channels_last()
        return self


def load_model(spec: str | Path, *, foreground_class: int | None = None) -> SegmentationModel:
    """Load ``"demo"``, a model folder or its config.json, a TorchScript file or a ``.pt2``.

    ``foreground_class`` picks the foreground among C-class logits and overrides the config's.
    Raises ModelError naming the file and what is wrong.
    """
    if str(spec) == "demo":
        from runtime.samples.demo import DEMO_DIR

        return _load_config(DEMO_DIR / _CONFIG_NAME, foreground_class, name="demo")
    path = Path(spec)
    if path.is_dir():
        config = path / _CONFIG_NAME
        if config.is_file():
            return _load_config(config, foreground_class, name=path.name)
        return _load_program_in_folder(path, foreground_class)
    if not path.exists():
        raise ModelError(
            f"model {str(spec)!r} not found: give 'demo', a model folder with config.json, "
            "a config.json, a TorchScript file or a torch.export .pt2 file"
        )
    if path.suffix == ".json":
        return _load_config(path, foreground_class, name=path.parent.name or path.stem)
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
    foreground_class: int | None = None,
) -> SegmentationModel:
    """Load several models as one: the weighted mean of their probabilities or logits.

    ``mode="probabilities"`` averages sigmoid(foreground log-odds) and returns the log-odds of the
    mean; ``mode="logits"`` averages the log-odds. Weights default to equal and are normalized.
    """
    if not specs:
        raise ModelError("an ensemble needs at least one model")
    if mode not in ENSEMBLE_MODES:
        raise ModelError(f"unknown ensemble mode {mode!r}: use one of {', '.join(ENSEMBLE_MODES)}")
    if weights is None:
        weights = [1.0] * len(specs)
    if len(weights) != len(specs):
        raise ModelError(f"{len(weights)} ensemble weights given for {len(specs)} models")
    if not all(isinstance(w, int | float) and math.isfinite(w) and w > 0 for w in weights):
        raise ModelError(f"ensemble weights must be positive numbers, got {list(weights)}")
    members = [load_model(spec, foreground_class=foreground_class) for spec in specs]
    if len(members) == 1:
        return members[0]
    return _Ensemble(members, weights, mode)


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


def _load_state_dict(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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
            f"{path}: weights do not match the architecture in config.json ({'; '.join(problems)})"
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


def _refusal(path: Path, error: Exception) -> str:
    text = str(error)
    if not re.search(r"global|reduce|class", text, re.IGNORECASE):
        # The safe unpickler met bytes that are no pickle at all ("Unsupported operand").
        return f"{path}: not a TorchScript, torch.export or torch checkpoint file"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f"the Python object {found.group(1)}" if found else "Python objects"
    return (
        f"{path}: refused: it pickles {what}, and unpickling it could run arbitrary code; "
        f"{_SAVE_HINT}"
    )


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


def _channels_last(network: torch.nn.Module) -> None:
    for parameter in network.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)


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
