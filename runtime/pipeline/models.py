"""The models of a run: ``--model`` specs loaded (``demo`` included) and told to the settings.

``demo`` is resolved here, above both :mod:`runtime.inference` (which loads paths) and
:mod:`runtime.samples` (which ships the demo model), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from runtime.contract.settings import ModelFacts, RunSettings
from runtime.inference.segmentation_model import Ensemble, SegmentationModel

__all__ = ["DEMO", "load_model", "load_run_models", "model_facts"]

DEMO = "demo"


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
