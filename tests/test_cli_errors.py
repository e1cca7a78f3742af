"""What a new user sees for the common mistakes: the subcommand's usage, the option they meant,
and a loud warning when the demo model stands in for theirs."""

from __future__ import annotations

import os
import tomllib
import zipfile
from pathlib import Path

import pytest

from bundler.__main__ import main as bundler_main
from bundler.commands import BUNDLER_EXTRA_MODULES
from bundler.commands.kernel import shown_command
from runtime.__main__ import main as runtime_main
from runtime.samples.demo import SAMPLE_MARKER, demo_warning
from runtime.samples.sample import write_sample
from tests.support.venvs import copy_venv, run_checked, session_template

ROOT = Path(__file__).resolve().parents[1]


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


# --- the bundler -------------------------------------------------------------------------------

_KERNEL = ["kernel", "-o", "kernel", "--id", "alice/vesuvius-offline", "--title", "Vesuvius offline",
           "--wheelhouse", "alice/vesuvius-wheels"]  # fmt: skip


def test_a_bundler_typo_shows_the_commands_usage_and_the_option_meant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _error_of(bundler_main, ["build", "imagecodecs", "--optinal", "imagecodecs"], capsys)
    assert err.startswith("usage: python -m bundler build ")
    assert "unrecognized arguments: --optinal imagecodecs (did you mean --optional?)" in err


def test_kernel_model_points_at_model_source(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*_KERNEL, "--competition", "vesuvius-challenge-surface-detection", "--model", "demo"]
    err = _error_of(bundler_main, argv, capsys)
    assert err.startswith("usage: python -m bundler kernel ")
    assert "unrecognized arguments: --model demo; a kernel's models are Kaggle inputs" in err
    assert "--model-source OWNER/MODEL/FRAMEWORK/VARIATION/VERSION" in err


@pytest.mark.parametrize(
    "option, url, wanted",
    [
        ("--competition", "https://www.kaggle.com/competitions/vesuvius-challenge-surface-detection/data",
         "give the slug, not the page's address: --competition vesuvius-challenge-surface-detection"),
        ("--competition", "kaggle.com/c/vesuvius-challenge-surface-detection",
         "--competition vesuvius-challenge-surface-detection"),
        ("--wheelhouse", "https://www.kaggle.com/datasets/alice/vesuvius-wheels/versions/2",
         "give the reference, not the page's address: --wheelhouse alice/vesuvius-wheels"),
        ("--model-source", "https://www.kaggle.com/models/alice/vesuvius-unet/pyTorch/default/1",
         "--model-source alice/vesuvius-unet/pyTorch/default/1"),
    ],
)  # fmt: skip
def test_a_url_where_a_reference_belongs_names_the_reference(
    option: str, url: str, wanted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = {"--competition": "vesuvius-challenge-surface-detection",
             "--model-source": "alice/vesuvius-unet/pyTorch/default/1"}  # fmt: skip
    given[option] = url
    argv = [*_KERNEL, *(t for pair in given.items() for t in pair), "-o", str(tmp_path / "k")]
    if option == "--wheelhouse":
        argv[argv.index("--wheelhouse") + 1] = url
    assert bundler_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} {url!r} is a URL") and wanted in err
    assert not (tmp_path / "k").exists()  # nothing written


def test_verify_of_a_missing_folder_says_it_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bundler_main(["verify", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nowhere'} does not exist: give the wheelhouse folder that "
        "python -m bundler build -o DIR wrote\n"
    )


def test_the_notebook_shows_the_output_folder_by_name() -> None:
    argv = ["kernel", "-o", "/home/me/.nox/kaggle/tmp/kernel", "--id", "a/b", "--output=/x/y",
            "-o/abs/z"]  # fmt: skip
    assert shown_command(argv) == ["kernel", "-o", "kernel", "--id", "a/b", "--output=y", "-oz"]


def test_the_bundler_extra_list_is_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert sorted(BUNDLER_EXTRA_MODULES.values()) == sorted(
        project["optional-dependencies"]["bundler"]
    )


@pytest.mark.slow
def test_the_bundler_without_its_extras_is_one_line_with_the_install_command(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A venv with only pip (no packaging, build, nbformat), the bundler on PYTHONPATH."""
    bare = copy_venv(session_template(tmp_path_factory.getbasetemp()), tmp_path / "venv")
    sources = tmp_path / "sources"  # not a clone: no pyproject.toml beside the packages
    sources.mkdir()
    for package in ("bundler", "runtime"):
        (sources / package).symlink_to(ROOT / package)
    env = {**os.environ, "PYTHONPATH": str(sources)}

    for argv in (["build", "--help"], ["build", "imagecodecs"], ["verify", "x"]):
        result = run_checked([str(bare.python), "-m", "bundler", *argv], env=env, check=False)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == (
            "error: the bundler needs its extras (no module named 'packaging' here): "
            "python -m pip install 'packaging>=24' 'pip>=24.2,<26.4' 'build>=1.2' 'nbformat>=5.9'\n"
        ), argv
