"""``python -m bundler kernel``: kernel-metadata.json, the notebook, and the notebook run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bundler.commands.kernel import predict_tokens
from bundler.errors import BundlerError
from bundler.kaggle import notebook_inputs
from bundler.kaggle.kernel import KernelRequest, metadata_problems, write_kernel
from bundler.kaggle.notebook import INPUT_ROOT_VARIABLE, WORKING_DIR_VARIABLE
from runtime.installer import mounts
from tests.support.netns import offline, require_netns
from tests.support.notebooks import code_cells
from tests.support.wheelhouses import kernel_profile, write_wheelhouse

ROOT = Path(__file__).resolve().parent.parent
SLOW = pytest.mark.slow
COMPETITION = "vesuvius-challenge-surface-detection"
MODEL_SOURCE = "alice/demo-unet/pyTorch/default/1"
BASE = [
    "--id", "alice/offline-submission", "--title", "Offline submission",
    "--wheelhouse", "alice/kaggle-offline-wheels", "--competition", COMPETITION,
]  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args], capture_output=True, text=True, cwd=ROOT,
        check=False,
    )  # fmt: skip


def _request(**changes: object) -> KernelRequest:
    fields: dict[str, object] = {
        "kernel_id": "alice/offline-submission",
        "title": "Offline submission",
        "wheelhouse": "alice/kaggle-offline-wheels",
        "competition": COMPETITION,
        "models": [("model", MODEL_SOURCE)],
    }
    fields.update(changes)
    return KernelRequest(**fields)  # type: ignore[arg-type]


# --- kernel-metadata.json ------------------------------------------------------------------------
def test_every_field_is_written_with_its_type_and_the_internet_is_off(tmp_path: Path) -> None:
    completed = _cli("kernel", "-o", str(tmp_path / "k"), *BASE, "--model-source", MODEL_SOURCE)
    assert completed.returncode == 0, completed.stderr
    metadata = json.loads((tmp_path / "k" / "kernel-metadata.json").read_text())
    types = {
        "id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
        "is_private": bool, "enable_gpu": bool, "enable_tpu": bool, "enable_internet": bool,
        "machine_shape": str, "dataset_sources": list, "competition_sources": list,
        "kernel_sources": list, "model_sources": list, "keywords": list,
        "docker_image_pinning_type": str,
    }  # fmt: skip
    assert {name: type(value) for name, value in metadata.items()} == types
    assert metadata["enable_internet"] is False, "nothing was said about the internet: off"
    assert metadata["is_private"] is True and metadata["enable_gpu"] is True
    assert metadata["machine_shape"] == "NvidiaTeslaT4"
    assert metadata["kernel_type"] == "notebook" and metadata["language"] == "python"
    assert metadata["code_file"] == "offline-submission.ipynb"
    assert (tmp_path / "k" / metadata["code_file"]).is_file()
    assert metadata["dataset_sources"] == ["alice/kaggle-offline-wheels"]
    assert metadata["competition_sources"] == [COMPETITION]
    assert metadata["model_sources"] == [MODEL_SOURCE]
    assert metadata_problems(metadata) == []
    assert completed.stdout.splitlines()[-2] == f"next: kaggle kernels push -p {tmp_path / 'k'}"


def test_cpu_and_model_datasets(tmp_path: Path) -> None:
    result = write_kernel(
        tmp_path,
        _request(
            models=[("dataset", "alice/unet-weights/fold0"), ("model", MODEL_SOURCE),
                    ("dataset", "alice/kaggle-offline-wheels/extra")],
            accelerator=None, predict_options=["--ensemble-weights", "1,2,1"],
        ),
    )  # fmt: skip
    metadata = result.metadata
    assert metadata["enable_gpu"] is False and metadata["machine_shape"] == ""
    assert metadata["dataset_sources"] == ["alice/kaggle-offline-wheels", "alice/unet-weights"]
    assert metadata["model_sources"] == [MODEL_SOURCE]
    assert metadata_problems(metadata) == []


def test_the_cli_checks_of_a_kernel_push_are_kept() -> None:
    base = {
        "id": "alice/offline-submission", "title": "Offline submission",
        "code_file": "offline-submission.ipynb", "language": "python", "kernel_type": "notebook",
        "is_private": True, "enable_gpu": False, "enable_tpu": False, "enable_internet": False,
        "machine_shape": "", "dataset_sources": ["alice/wheels"],
        "competition_sources": [COMPETITION], "kernel_sources": [], "model_sources": [],
        "keywords": [], "docker_image_pinning_type": "original",
    }  # fmt: skip
    assert metadata_problems(base) == []
    broken = {
        "enable_internet": "true",  # a string, as `kaggle kernels init` writes it
        "title": "Shor",
        "model_sources": ["alice/unet/pyTorch/default"],
        "dataset_sources": ["alice"],
        "id": "alice/kern",
        "machine_shape": "NvidiaTeslaP100",
        "docker_image_pinning_type": "newest",
    }
    for name, value in broken.items():
        problems = metadata_problems({**base, name: value})
        assert problems and all(p.startswith("kernel-metadata.json: ") for p in problems), name


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--id", "alice/kern", "'kern' must be 5-50 lower-case letters"),
        ("--id", "alice/offline-submission/3", "cannot name a version"),
        ("--id", "offline-submission", "give OWNER/SLUG"),
        ("--title", "Shor", "needs at least 5 characters"),
        ("--model-source", "alice/demo-unet/pyTorch/default", "give OWNER/MODEL/FRAMEWORK"),
        ("--model-source", "alice/demo-unet/pyTorch/default/latest", "whole number"),
        ("--model-source", "alice/demo-unet/tensorFlow2/default/1", "use pyTorch"),
        ("--model-dataset", "alice/weights/../../etc", "stay inside it"),
        ("--accelerator", "NvidiaTeslaP100", "retired, Kaggle runs NvidiaTeslaT4 instead"),
        ("--accelerator", "nvidiateslat4", "did you mean NvidiaTeslaT4?"),
        ("--accelerator", "TpuV5E8", "a TPU cannot run"),
        ("--wheelhouse", "alice", "give OWNER/SLUG"),
        ("--competition", "Vesuvius Challenge", "lower-case letters"),
    ],
)
def test_a_bad_reference_is_one_line_before_any_file(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    args = dict(zip(BASE[::2], BASE[1::2], strict=True))
    args["--model-source"] = MODEL_SOURCE
    if option == "--model-dataset":
        del args["--model-source"]
    args[option] = value
    argv = [part for pair in args.items() for part in pair]
    completed = _cli("kernel", "-o", str(tmp_path / "k"), *argv)
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith("error: ") and message in completed.stderr
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tta", "0,5"], "argument --tta: mirror axes must be distinct among 0, 1, 2"),
        (["--threshold", "1.5"], "argument --threshold: must be a probability in (0, 1)"),
        (["--overlap", "1"], "argument --overlap: must be in [0, 1)"),
        (["--time-budget", "soon"], "argument --time-budget: give a duration"),
        (["--device", "gpu"], "argument --device: use auto, cpu, cuda or cuda:N"),
        (["--ensemble-mode", "mean"], "argument --ensemble-mode: invalid choice: 'mean'"),
        # predict accepts these two, so checking its verdict runs a whole predict
        pytest.param(["--model", "demo"], "unrecognized arguments: --model demo", marks=SLOW),
        pytest.param(
            ["--time", "8h"], "unrecognized arguments: --time 8h", marks=SLOW
        ),  # full names
    ],
)
def test_predict_options_are_checked_by_predict_itself_before_any_file(
    tmp_path: Path, options: list[str], message: str
) -> None:
    completed = _cli("kernel", "-o", str(tmp_path / "k"), *BASE, "--model-source", MODEL_SOURCE,
                     *options)  # fmt: skip
    assert completed.returncode == 2
    assert message in completed.stderr
    assert not (tmp_path / "k").exists()
    # predict gives the same verdict on the same tokens
    predicted = subprocess.run(
        [sys.executable, "-m", "runtime", "predict", str(tmp_path), *options],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    if options[0] not in ("--model", "--time"):
        assert predicted.returncode == 2 and message in predicted.stderr


def test_weights_must_match_the_models_before_any_file(tmp_path: Path) -> None:
    with pytest.raises(BundlerError, match=r"--ensemble-weights applies to an ensemble"):
        write_kernel(tmp_path / "k", _request(predict_options=["--ensemble-weights", "1,2"]))
    with pytest.raises(BundlerError, match="--model-source OWNER/MODEL"):
        write_kernel(tmp_path / "k", _request(models=[]))
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--threshold", "0.3", "--hysteresis", "0.2,0.6"],
            "--threshold does not combine with --hysteresis or --foreground-fraction",
        ),
        (
            ["--postprocess", "postprocess.json", "--threshold", "0.4"],
            "--postprocess postprocess.json sets the threshold and post-processing; drop "
            "--threshold",
        ),
        (["--ensemble-mode", "logits"], "--ensemble-mode applies to an ensemble"),
        (["--probability-encoding", "float16"], "--probability-encoding applies to"),
    ],
)
def test_predict_option_combinations_are_resolved_as_predict_resolves_them_before_any_file(
    tmp_path: Path, options: list[str], message: str
) -> None:
    completed = _cli("kernel", "-o", str(tmp_path / "k"), *BASE, "--model-source", MODEL_SOURCE,
                     *options)  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line.startswith("error: predict options: ") and message in line
    assert not (tmp_path / "k").exists()
    # predict refuses the same tokens with the same words (before reading its input)
    predicted = subprocess.run(
        [sys.executable, "-m", "runtime", "predict", str(tmp_path / "nothing"), *options],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert predicted.returncode == 2 and message in predicted.stderr


def test_predict_options_reach_the_notebook_exactly_as_typed() -> None:
    argv = ["kernel", "-o", "k", *BASE, "--tta", "0,1,2", "--model-source", MODEL_SOURCE,
            "--time-budget=8h", "--no-compile", "--cpu", "--min-component-voxels", "20000"]  # fmt: skip
    assert predict_tokens(argv) == [
        "--tta", "0,1,2", "--time-budget=8h", "--no-compile", "--min-component-voxels", "20000",
    ]  # fmt: skip


def test_a_title_that_is_not_the_slug_warns_like_the_cli(tmp_path: Path) -> None:
    result = write_kernel(tmp_path, _request(title="My great submission"))
    assert result.warnings and "makes the slug 'my-great-submission'" in result.warnings[0]


def test_a_new_id_replaces_the_old_notebook(tmp_path: Path) -> None:
    write_kernel(tmp_path, _request())
    write_kernel(tmp_path, _request(kernel_id="alice/second-submission", title="Second submission"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kernel-metadata.json", "second-submission.ipynb",
    ]  # fmt: skip


# --- the notebook ----------------------------------------------------------------------------------
def test_the_notebook_is_valid_nbformat_4_without_outputs_or_mount_paths(tmp_path: Path) -> None:
    request = _request(
        models=[("model", MODEL_SOURCE), ("dataset", "alice/unet-weights/fold0")],
        predict_options=["--tta", "0,1,2"],
    )
    result = write_kernel(tmp_path, request)
    text = result.notebook.read_text()
    notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) == 7
    # A markdown cell per step, saying what it does and (but for the settings) what to do when
    # it fails; every code cell short enough to read; nothing about how this project tests it.
    steps = [c.source for c in notebook.cells if c.cell_type == "markdown"][1:]
    assert [s.splitlines()[0] for s in steps] == [
        "## 1. Settings", "## 2. Install from the wheelhouse, offline", "## 3. Check the kernel",
        "## 4. Find the competition and the models", "## 5. Predict", "## 6. Check submission.zip",
    ]  # fmt: skip
    assert all("**If it fails**" in step for step in steps[1:])
    assert max(len(cell.source.splitlines()) for cell in code) <= 35
    assert "noxfile" not in text and "simulation" not in text
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    sources = "\n".join(cell.source for cell in code)
    # No input is hard-coded: /kaggle/input appears only as the root that is searched.
    assert re.findall(r"/kaggle/input/?[\w.-]+", sources) == []
    # Each slug appears only in its Kaggle reference in the settings, never in a path.
    references = ['"alice/kaggle-offline-wheels"', f'"{COMPETITION}"', f'"{MODEL_SOURCE}"',
                  '"alice/unet-weights"']  # fmt: skip
    for reference in references:
        assert sources.count(reference) == 1
        sources = sources.replace(reference, "")
    for slug in ("kaggle-offline-wheels", COMPETITION, "demo-unet", "unet-weights"):
        assert slug not in sources
    assert '"/kaggle/working"' in sources and "submission.zip" in sources
    assert "!" not in "".join(line[:1] for line in sources.splitlines()), "no shell magics"
    # Generating again gives the same bytes (deterministic cell ids).
    assert write_kernel(tmp_path, request).notebook.read_text() == text


def _tree(root: Path, layout: str) -> dict[str, Path]:
    """A fake input root with a wheelhouse, a competition and a model, mounted as Kaggle does."""
    if layout == "new":
        places = {
            "wheelhouse": root / "datasets" / "alice" / "kaggle-offline-wheels",
            "competition": root / "competitions" / COMPETITION,
            "model": root / "models" / "alice" / "demo-unet" / "pytorch" / "default" / "1",
        }
    else:
        places = {
            "wheelhouse": root / "kaggle-offline-wheels",
            "competition": root / COMPETITION,
            "model": root / "demo-unet" / "pytorch" / "default" / "1",
        }
    for place in places.values():
        place.mkdir(parents=True)
    return places


@pytest.mark.parametrize("layout", ["new", "old"])
def test_the_finder_locates_every_input_in_both_layouts(tmp_path: Path, layout: str) -> None:
    places = _tree(tmp_path, layout)
    (places["wheelhouse"] / "bootstrap.py").write_text("")
    (places["wheelhouse"] / "manifest.json").write_text("{}")
    (places["competition"] / "test_images").mkdir()
    # A decoy: a folder of the same name deep inside the competition data is never preferred.
    (places["competition"] / "extra" / "kaggle-offline-wheels").mkdir(parents=True)
    root = tmp_path
    assert notebook_inputs.wheelhouse_bootstrap(root, "alice/kaggle-offline-wheels") == (
        places["wheelhouse"] / "bootstrap.py"
    )
    assert mounts.competition_root(root, COMPETITION) == places["competition"]
    assert mounts.model_path(root, "model", MODEL_SOURCE) == places["model"]
    with pytest.raises(FileNotFoundError, match=r"dataset alice/other-weights is not attached"):
        mounts.dataset_mount(root, "alice/other-weights")
    with pytest.raises(FileNotFoundError, match="not attached: no bootstrap.py beside a manifest"):
        (places["wheelhouse"] / "manifest.json").unlink()
        notebook_inputs.wheelhouse_bootstrap(root, "alice/kaggle-offline-wheels")


def test_the_wheelhouse_search_finds_a_wheelhouse_folder_inside_its_dataset(
    tmp_path: Path,
) -> None:
    inner = tmp_path / "datasets" / "alice" / "kaggle-offline-wheels" / "wheelhouse"
    inner.mkdir(parents=True)
    for name in ("bootstrap.py", "manifest.json"):
        (inner / name).write_text("")
    assert notebook_inputs.wheelhouse_bootstrap(tmp_path, "alice/kaggle-offline-wheels") == (
        inner / "bootstrap.py"
    )


def test_the_finder_never_lists_data_folders(tmp_path: Path) -> None:
    images = tmp_path / "competitions" / COMPETITION / "test_images"
    (images / "deep" / "demo-unet" / "pytorch" / "default" / "1").mkdir(parents=True)
    seen = [folder for folder, _ in mounts.input_folders(tmp_path)]
    assert images.parent in seen and not any(
        images in folder.parents or folder == images for folder in seen
    )


def _wheelhouse(folder: Path) -> None:
    """A wheelhouse with nothing to install (this interpreter has the runtime already)."""
    write_wheelhouse(folder, [], target=kernel_profile(), flat=True)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_the_notebook_locates_its_inputs_in_both_layouts(tmp_path: Path, layout: str) -> None:
    """The settings, finder and locating cells, run as the kernel runs them."""
    root = tmp_path / "input"
    places = _tree(root, layout)
    _wheelhouse(places["wheelhouse"])
    (places["model"] / "model.pt2").write_bytes(b"")
    result = write_kernel(tmp_path / "kernel", _request())
    env = {**os.environ, INPUT_ROOT_VARIABLE: str(root), WORKING_DIR_VARIABLE: str(tmp_path)}
    cells = code_cells(json.loads(result.notebook.read_text()))
    # The settings, the wheelhouse search and the locating cell (the install is left out here).
    cells = [
        *cells[:2],
        "print(f'wheelhouse   {wheelhouse_bootstrap(INPUT_ROOT, WHEELHOUSE).parent}')",
        cells[4],
    ]
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.support.notebooks import run_cells; "
         "run_cells(sys.argv[1:])", *cells],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert f"wheelhouse   {places['wheelhouse']}" in lines
    assert f"competition  {places['competition']}" in lines
    assert f"model        {places['model']}  ({MODEL_SOURCE})" in lines


@pytest.mark.netns
@pytest.mark.slow
def test_the_notebook_runs_in_a_simulated_offline_kernel(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """The generated cells, run in order in one process with no network over a fake
    /kaggle/input, write a submission.zip that the last cell validates. (The nox kaggle
    sessions do the same, in both layouts, in a fresh kernel that installs everything.)"""
    require_netns()
    from runtime.samples.demo import DEMO_DIR
    from runtime.samples.sample import write_sample

    root = tmp_path / "input"
    places = _tree(root, "new")
    _wheelhouse(places["wheelhouse"])
    write_sample(places["competition"], n=2, shape=(24, 40, 40), seed=3)
    for name in ("config.json", "weights.pt"):
        shutil.copy2(DEMO_DIR / name, places["model"] / name)
    result = write_kernel(
        tmp_path / "kernel",
        _request(
            accelerator=None, predict_options=["--min-component-voxels", "4", "--device", "cpu"]
        ),
    )
    working = tmp_path / "working"
    working.mkdir()
    env = {**os.environ, INPUT_ROOT_VARIABLE: str(root), WORKING_DIR_VARIABLE: str(working),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    runner = ROOT / "tests" / "support" / "notebooks.py"
    completed = subprocess.run(
        offline([sys.executable, str(runner), str(result.notebook)]),
        capture_output=True, text=True, cwd=working, env=env, check=False, timeout=300,
    )  # fmt: skip
    out = completed.stdout + completed.stderr
    assert completed.returncode == 0, out
    assert f"wheelhouse   {places['wheelhouse']}" in out
    assert f"model        {places['model']}" in out
    assert f"{working / 'submission.zip'}: valid, 2 masks" in out
    metrics = json.loads((working / "metrics.json").read_text())
    assert metrics["run"]["options"]["postprocess"]["min_component_voxels"] == 4
    assert len(code_cells(json.loads(result.notebook.read_text()))) == 7


def test_predict_itself_refuses_weights_that_do_not_match_its_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.__main__ import main

    status = main(["predict", str(tmp_path), "--model", "demo", "--ensemble-weights", "1,2"])
    assert status == 2
    assert capsys.readouterr().err == (
        "error: --ensemble-weights applies to an ensemble (several --model), not to one model\n"
    )


def test_settings_hold_the_options_exactly_whatever_their_characters(tmp_path: Path) -> None:
    options = ["--preview", 'pre\'view "dir" ü\\n', "--metrics", "runs/m.json"]
    result = write_kernel(tmp_path, _request(predict_options=options))
    settings = code_cells(json.loads(result.notebook.read_text()))[0]
    namespace: dict[str, object] = {}
    exec(settings, namespace)
    assert namespace["PREDICT_OPTIONS"] == options
    assert namespace["MODELS"] == [["model", MODEL_SOURCE, ""]]
    assert namespace["METRICS"] == Path("/kaggle/working/runs/m.json")


def test_generated_with_names_the_output_folder_not_this_machines_path(tmp_path: Path) -> None:
    out = tmp_path / "build" / ".nox" / "kernel"
    completed = _cli("kernel", "-o", str(out), *BASE, "--model-source", MODEL_SOURCE)
    assert completed.returncode == 0, completed.stderr
    text = next(out.glob("*.ipynb")).read_text()
    assert str(tmp_path) not in text
    assert (
        "Generated with `python -m bundler kernel -o kernel --id alice/offline-submission" in text
    )
