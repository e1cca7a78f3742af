"""``torch.export`` programs (``.pt2``) read and run without unpickling or evaluating anything.

``torch.export.load`` is unsafe on a file from someone else: it unpickles weights and constants
flagged ``use_pickle`` with ``weights_only=False``, retries sample inputs the same way when the
safe load fails, unpickles "opaque" constants with ``pickle.loads``, loads AOTInductor shared
libraries, hands the graph's symbolic-shape strings to ``sympy.sympify`` (an ``eval``) and its
guard strings to ``exec``, and generates Python source from names found in the file.

None of that is needed to run a segmentation network. Here the archive is read with ``zipfile``
only, its JSON is parsed with ``json``, every weight is built from its raw bytes, and the graph is
run node by node by :class:`ExportedGraph`, which calls nothing but PyTorch operators
(``torch.ops.<namespace>.<op>.<overload>``) and the few integer operators that shape arithmetic
uses. No string from the file is ever evaluated, imported or turned into code, and sample inputs
and extra files are never read. Whatever would need more (a pickled payload, compiled native code,
a Python callable, control flow, a buffer update) is refused, by name, before anything runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import re
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch

from runtime.contract.errors import ModelError, first_line

__all__ = ["ExportedGraph", "load_pt2"]

_MODEL = "model"  # the program torch.export.save writes, and torch.export.load returns
_PROGRAM = f"models/{_MODEL}.json"
_WEIGHTS = f"data/weights/{_MODEL}_weights_config.json"
_CONSTANTS = f"data/constants/{_MODEL}_constants_config.json"
_READ_DATA = ("data/weights/", "data/constants/")
_NEVER_READ = ("data/sample_inputs/", "extra/", ".data/")  # pickles and free text: not needed
_SAFE_RECORD = re.compile(r"(weight|tensor)_\d+")
_IDENTIFIER = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*")  # no dunder attributes

# Serialized enums of torch/_export/serde/schema.py (a versioned file format, so fixed numbers).
_DTYPES = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    9: torch.complex32,
    10: torch.complex64,
    11: torch.complex128,
    12: torch.bool,
    13: torch.bfloat16,
}
_MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
_STRIDED = 7
_POSITIONAL = 1  # ArgumentKind.POSITIONAL

# The Python functions an exported graph may call for shape arithmetic (torch's own _SYM_OPS).
_PYTHON_OPERATORS: dict[str, Callable[..., Any]] = {
    **{
        f"_operator.{name}": getattr(operator, name)
        for name in (
            *("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub", "floordiv"),
            *("mod", "pow", "truediv", "and_", "or_", "lshift", "rshift", "getitem"),
        )
    },
    "math.trunc": math.trunc,
    **{
        f"torch.{name}": getattr(torch, name)
        for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")
        if hasattr(torch, name)
    },
}
_HINT = "export the model with torch.export.export(model.eval(), ...) and torch.export.save"
_LEGACY = ("serialized_exported_program.json", "serialized_state_dict.pt")  # torch < 2.8
_LEGACY_REFUSAL = (
    "an old .pt2 layout (torch < 2.8) that stores its weights as a pickle, and unpickling could "
    f"run arbitrary code; re-save it with a current torch ({_HINT})"
)


def load_pt2(path: Path) -> tuple[ExportedGraph, tuple[int | None, ...]]:
    """The runnable graph of a ``.pt2`` file and its input shape (None for a dynamic dimension).

    Raises :class:`ModelError` naming the file and what is refused or unreadable.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return _Reader(path, archive).read()
    except ModelError:
        raise
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(f"{path}: not a readable .pt2 archive ({first_line(error)})") from None
    except MemoryError:
        raise ModelError(f"{path}: its weights do not fit in memory") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as error:
        raise ModelError(
            f"{path}: not a torch.export program this runtime can read "
            f"({type(error).__name__}: {first_line(error)})"
        ) from None


_MAX_DEFLATE_RATIO = 1100  # deflate's best: about 1032:1 on all-zero data


class _Reader:
    """One archive: its entries under the root folder, read only as JSON or as raw bytes."""

    def __init__(self, path: Path, archive: zipfile.ZipFile) -> None:
        self.path = path
        self.archive = archive
        self.entries: dict[str, zipfile.ZipInfo] = {}
        roots = {info.filename.split("/", 1)[0] for info in archive.infolist()}
        if len(roots) != 1:
            if {Path(n).name for n in archive.namelist()} & set(_LEGACY):
                raise self.refuse(_LEGACY_REFUSAL)
            raise self.refuse(f"expected one root folder, found {len(roots)}")
        (root,) = roots
        for info in archive.infolist():
            name = info.filename[len(root) + 1 :]
            if name in self.entries:  # zip readers disagree on which copy wins: trust neither
                raise self.refuse(f"two entries are named {info.filename}")
            if not info.is_dir():
                self.entries[name] = info

    def refuse(self, why: str) -> ModelError:
        return ModelError(f"{self.path}: refused: {why}")

    def read(self) -> tuple[ExportedGraph, tuple[int | None, ...]]:
        self._check_entries()
        if self._text("archive_version") != "0":
            raise ModelError(
                f"{self.path}: .pt2 archive version {self._text('archive_version')!r} is not "
                "supported; re-save it with torch.export.save"
            )
        if self.entries.get("byteorder") and self._text("byteorder") != sys.byteorder:
            raise ModelError(
                f"{self.path}: its weights were saved {self._text('byteorder')}-endian"
            )
        program = self._json(_PROGRAM)
        tensors = {
            **self._payloads(_WEIGHTS, "weight"),
            **self._payloads(_CONSTANTS, "constant", optional=True),
        }
        graph = ExportedGraph(program["graph_module"], tensors, label=str(self.path))
        return graph, graph.input_shape

    def _check_entries(self) -> None:
        names = sorted(self.entries)
        if set(names) & set(_LEGACY):
            raise self.refuse(_LEGACY_REFUSAL)
        for name in names:
            if name.startswith("data/aotinductor/"):
                raise self.refuse(
                    f"{name}: AOTInductor-compiled native code, which loading would run; "
                    f"save the program itself ({_HINT})"
                )
            if name.startswith("data/") and not name.startswith(_READ_DATA + _NEVER_READ):
                raise self.refuse(f"{name}: a payload of a kind this runtime does not load")
            if name.startswith(_READ_DATA) and name.endswith(".pt"):
                raise self.refuse(
                    f"{name}: weights stored as a pickle (an older torch.export layout), and "
                    f"unpickling could run arbitrary code; re-save it ({_HINT})"
                )
        if _PROGRAM not in self.entries:
            found = ", ".join(n for n in names if n.startswith("models/")) or "none"
            raise ModelError(
                f"{self.path}: no {_PROGRAM} in the archive (programs found: {found}); "
                "not a torch.export.save file"
            )

    def _bytes(self, name: str) -> bytearray:
        info = self.entries[name]
        # The size comes from the archive's header and is allocated before reading: one that
        # no codec could produce from this archive is a lie, refused before the allocation.
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
        most = self.path.stat().st_size * ratio
        if info.file_size > most:
            raise self.refuse(
                f"{name} declares {info.file_size:,} bytes, more than this {most // ratio:,}-byte "
                f"archive can hold (at most {ratio}:1); not allocated"
            )
        data = bytearray(info.file_size)
        # ZipFile.open returns a ZipExtFile (a BufferedIOBase); typeshed says only IO[bytes].
        with cast("zipfile.ZipExtFile", self.archive.open(info)) as stream:
            if stream.readinto(data) != info.file_size or stream.read(1):
                raise ModelError(f"{self.path}: {name} is not the size its header says")
        return data

    def _text(self, name: str) -> str:
        if name not in self.entries:
            raise ModelError(f"{self.path}: no {name} in the archive; not a torch.export file")
        return self._bytes(name).decode("utf-8").strip()

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads(self._text(name))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ModelError(f"{self.path}: {name} is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{self.path}: {name} must hold a JSON object")
        return data

    def _payloads(self, config: str, kind: str, *, optional: bool = False) -> dict[str, Any]:
        if config not in self.entries:
            if optional:
                return {}
            raise ModelError(f"{self.path}: no {config} in the archive")
        flat: dict[str, torch.Tensor] = {}
        tensors: dict[str, Any] = {}
        for fqn, meta in self._json(config)["config"].items():
            record = str(meta["path_name"])
            where = f"{kind} {fqn!r} ({Path(config).parent.as_posix()}/{record})"
            if meta.get("use_pickle") or not _SAFE_RECORD.fullmatch(record):
                raise self.refuse(
                    f"{where} is stored as a pickled Python object, and unpickling it could run "
                    f"arbitrary code; only plain tensors are loaded ({_HINT}, without tensor "
                    "subclasses or custom objects)"
                )
            tensors[fqn] = self._tensor(
                f"{Path(config).parent.as_posix()}/{record}", meta, where, flat
            )
        return tensors

    def _tensor(
        self, name: str, meta: dict[str, Any], where: str, flat: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        tensor_meta = meta["tensor_meta"]
        dtype = _DTYPES.get(tensor_meta["dtype"])
        if dtype is None or tensor_meta.get("layout", _STRIDED) != _STRIDED:
            raise self.refuse(f"{where}: a tensor type this runtime does not load")
        sizes = [_concrete(value, where) for value in tensor_meta["sizes"]]
        strides = [_concrete(value, where) for value in tensor_meta["strides"]]
        offset = _concrete(tensor_meta["storage_offset"], where)
        if name not in self.entries:
            raise ModelError(f"{self.path}: {where}: no {name} in the archive")
        if name not in flat:
            data = self._bytes(name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(data) % itemsize:
                raise ModelError(f"{self.path}: {where}: {len(data)} bytes is not whole {dtype}s")
            flat[name] = (
                torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            )
        storage = flat[name]
        if storage.dtype != dtype:
            raise self.refuse(f"{where}: {name} is shared by tensors of different types")
        if storage.numel() == 0:  # what torch writes for an empty (or fake) tensor
            return torch.zeros(sizes, dtype=dtype)
        if len(sizes) != len(strides) or min([offset, *strides, *sizes], default=0) < 0:
            raise ModelError(f"{self.path}: {where}: invalid sizes or strides")
        needed = (
            0
            if 0 in sizes
            else offset + 1 + sum((s - 1) * t for s, t in zip(sizes, strides, strict=True))
        )
        if needed > storage.numel():
            raise ModelError(
                f"{self.path}: {where}: its shape {sizes} needs {needed} values, {name} has "
                f"{storage.numel()}"
            )
        return torch.as_strided(storage, sizes, strides, offset)


def _concrete(value: dict[str, Any], where: str) -> int:
    if set(value) != {"as_int"} or not isinstance(value["as_int"], int):
        raise ValueError(f"{where}: a weight of symbolic size")
    return int(value["as_int"])


# --- the graph --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ref:
    """A value computed earlier in the graph (or a graph input), by name."""

    name: str


class _InputDevice:
    """A device argument: the device of the graph's input (one program runs on one device)."""


_INPUT_DEVICE = _InputDevice()


@dataclass(frozen=True)
class _Step:
    """One node: an operator, its arguments (constants, _Ref or lists of them), its outputs."""

    target: str
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: Any  # str (one value), None (ignored), or a list of str | None | list (unpacked)
    frees: tuple[str, ...] = ()  # values no later step reads: dropped once this one has run


class ExportedGraph(torch.nn.Module):
    """The graph of a torch.export program, run node by node with its weights as buffers.

    Weights become parameters and buffers of this module, so ``.to(device)``, ``deepcopy`` and
    ``parameters()`` work as for any module; device arguments in the graph follow the input.
    """

    def __init__(
        self,
        graph_module: dict[str, Any],
        tensors: dict[str, Any],
        *,
        label: str,
    ) -> None:
        super().__init__()
        self._label = label  # the file, for messages
        graph, signature = graph_module["graph"], graph_module["signature"]
        self._inputs: list[tuple[str, str, Any]] = []  # (placeholder, kind, attribute or value)
        user_inputs: list[str] = []
        for index, spec in enumerate(signature["input_specs"]):
            ((kind, body),) = spec.items()
            if kind == "user_input":
                name = _tensor_name(body["arg"], "the user input")
                user_inputs.append(name)
                self._inputs.append((name, "user", None))
            elif kind in ("parameter", "buffer", "tensor_constant"):
                fqn = body[
                    {"parameter": "parameter_name", "buffer": "buffer_name"}.get(
                        kind, "tensor_constant_name"
                    )
                ]
                if fqn not in tensors:
                    raise self._error(f"{kind} {fqn!r} is used by the graph but not in the archive")
                attribute = f"_tensor_{index}"
                value = tensors[fqn]
                if kind == "parameter":
                    self.register_parameter(
                        attribute, torch.nn.Parameter(value, requires_grad=False)
                    )
                else:
                    self.register_buffer(attribute, value)
                self._inputs.append((body["arg"]["name"], "tensor", attribute))
            elif kind == "constant_input":
                ((_, constant),) = body["value"].items()
                self._inputs.append((body["name"], "constant", constant))
            else:
                raise self._refuse(
                    f"the program takes a {kind} input, which this runtime does not run"
                )
        if len(user_inputs) != 1:
            raise self._error(
                f"the exported program must take one (N, 1, Z, Y, X) tensor, takes {len(user_inputs)}"
            )
        sizes = graph["tensor_values"][user_inputs[0]]["sizes"]
        self.input_shape = tuple(int(s["as_int"]) if "as_int" in s else None for s in sizes)
        if len(self.input_shape) != 5:
            raise self._error(
                f"the exported program must take one (N, 1, Z, Y, X) tensor, got {self.input_shape}"
            )
        self._outputs: list[Any] = []
        for spec in signature["output_specs"]:
            ((kind, body),) = spec.items()
            if kind != "user_output":
                raise self._refuse(
                    f"the program has a {kind} output (it updates state while running), which "
                    f"inference never needs; {_HINT}"
                )
            self._outputs.append(self._argument(body["arg"]))
        self._steps = _with_frees([self._step(node) for node in graph["nodes"]], self._outputs)

    def forward(self, x: torch.Tensor) -> Any:
        values: dict[str, Any] = {}
        for name, kind, what in self._inputs:
            if kind == "user":
                values[name] = x
            elif kind == "tensor":
                values[name] = getattr(self, what)
            else:
                values[name] = what
        device = x.device
        for step in self._steps:
            args = [_resolve(a, values, device) for a in step.args]
            kwargs = {k: _resolve(v, values, device) for k, v in step.kwargs.items()}
            _bind(step.outputs, step.function(*args, **kwargs), values)
            for name in step.frees:
                values.pop(name, None)
        results = [_resolve(output, values, device) for output in self._outputs]
        return results[0] if len(results) == 1 else tuple(results)

    def _refuse(self, why: str) -> ModelError:
        return ModelError(f"{self._label}: refused: {why}")

    def _error(self, why: str) -> ModelError:
        return ModelError(f"{self._label}: {why}")

    # --- building the steps, once, when the file is read ---------------------------------------
    def _step(self, node: dict[str, Any]) -> _Step:
        target = node["target"]
        function = self._function(target)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for named in node["inputs"]:
            value = self._argument(named["arg"])
            if named.get("kind") == _POSITIONAL or not named.get("name"):
                args.append(value)
            else:
                kwargs[str(named["name"])] = value
        return _Step(target, function, tuple(args), kwargs, self._output_names(node["outputs"]))

    def _function(self, target: Any) -> Callable[..., Any]:
        if not isinstance(target, str):
            raise self._error(f"a graph node has no operator name: {target!r}")
        if target in _PYTHON_OPERATORS:
            return _PYTHON_OPERATORS[target]
        if target.startswith("torch.ops.higher_order."):
            raise self._refuse(
                f"the graph uses {target} (control flow or a wrapped subgraph), which this "
                "runtime does not run; export a graph of plain operators"
            )
        parts = target.split(".")
        plain = len(parts) == 5 and all(_IDENTIFIER.fullmatch(part) for part in parts[2:])
        if plain and parts[:2] == ["torch", "ops"]:
            namespace, name, overload = parts[2:]
            space = getattr(torch.ops, namespace, None)
            if isinstance(space, torch._ops._OpNamespace):  # not another attribute of torch.ops
                found = None
                with contextlib.suppress(AttributeError, RuntimeError):
                    found = getattr(getattr(space, name), overload)
                if isinstance(found, torch._ops.OpOverload):
                    return found
                if found is None:
                    raise self._error(
                        f"the graph uses the operator {target}, which this torch does not have "
                        "(a custom operator not registered here, or a newer torch)"
                    )
        raise self._refuse(
            f"the graph calls {target!r}, which is not a PyTorch operator; only tensor "
            "operators are run"
        )

    def _argument(self, argument: dict[str, Any]) -> Any:
        ((kind, value),) = argument.items()
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return _Ref(_tensor_name(argument, "an argument"))
        if kind in ("as_int", "as_float", "as_bool", "as_string"):
            return _plain(value, kind)
        if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
            return [_plain(v, kind[:-1]) for v in value]
        if kind == "as_int_lists":
            return [tuple(_plain(v, "as_int") for v in inner) for inner in value]
        if kind == "as_float_lists":
            return [[_plain(v, "as_float") for v in inner] for inner in value]
        if kind == "as_tensors":
            return [_Ref(str(v["name"])) for v in value]
        if kind == "as_optional_tensors":
            return [None if "as_none" in v else _Ref(str(v["as_tensor"]["name"])) for v in value]
        if kind == "as_optional_tensor":
            return None if "as_none" in value else _Ref(str(value["as_tensor"]["name"]))
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return _symbolic(value)
        if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return [_symbolic(v) for v in value]
        if kind == "as_scalar_type":
            if value not in _DTYPES:
                raise self._error(f"the graph uses tensor type {value}, unknown to this runtime")
            return _DTYPES[value]
        if kind == "as_memory_format":
            return _MEMORY_FORMATS[value]
        if kind == "as_layout":
            if value != _STRIDED:
                raise self._refuse("the graph makes sparse or mkldnn tensors")
            return torch.strided
        if kind == "as_device":
            return _INPUT_DEVICE
        if kind == "as_complex":
            return complex(float(value["real"]), float(value["imag"]))
        if kind in ("as_custom_obj", "as_operator", "as_graph"):
            raise self._refuse(
                f"a graph argument is a {kind[3:].replace('_', ' ')}, which this runtime does "
                f"not run; {_HINT}"
            )
        raise self._error(f"the graph has an argument of kind {kind!r}, unknown to this runtime")

    def _output_names(self, outputs: list[dict[str, Any]]) -> Any:
        if not outputs:
            return None
        if len(outputs) == 1:
            ((kind, value),) = outputs[0].items()
            if kind == "as_none":
                return None
            if kind != "as_tensors":
                return self._output_name(outputs[0])
            return [str(v["name"]) for v in value]
        return [self._output_name(output) for output in outputs]

    def _output_name(self, output: dict[str, Any]) -> Any:
        ((kind, value),) = output.items()
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return str(value["name"])
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return str(value["as_name"])
        if kind == "as_tensors":
            return [str(v["name"]) for v in value]
        raise self._error(f"a graph node has an output of kind {kind!r}, unknown to this runtime")


def _tensor_name(argument: dict[str, Any], what: str) -> str:
    if set(argument) == {"as_tensor"}:
        return str(argument["as_tensor"]["name"])
    if set(argument) == {"name"}:
        return str(argument["name"])
    raise ValueError(f"{what} of the exported program is not a tensor")


def _plain(value: Any, kind: str) -> Any:
    expected: dict[str, type[Any] | tuple[type[Any], ...]] = {
        "as_int": int,
        "as_float": (int, float, str),
        "as_bool": bool,
        "as_string": str,
    }
    if not isinstance(value, expected[kind]):
        raise ValueError(f"an {kind} argument holds {type(value).__name__}")
    if kind == "as_float":
        return float(value)  # JSON writes inf and nan as the strings "Infinity" and "NaN"
    return value


def _symbolic(value: dict[str, Any]) -> Any:
    ((kind, inner),) = value.items()
    if kind == "as_name":
        return _Ref(str(inner))
    return _plain(inner, kind)


def _with_frees(steps: list[_Step], outputs: list[Any]) -> list[_Step]:
    """``steps``, each naming the values read (or made) last by it, as torch.fx's interpreter
    frees them: kept to the end of the forward, every activation of the network would be alive
    at once, many times the memory of eager execution."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in _refs((step.args, list(step.kwargs.values()))):
            last[name] = index
        for name in _bound(step.outputs):
            last.setdefault(name, index)  # made and never read: dropped at once
    keep = set(_refs(outputs))
    frees: dict[int, list[str]] = {}
    for name, index in last.items():
        if name not in keep:
            frees.setdefault(index, []).append(name)
    return [
        replace(step, frees=tuple(frees[index])) if index in frees else step
        for index, step in enumerate(steps)
    ]


def _refs(value: Any) -> Iterator[str]:
    """The names of the earlier values an argument (or nested arguments) reads."""
    if isinstance(value, _Ref):
        yield value.name
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _refs(item)


def _bound(names: Any) -> Iterator[str]:
    """The names a step's outputs bind (see :func:`_bind`)."""
    if isinstance(names, str):
        yield names
    elif isinstance(names, list):
        for name in names:
            yield from _bound(name)


def _resolve(value: Any, values: dict[str, Any], device: torch.device) -> Any:
    if isinstance(value, _Ref):
        return values[value.name]
    if value is _INPUT_DEVICE:
        return device
    if isinstance(value, list):
        return [_resolve(v, values, device) for v in value]
    return value


def _bind(names: Any, result: Any, values: dict[str, Any]) -> None:
    if names is None:
        return
    if isinstance(names, str):
        values[names] = result
        return
    results: Sequence[Any] = result
    for name, item in zip(names, results, strict=False):
        _bind(name, item, values)
