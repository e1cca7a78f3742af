"""Reading nnU-Net checkpoints without arbitrary unpickling.

nnU-Net saves a dict (``network_weights``, ``optimizer_state``, ``logging``, ``init_args``,
``trainer_name``, ``inference_allowed_mirroring_axes``, ...) with ``torch.save`` and loads it with
``weights_only=False``, which runs whatever the file pickles. Here it is read with
``weights_only=True``: tensors, containers and plain values only, plus the numpy scalar and dtype
globals nnU-Net's logging holds (a numpy scalar is rebuilt from its dtype and raw bytes; nothing
is called). Only the weights, the trainer's name, the mirroring axes and (for a folder not named
``Trainer__Plans__configuration``) the configuration name are used.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.contract.errors import ModelError, first_line
from runtime.inference.checkpoints import refusal

__all__ = ["Checkpoint", "read_checkpoint"]

_HINT = (
    "nnU-Net checkpoints hold only tensors, numbers, strings and numpy scalars; this one was "
    "changed or is not an nnU-Net checkpoint"
)
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers of older nnU-Net versions


@dataclass(frozen=True)
class Checkpoint:
    weights: dict[str, torch.Tensor]
    trainer_name: str | None
    mirroring_axes: tuple[int, ...] | None  # None: nnU-Net does not mirror this model
    configuration: str | None  # init_args["configuration"], where present


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(refusal(path, error, _HINT)) from None
    except Exception as error:  # torch raises RuntimeError/EOFError/... for unreadable files
        raise ModelError(f"{path}: not a readable torch checkpoint ({first_line(error)})") from None
    if not isinstance(data, dict) or "network_weights" not in data:
        keys = (
            ", ".join(map(str, list(data)[:6])) if isinstance(data, dict) else type(data).__name__
        )
        raise ModelError(f"{path}: not an nnU-Net checkpoint (no network_weights; holds {keys})")
    return Checkpoint(
        weights=_weights(data["network_weights"], path),
        trainer_name=_text(data.get("trainer_name")),
        mirroring_axes=_axes(data.get("inference_allowed_mirroring_axes"), path),
        configuration=_text((data.get("init_args") or {}).get("configuration"))
        if isinstance(data.get("init_args"), dict)
        else None,
    )


def _weights(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path}: network_weights is not a state_dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{path}: network_weights holds something other than named tensors")
    weights = dict(state)
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in weights):
            weights = {key[len(prefix) :]: value for key, value in weights.items()}
    return weights


def _axes(value: Any, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(axis, int) and not isinstance(axis, bool) and 0 <= axis <= 2 for axis in value
    ):
        raise ModelError(
            f"{path}: inference_allowed_mirroring_axes must be spatial axes, got {value!r}"
        )
    return tuple(dict.fromkeys(int(axis) for axis in value))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _numpy_globals() -> list[Any]:
    """numpy's scalar reconstructor and the numeric dtype classes, where this numpy has them."""
    import numpy as np

    found: list[Any] = [np.dtype]
    multiarray = getattr(np, "_core", None) or np.core
    # Under both names: numpy 1 pickles numpy.core.multiarray.scalar, numpy 2 numpy._core....
    for spelling in ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"):
        found.append((multiarray.multiarray.scalar, spelling))
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        for name in (
            "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
            "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
            "UInt64DType", "BoolDType", "LongDType", "ULongDType", "LongLongDType",
        ):  # fmt: skip
            cls = getattr(dtypes, name, None)
            if cls is not None:
                found.append(cls)
    return found
