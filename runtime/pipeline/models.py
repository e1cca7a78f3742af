"""A run's models and engine: ``--model`` specs loaded (``demo`` included), told to the settings,
and the :class:`Segmenter` set up as the resolved settings say.

:func:`set_up_engine` is what any runner of a :class:`RunRequest` calls (``predict``, and the
scroll path over zarr): load, resolve again with what the models are and recommend, log each
choice, build the engine. ``demo`` is resolved here, above both :mod:`runtime.inference` (which
loads paths) and :mod:`runtime.samples` (which ships the demo model), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.contract.settings import ModelFacts, RunRequest, RunSettings, resolve
from runtime.inference.engine import InferenceOptions, Segmenter
from runtime.inference.segmentation_model import Ensemble, SegmentationModel

__all__ = [
    "DEMO",
    "engine_options",
    "load_model",
    "load_run_models",
    "model_facts",
    "set_up_engine",
]

DEMO = "demo"


def set_up_engine(
    request: RunRequest,
    log: Callable[[str], None],
    *,
    segmenter: Segmenter | None = None,
    budget_start: float | None = None,
) -> tuple[RunSettings, Segmenter]:
    """The run's settings, resolved with its loaded models, and its engine; every choice logged.

    ``segmenter`` reuses an engine already set up (its model is resolved against ``request``);
    ``budget_start`` is when the run began (``time.monotonic()``), which ``--time-budget``
    counts from.
    """
    model = segmenter.model if segmenter is not None else load_run_models(resolve(request))
    settings = resolve(request, model_facts(model))
    log(f"model: {model.name}")
    for member in model.members if isinstance(model, Ensemble) else (model,):
        summary = getattr(member, "summary", None)
        if summary:  # what an nnU-Net folder was read as: trainer, folds, foreground, mirroring
            log(f"model {member.name}: {summary}")
    for note in settings.notes:
        log(note)
    if segmenter is None:
        segmenter = Segmenter(model, engine_options(settings, budget_start), log=log)
    return settings, segmenter


def engine_options(settings: RunSettings, budget_start: float | None = None) -> InferenceOptions:
    """The engine's options for resolved settings (each model its own overlap)."""
    overlaps = tuple(choice.overlap for choice in settings.models)
    return InferenceOptions(
        patch_size=settings.patch_size,
        overlap=overlaps if len(overlaps) > 1 else overlaps[0],
        batch_size=settings.batch_size,
        threshold=settings.mask.threshold,
        tta=settings.tta,
        device=settings.device,
        amp=settings.amp,
        compile=settings.compile,
        time_budget=settings.time_budget,
        time_budget_start=budget_start,
        keep_probability=settings.keeps_probability,
    )


def load_model(spec: str | Path, **options: object) -> SegmentationModel:
    """:func:`runtime.inference.models.load_model`, with ``"demo"`` for the built-in model."""
    from runtime.inference.models import load_model as load_path

    if str(spec) == DEMO:
        from runtime.samples.demo import DEMO_DIR

        spec = DEMO_DIR
    return load_path(spec, **options)  # type: ignore[arg-type]


def load_run_models(settings: RunSettings) -> SegmentationModel | Ensemble:
    """The run's model, or its ensemble, loaded as the settings say."""
    nnunet = settings.nnunet
    members = tuple(
        load_model(
            choice.spec,
            foreground_class=settings.foreground_class,
            folds=nnunet.folds,
            checkpoint=nnunet.checkpoint,
            spacing=nnunet.spacing,
        )
        for choice in settings.models
    )
    if settings.ensemble is None:
        return members[0]
    return Ensemble(members, settings.ensemble)


def model_facts(model: SegmentationModel | Ensemble) -> list[ModelFacts]:
    """What the settings need to know of each loaded model, in the order of ``--model``."""
    members = model.members if isinstance(model, Ensemble) else (model,)
    return [_facts(member) for member in members]


def _facts(model: SegmentationModel) -> ModelFacts:
    recommended = model.recommended
    static = model.static_input_shape
    fixed = None
    if static and all(isinstance(d, int) for d in static[2:]):
        fixed = (int(static[2]), int(static[3]), int(static[4]))  # type: ignore[arg-type]
    return ModelFacts(
        name=model.name,
        format=model.format,
        overlap=_number(recommended.get("overlap")),
        threshold=_number(recommended.get("threshold")),
        fixed_patch=fixed,
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
