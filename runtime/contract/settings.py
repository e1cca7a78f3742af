"""A predict run's settings: the allowed values, what the user asked, and one resolution of both.

Everything that decides how a run segments and what it writes is settled here, once, by
:func:`resolve`: ``runtime predict`` (after its argparse), ``bundler kernel`` (before it writes a
notebook), ``runtime fuse`` (through :func:`resolve_ensemble`) and the coming zarr path all call
it, and nothing downstream checks an option again. It refuses, one line each:

* an option that does not apply to a model's format (``--folds``, ``--checkpoint`` and
  ``--spacing`` concern nnU-Net folders only; ``--patch-size`` for a program exported for one
  window; ``--ensemble-mode``/``--ensemble-weights`` with one model);
* every conflicting combination (``--threshold`` with ``--hysteresis``, ``--postprocess FILE``
  with the options it replaces, ...);
* values out of range, for callers that build a :class:`RunRequest` without argparse.

The models' recommendations (``config.json`` ``"inference"``) are honoured as follows, and each
choice is said in :attr:`RunSettings.notes` (the run's log and metrics.json): every model runs
its windows with its own recommended overlap (its windows are its own, even in an ensemble), and
the threshold is the one every recommending model agrees on; members that recommend different
thresholds are refused until ``--threshold`` (or a tuned ``--postprocess``) chooses, since no
average of thresholds tuned on each model's own probabilities is right for their fusion.

Standard library only: the bundler and the install path import it without numpy or torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from runtime.contract.errors import InputError
from runtime.contract.tta import IDENTITY, Transform

__all__ = [
    "Amp",
    "Checkpoint",
    "EnsembleMode",
    "EnsembleSettings",
    "MaskRule",
    "ModelChoice",
    "ModelFacts",
    "ModelFormat",
    "NnunetSettings",
    "OptionError",
    "ProbabilityEncoding",
    "RunRequest",
    "RunSettings",
    "resolve",
    "resolve_ensemble",
]


class OptionError(InputError):
    """An option that does not apply to the run, or that conflicts with another option."""


# --- the allowed values, once --------------------------------------------------------------
class EnsembleMode(StrEnum):
    """How an ensemble's members (or saved probability folders) are averaged."""

    PROBABILITIES = "probabilities"  # weighted mean of probabilities (nnU-Net's ensembling)
    LOGITS = "logits"  # weighted mean of log-odds, mapped back


class ProbabilityEncoding(StrEnum):
    """How saved probabilities are stored (see runtime.volumes.probability)."""

    UINT8 = "uint8"
    FLOAT16 = "float16"


class Checkpoint(StrEnum):
    """Which checkpoint of each nnU-Net fold is read."""

    FINAL = "final"
    BEST = "best"


class Amp(StrEnum):
    """Mixed precision: decided by a probe, forced, or off."""

    AUTO = "auto"
    FP16 = "fp16"
    BF16 = "bf16"
    OFF = "off"


class ModelFormat(StrEnum):
    """What a ``--model`` turned out to be once loaded."""

    CONFIG = "kaggle-offline-unet"  # a folder with config.json (U-Net weights, or a program)
    PROGRAM = "program"  # a TorchScript or torch.export (.pt2) file
    NNUNET = "nnunet"  # an nnU-Net v2 trained-model folder
    MODULE = "module"  # an in-memory torch module (Python API)


# --- what the user asked ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunRequest:
    """A predict run as asked: None (or the type's empty value) means "not given".

    Built by ``runtime.commands.predict.request_from_args`` from argparse, by ``bundler
    kernel`` from the notebook's options, or directly by Python callers.
    """

    models: tuple[str, ...] = ("demo",)  # one spec, or several for an ensemble
    ensemble_mode: EnsembleMode | None = None
    ensemble_weights: tuple[float, ...] | None = None
    foreground_class: int | None = None
    # nnU-Net trained-model folders only
    folds: tuple[str, ...] | None = None  # "0", "1", ..., "all"; None: every numbered fold
    checkpoint: Checkpoint | None = None  # None: final
    spacing: tuple[float, float, float] | None = None  # None: 1, 1, 1 (TIFFs carry none)
    # the engine
    patch_size: tuple[int, int, int] | None = None  # None: each model's recommendation
    overlap: float | None = None  # None: each model's recommendation, else 0.5
    batch_size: int = 2
    # Test-time transforms, the identity first (runtime.contract.tta); None: "auto", each
    # model's own mirror axes.
    tta: tuple[Transform, ...] | None = (IDENTITY,)
    device: str = "auto"
    amp: Amp = Amp.AUTO
    compile: bool | None = None
    time_budget: float | None = None  # seconds for the whole run
    # how the probability becomes a mask
    threshold: float | None = None  # None: the models' recommendation, else 0.5
    hysteresis: tuple[float, float] | None = None
    foreground_fraction: float | None = None
    postprocess_file: Path | None = None  # a postprocess.json written by `runtime tune`
    min_component_voxels: int = 0
    closing_radius: int = 0
    fill_holes: bool = False
    # outputs and the run
    save_probabilities: Path | None = None
    probability_encoding: ProbabilityEncoding | None = None  # None: uint8
    preview_dir: Path | None = None
    metrics_path: Path | None = None  # None: metrics.json beside the zip
    workdir: Path | None = None  # None: a temporary folder beside the zip, removed afterwards
    strict: bool = False
    allow_missing: bool = False
    prefetch: int = 1
    progress_bar: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What resolution needs to know of one loaded model (see ``runtime.pipeline``)."""

    name: str
    format: ModelFormat
    overlap: float | None = None  # recommended (config.json "inference")
    threshold: float | None = None  # recommended
    fixed_patch: tuple[int, int, int] | None = None  # an exported program's only window


# --- the resolved run ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnsembleSettings:
    """Weights (normalized to sum to 1) and mode of a fusion of several inputs."""

    weights: tuple[float, ...]
    mode: EnsembleMode = EnsembleMode.PROBABILITIES


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """One model of the run: its spec, and once loaded its name, format and overlap."""

    spec: str
    name: str | None = None
    format: ModelFormat | None = None  # None: not loaded yet (bundler kernel, pre-load check)
    overlap: float = 0.5
    overlap_source: str = "default"


@dataclass(frozen=True, slots=True)
class NnunetSettings:
    folds: tuple[str, ...] | None = None
    checkpoint: Checkpoint = Checkpoint.FINAL
    spacing: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class MaskRule:
    """How the foreground probability becomes the submitted mask.

    ``rule`` is "threshold" (the engine thresholds; post-processing on its mask), "hysteresis",
    "per-volume" or "file" (a tuned postprocess.json, read by the volumes layer): those three
    decide the mask from the kept probability, compared as it is (or will be) saved.
    """

    threshold: float = 0.5
    threshold_source: str = "default"
    hysteresis_high: float | None = None
    foreground_fraction: float | None = None
    postprocess_file: Path | None = None
    min_component_voxels: int = 0
    closing_radius: int = 0
    fill_holes: bool = False

    @property
    def rule(self) -> str:
        if self.postprocess_file is not None:
            return "file"
        if self.hysteresis_high is not None:
            return "hysteresis"
        return "per-volume" if self.foreground_fraction is not None else "threshold"


@dataclass(frozen=True, slots=True)
class RunSettings:
    """A predict run, resolved: every value final, every combination checked."""

    models: tuple[ModelChoice, ...]
    ensemble: EnsembleSettings | None  # None: one model
    foreground_class: int | None
    nnunet: NnunetSettings
    patch_size: tuple[int, int, int] | None  # None: each model's recommendation
    batch_size: int
    tta: tuple[Transform, ...] | None  # None: auto
    device: str
    amp: Amp
    compile: bool | None
    time_budget: float | None
    mask: MaskRule
    save_probabilities: Path | None
    probability_encoding: ProbabilityEncoding
    preview_dir: Path | None
    metrics_path: Path | None
    workdir: Path | None
    strict: bool
    allow_missing: bool
    prefetch: int
    progress_bar: bool | None
    notes: tuple[str, ...] = ()  # what the recommendations decided, for the run's log

    @property
    def keeps_probability(self) -> bool:
        """The engine returns each volume's probability: it is saved, or decides the mask."""
        return self.save_probabilities is not None or self.mask.rule != "threshold"

    @property
    def mask_encoding(self) -> str:
        """How a rule (not a file's: that names its own) compares probabilities: as saved, so
        that `runtime tune` on the saved files sees the very same masks."""
        if self.save_probabilities is not None:
            return str(self.probability_encoding)
        return "float32"


# --- the resolution --------------------------------------------------------------------------
def resolve(request: RunRequest, models: Sequence[ModelFacts] | None = None) -> RunSettings:
    """The run's settings from the user's ``request`` and the loaded ``models`` (in the order of
    ``request.models``; None before loading, when only the model-independent rules are checked).

    Raises :class:`OptionError` (one line) for an option that does not apply or conflicts.
    """
    specs = tuple(str(spec) for spec in request.models)
    if not specs:
        raise OptionError("give at least one model (--model PATH|demo)")
    if models is not None and len(models) != len(specs):
        raise OptionError(f"{len(models)} loaded model(s) for {len(specs)} --model")
    _check_values(request)
    ensemble = _ensemble(request, len(specs))
    nnunet = _nnunet(request, models)
    if models is not None:
        _check_patch(request, models)
    mask, mask_notes = _mask_rule(request, models)
    choices, overlap_notes = _model_choices(request, specs, models)
    if request.probability_encoding is not None and request.save_probabilities is None:
        raise OptionError("--probability-encoding applies to --save-probabilities only")
    return RunSettings(
        models=choices,
        ensemble=ensemble,
        foreground_class=request.foreground_class,
        nnunet=nnunet,
        patch_size=request.patch_size,
        batch_size=request.batch_size,
        tta=_tta(request.tta),
        device=request.device,
        amp=Amp(request.amp),
        compile=request.compile,
        time_budget=request.time_budget,
        mask=mask,
        save_probabilities=request.save_probabilities,
        probability_encoding=ProbabilityEncoding(
            request.probability_encoding or ProbabilityEncoding.UINT8
        ),
        preview_dir=request.preview_dir,
        metrics_path=request.metrics_path,
        workdir=request.workdir,
        strict=request.strict,
        allow_missing=request.allow_missing,
        prefetch=request.prefetch,
        progress_bar=request.progress_bar,
        notes=(*overlap_notes, *mask_notes),
    )


def resolve_ensemble(
    count: int,
    weights: Sequence[float] | None,
    mode: EnsembleMode | str | None,
    *,
    what: str = "model(s)",
    weights_option: str = "--ensemble-weights",
) -> EnsembleSettings:
    """Weights and mode for fusing ``count`` inputs (ensemble members or probability folders)."""
    try:
        chosen = EnsembleMode(mode or EnsembleMode.PROBABILITIES)
    except ValueError:
        raise OptionError(
            f"unknown ensemble mode {mode!r}: use {' or '.join(EnsembleMode)}"
        ) from None
    if count < 2:
        raise OptionError(f"fusing needs at least two {what}, got {count}")
    if weights is None:
        return EnsembleSettings(tuple(1.0 / count for _ in range(count)), chosen)
    if len(weights) != count:
        raise OptionError(f"{len(weights)} {weights_option} given for {count} {what}")
    if not all(_is_number(w) and math.isfinite(w) and w > 0 for w in weights):
        raise OptionError(f"{weights_option} must be positive numbers, got {list(weights)}")
    total = float(sum(weights))
    return EnsembleSettings(tuple(float(w) / total for w in weights), chosen)


def _ensemble(request: RunRequest, count: int) -> EnsembleSettings | None:
    if count == 1:
        given = [
            option
            for option, value in (
                ("--ensemble-mode", request.ensemble_mode),
                ("--ensemble-weights", request.ensemble_weights),
            )
            if value is not None
        ]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise OptionError(
                f"{' and '.join(given)} {verb} to an ensemble (several --model), not to one model"
            )
        return None
    return resolve_ensemble(count, request.ensemble_weights, request.ensemble_mode)


def _nnunet(request: RunRequest, models: Sequence[ModelFacts] | None) -> NnunetSettings:
    given = [
        option
        for option, value in (
            ("--folds", request.folds),
            ("--checkpoint", request.checkpoint),
            ("--spacing", request.spacing),
        )
        if value is not None
    ]
    if given and models is not None:
        others = [m.name for m in models if m.format != ModelFormat.NNUNET]
        if len(others) == len(models):
            verb = "concern" if len(given) > 1 else "concerns"
            raise OptionError(
                f"{', '.join(given)} {verb} nnU-Net trained-model folders only, and "
                f"{_names(others)} {'is' if len(others) == 1 else 'are'} not one"
            )
    checkpoint = Checkpoint(request.checkpoint or Checkpoint.FINAL)
    return NnunetSettings(request.folds, checkpoint, request.spacing)


def _check_patch(request: RunRequest, models: Sequence[ModelFacts]) -> None:
    asked = request.patch_size
    for model in models:
        if asked and model.fixed_patch and tuple(asked) != model.fixed_patch:
            raise OptionError(
                f"--patch-size {_shape(asked)}: model {model.name} was exported for windows of "
                f"{_shape(model.fixed_patch)} only; drop --patch-size or re-export it with "
                "dynamic shapes"
            )


def _mask_rule(
    request: RunRequest, models: Sequence[ModelFacts] | None
) -> tuple[MaskRule, tuple[str, ...]]:
    cleanup = MaskRule(
        min_component_voxels=request.min_component_voxels,
        closing_radius=request.closing_radius,
        fill_holes=request.fill_holes,
    )
    if request.postprocess_file is not None:
        given = [
            option
            for option, value in (
                ("--threshold", request.threshold),
                ("--hysteresis", request.hysteresis),
                ("--foreground-fraction", request.foreground_fraction),
                ("--min-component-voxels", request.min_component_voxels or None),
                ("--closing-radius", request.closing_radius or None),
                ("--fill-holes", request.fill_holes or None),
            )
            if value is not None
        ]
        if given:
            raise OptionError(
                f"--postprocess {request.postprocess_file} sets the threshold and "
                f"post-processing; drop {', '.join(given)}"
            )
        return MaskRule(postprocess_file=request.postprocess_file), ()
    if request.hysteresis is not None or request.foreground_fraction is not None:
        if request.threshold is not None:
            raise OptionError(
                "--threshold does not combine with --hysteresis or --foreground-fraction"
            )
        if request.hysteresis is not None and request.foreground_fraction is not None:
            raise OptionError("--hysteresis does not combine with --foreground-fraction")
        low, high = request.hysteresis or (0.5, None)
        rule = replace(
            cleanup,
            threshold=low,
            threshold_source="asked",
            hysteresis_high=high,
            foreground_fraction=request.foreground_fraction,
        )
        return rule, ()
    threshold, source, notes = _threshold(request, models)
    return replace(cleanup, threshold=threshold, threshold_source=source), notes


def _threshold(
    request: RunRequest, models: Sequence[ModelFacts] | None
) -> tuple[float, str, tuple[str, ...]]:
    if request.threshold is not None:
        return request.threshold, "asked", ()
    if models is None:
        return 0.5, "default", ()
    recommended = {m.name: m.threshold for m in models if m.threshold is not None}
    if not recommended:
        return 0.5, "default (no model recommends one)", ()
    values = set(recommended.values())
    if len(values) > 1:
        listed = ", ".join(f"{name} {value:g}" for name, value in recommended.items())
        raise OptionError(
            f"the models recommend different thresholds ({listed}); choose one with "
            "--threshold, or tune one on their fused probabilities (runtime fuse, runtime tune, "
            "--postprocess)"
        )
    value = values.pop()
    silent = [m.name for m in models if m.threshold is None]
    source = f"recommended by {_names(list(recommended))}"
    if silent:
        source += f" ({_names(silent)} recommend{'s' if len(silent) == 1 else ''} none)"
    return value, source, (f"threshold = {value:g} ({source})",)


def _model_choices(
    request: RunRequest, specs: tuple[str, ...], models: Sequence[ModelFacts] | None
) -> tuple[tuple[ModelChoice, ...], tuple[str, ...]]:
    if models is None:
        overlap = 0.5 if request.overlap is None else request.overlap
        source = "asked" if request.overlap is not None else "default"
        return tuple(
            ModelChoice(spec, overlap=overlap, overlap_source=source) for spec in specs
        ), ()
    choices, notes = [], []
    for spec, model in zip(specs, models, strict=True):
        if request.overlap is not None:
            overlap, source = request.overlap, "asked"
        elif model.overlap is not None:
            overlap, source = model.overlap, f"recommended by model {model.name}"
            notes.append(f"overlap = {overlap:g} for {model.name} (recommended by the model)")
        else:
            overlap, source = 0.5, "default (the model recommends none)"
        choices.append(ModelChoice(spec, model.name, model.format, overlap, source))
    return tuple(choices), tuple(notes)


def _check_values(request: RunRequest) -> None:
    """Ranges, for callers that did not come through argparse's types (one line, all found)."""
    problems = []
    if request.overlap is not None and not 0.0 <= request.overlap < 1.0:
        problems.append(f"--overlap must be in [0, 1), got {request.overlap}")
    for option, value in (
        ("--threshold", request.threshold),
        ("--foreground-fraction", request.foreground_fraction),
    ):
        if value is not None and not 0.0 < value < 1.0:
            problems.append(f"{option} must be in (0, 1), got {value}")
    if request.hysteresis is not None:
        low, high = request.hysteresis
        if not 0.0 < low < high < 1.0:
            problems.append(f"--hysteresis needs 0 < LOW < HIGH < 1, got {low},{high}")
    for option, number, least in (
        ("--batch-size", request.batch_size, 1),
        ("--prefetch", request.prefetch, 1),
        ("--min-component-voxels", request.min_component_voxels, 0),
        ("--closing-radius", request.closing_radius, 0),
    ):
        if not isinstance(number, int) or isinstance(number, bool) or number < least:
            problems.append(f"{option} must be a whole number of at least {least}, got {number}")
    if request.tta is not None and not all(isinstance(t, Transform) for t in request.tta):
        problems.append(f"--tta must be test-time transforms, got {request.tta!r}")
    if request.patch_size is not None and (
        len(request.patch_size) != 3 or any(int(d) < 1 for d in request.patch_size)
    ):
        problems.append(f"--patch-size must be 3 positive integers, got {request.patch_size}")
    if request.time_budget is not None and not request.time_budget > 0:
        problems.append(f"--time-budget must be positive seconds, got {request.time_budget}")
    choices: tuple[tuple[str, StrEnum | None, type[StrEnum]], ...] = (
        ("--amp", request.amp, Amp),
        ("--checkpoint", request.checkpoint, Checkpoint),
        ("--ensemble-mode", request.ensemble_mode, EnsembleMode),
        ("--probability-encoding", request.probability_encoding, ProbabilityEncoding),
    )
    for option, chosen, allowed in choices:
        if chosen is not None and chosen not in tuple(allowed):
            problems.append(f"{option} must be one of {', '.join(allowed)}, got {chosen!r}")
    if request.spacing is not None and not (
        len(request.spacing) == 3 and all(0 < v < math.inf for v in request.spacing)
    ):
        problems.append(f"--spacing must be 3 positive numbers, got {request.spacing}")
    if request.foreground_class is not None and request.foreground_class < 0:
        problems.append(f"--foreground-class must be 0 or more, got {request.foreground_class}")
    if problems:
        raise OptionError("; ".join(problems))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _tta(asked: tuple[Transform, ...] | None) -> tuple[Transform, ...] | None:
    """The identity first, each transform once, in the order given (a time budget drops
    transforms from the end)."""
    if asked is None:
        return None
    return tuple(dict.fromkeys((IDENTITY, *asked)))
