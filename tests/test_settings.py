"""One resolution of a run's settings: what applies to which model, what conflicts, and how the
models' recommendations are honoured (runtime.contract.settings, standard library only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.contract.settings import (
    EnsembleMode,
    ModelFacts,
    ModelFormat,
    OptionError,
    RunRequest,
    resolve,
)

UNET = ModelFacts("unet", ModelFormat.CONFIG, overlap=0.25, threshold=0.3)
NNUNET = ModelFacts("nnunet", ModelFormat.NNUNET, overlap=0.5)
PROGRAM = ModelFacts("program", ModelFormat.PROGRAM, fixed_patch=(8, 8, 8))


def _refused(request: RunRequest, models: list[ModelFacts] | None = None) -> str:
    with pytest.raises(OptionError) as refused:
        resolve(request, models)
    text = str(refused.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("option", "value"),
    [("folds", ("0", "1")), ("checkpoint", "best"), ("spacing", (1.0, 0.5, 0.5))],
)
def test_nnunet_options_are_refused_for_models_that_are_not_nnunet_folders(
    option: str, value: object
) -> None:
    request = RunRequest(models=("m",), **{option: value})  # type: ignore[arg-type]
    resolve(request)  # before loading, the format is unknown: nothing to refuse yet
    flag = "--" + option
    for facts in (UNET, PROGRAM):
        text = _refused(request, [facts])
        assert text.startswith(f"{flag} concern nnU-Net trained-model folders only")
        assert f"{facts.name} is not one" in text
    settings = resolve(request, [NNUNET])
    assert getattr(settings.nnunet, option) == value
    # in an ensemble they apply to its nnU-Net members
    resolve(RunRequest(models=("a", "b"), **{option: value}), [UNET, NNUNET])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"threshold": 0.3, "hysteresis": (0.2, 0.6)},
            "--threshold does not combine with --hysteresis",
        ),
        (
            {"threshold": 0.3, "foreground_fraction": 0.1},
            "--threshold does not combine with --hysteresis or --foreground-fraction",
        ),
        (
            {"hysteresis": (0.2, 0.6), "foreground_fraction": 0.1},
            "--hysteresis does not combine with --foreground-fraction",
        ),
        (
            {"postprocess_file": Path("p.json"), "threshold": 0.4, "fill_holes": True},
            "--postprocess p.json sets the threshold and post-processing; drop --threshold, "
            "--fill-holes",
        ),
        ({"probability_encoding": "float16"}, "--probability-encoding applies to"),
        ({"ensemble_mode": EnsembleMode.LOGITS}, "--ensemble-mode applies to an ensemble"),
        ({"ensemble_weights": (1.0,)}, "--ensemble-weights applies to an ensemble"),
        ({"overlap": 1.0, "batch_size": 0}, "--overlap must be in [0, 1), got 1.0; --batch"),
    ],
)
def test_conflicting_or_inapplicable_options_are_refused_before_loading(
    changes: dict[str, object], expected: str
) -> None:
    assert expected in _refused(RunRequest(models=("m",), **changes))  # type: ignore[arg-type]


def test_a_patch_other_than_an_exported_programs_window_is_refused() -> None:
    text = _refused(RunRequest(models=("p",), patch_size=(16, 16, 16)), [PROGRAM])
    assert "--patch-size 16x16x16: model program was exported for windows of 8x8x8" in text
    assert resolve(RunRequest(models=("p",), patch_size=(8, 8, 8)), [PROGRAM]).patch_size


def test_a_models_recommendations_are_honoured_and_said() -> None:
    settings = resolve(RunRequest(models=("u",)), [UNET])
    assert settings.mask.threshold == 0.3 and settings.models[0].overlap == 0.25
    assert "threshold = 0.3 (recommended by unet)" in settings.notes
    asked = resolve(RunRequest(models=("u",), threshold=0.6, overlap=0.1), [UNET])
    assert asked.mask.threshold == 0.6 and asked.models[0].overlap == 0.1 and not asked.notes
    plain = resolve(RunRequest(models=("n",)), [NNUNET])
    assert plain.mask.threshold == 0.5 and plain.mask.threshold_source.startswith("default")


def test_ensemble_members_keep_their_overlaps_and_must_agree_on_a_threshold() -> None:
    other = ModelFacts("other", ModelFormat.CONFIG, overlap=0.5, threshold=0.3)
    settings = resolve(RunRequest(models=("u", "o", "n")), [UNET, other, NNUNET])
    assert [m.overlap for m in settings.models] == [0.25, 0.5, 0.5]
    assert settings.mask.threshold == 0.3
    assert settings.mask.threshold_source == "recommended by unet, other (nnunet recommends none)"
    assert settings.ensemble is not None and settings.ensemble.weights == pytest.approx(
        (1 / 3,) * 3
    )

    disagreeing = ModelFacts("sharp", ModelFormat.CONFIG, threshold=0.7)
    text = _refused(RunRequest(models=("u", "s")), [UNET, disagreeing])
    assert text.startswith("the models recommend different thresholds (unet 0.3, sharp 0.7)")
    assert "--threshold" in text
    chosen = resolve(RunRequest(models=("u", "s"), threshold=0.5), [UNET, disagreeing])
    assert chosen.mask.threshold == 0.5
    # a rule that does not use the threshold needs no agreement
    rule = resolve(RunRequest(models=("u", "s"), hysteresis=(0.2, 0.6)), [UNET, disagreeing])
    assert rule.mask.rule == "hysteresis" and rule.keeps_probability


def test_weights_are_normalized_and_rules_compare_as_saved() -> None:
    settings = resolve(
        RunRequest(
            models=("a", "b"),
            ensemble_weights=(3.0, 1.0),
            ensemble_mode=EnsembleMode.LOGITS,
            foreground_fraction=0.1,
            save_probabilities=Path("probs"),
            probability_encoding="float16",  # type: ignore[arg-type]
        )
    )
    assert settings.ensemble is not None
    assert settings.ensemble.weights == (0.75, 0.25) and settings.ensemble.mode == "logits"
    assert settings.mask.rule == "per-volume" and settings.mask_encoding == "float16"
    assert "2 --ensemble-weights given for 3 model(s)" in _refused(
        RunRequest(models=("a", "b", "c"), ensemble_weights=(1.0, 2.0))
    )
