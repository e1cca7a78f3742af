"""What a new user sees for the common mistakes: the subcommand's usage, the option they meant,
and a loud warning when the demo model stands in for theirs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from runtime.__main__ import main as runtime_main
from runtime.samples.demo import SAMPLE_MARKER, demo_warning
from runtime.samples.sample import write_sample


def _error_of(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)  # type: ignore[operator]
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_an_option_typo_shows_the_subcommands_usage_and_the_option_meant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _error_of(runtime_main, ["predict", "data", "--thresold", "0.3"], capsys)
    assert err.startswith("usage: python -m runtime predict ")
    assert err.rstrip().endswith(
        "python -m runtime predict: error: unrecognized arguments: --thresold 0.3 "
        "(did you mean --threshold?)"
    )


def test_a_typo_in_an_option_with_its_value_attached(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_of(runtime_main, ["doctor", "--jsn=yes"], capsys)
    assert "usage: python -m runtime doctor" in err and "(did you mean --json?)" in err


def test_a_command_typo_suggests_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_of(runtime_main, ["predcit", "data"], capsys)
    assert "invalid choice: 'predcit'" in err and err.rstrip().endswith("(did you mean predict?)")


def test_nothing_close_suggests_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_of(runtime_main, ["predict", "data", "--zzzzzz"], capsys)
    assert err.rstrip().endswith("unrecognized arguments: --zzzzzz")


def test_the_demo_model_is_quiet_on_the_sample_data_only(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "sample", n=1, shape=(8, 16, 16))
    assert (sample / SAMPLE_MARKER).is_file()
    volume = next((sample / "test_images").glob("*.tif"))
    assert demo_warning([], sample) is None
    assert demo_warning(["demo"], volume) is None  # a volume of the sample
    real = tmp_path / "real"
    real.mkdir()
    assert "no --model was given" in (demo_warning([], real) or "")
    assert "--model demo" in (demo_warning(["demo"], real) or "")
    assert "--model demo" in (demo_warning(["my-model", "demo"], real) or "")  # in an ensemble
    assert demo_warning(["my-model"], real) is None


@pytest.mark.slow
def test_predict_without_a_model_outside_the_sample_says_loudly_it_is_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Data that is not the sample (no marker), no --model: the warning before and after."""
    data = write_sample(tmp_path / "data", n=1, shape=(16, 32, 32), seed=3)
    (data / SAMPLE_MARKER).unlink()
    output = tmp_path / "submission.zip"

    assert runtime_main(["predict", str(data), "-o", str(output), "--device", "cpu"]) == 0

    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 6 and warnings[:3] == warnings[3:]
    assert "NOT A REAL MODEL" in warnings[1]
    assert err.index(warnings[0]) < err.index("model: demo")  # said before the run
    assert err.rstrip().endswith(warnings[2])  # and last
    with zipfile.ZipFile(output) as archive:
        assert len(archive.namelist()) == 1  # the run itself is unchanged
