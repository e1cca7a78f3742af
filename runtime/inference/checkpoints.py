"""Safe readers of model files: nothing we load may run code.

State dicts are read with ``torch.load(weights_only=True)``; TorchScript archives with
``torch.jit.load``; ``torch.export`` programs by :mod:`runtime.inference.pt2`, which unpickles and
evaluates nothing from the file. A checkpoint that pickles Python objects (``torch.save(model)``)
is refused with the reason. Every error is a one-line :class:`ModelError` naming the file.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from runtime.contract.errors import ModelError, first_line
from runtime.inference.segmentation_model import move_module

__all__ = [
    "SAVE_HINT",
    "load_program",
    "load_state_dict",
    "read_json",
    "read_state_dict",
    "refusal",
    "unwrap_state_dict",
]

SAVE_HINT = (
    "save model.state_dict() beside a config.json (format kaggle-offline-unet), or export the "
    "model with torch.jit.script(model).save(path) or torch.export.save(torch.export.export(...))"
)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(refusal(path, error)) from None
    except Exception as error:  # torch raises RuntimeError/EOFError/... for unreadable files
        raise ModelError(f"{path}: not a readable torch checkpoint ({first_line(error)})") from None
    state = unwrap_state_dict(data)
    if state is None:
        raise ModelError(
            f"{path}: expected a state_dict (a mapping of parameter names to tensors), "
            f"got {type(data).__name__}; {SAVE_HINT}"
        )
    return state


def unwrap_state_dict(data: Any) -> dict[str, torch.Tensor] | None:
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


def load_state_dict(
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


def load_program(
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
        return module, None, move_module
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
        raise ModelError(refusal(path, error)) from None
    except Exception as error:
        raise ModelError(
            f"{path}: not a TorchScript, torch.export or torch checkpoint file ({first_line(error)})"
        ) from None
    if unwrap_state_dict(data) is not None:
        raise ModelError(
            f"{path}: a bare state_dict has no architecture; put it beside a config.json "
            "(format kaggle-offline-unet) naming it as 'weights', and point --model at the folder"
        )
    raise ModelError(f"{path}: holds a {type(data).__name__}, not a model; {SAVE_HINT}")


def refusal(path: Path, error: Exception, hint: str = SAVE_HINT) -> str:
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
    return network, static, move_module
