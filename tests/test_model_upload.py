"""``python -m bundler model``: a model is checked on the CPU before its upload folder is written."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundler.commands.model import kernel_handoff
from bundler.errors import BundlerError
from bundler.kaggle.model_upload import MODEL_CHECK_INSTALL, prepare_model
from runtime.inference.models import load_model

ROOT = Path(__file__).resolve().parent.parent
# torch.jit.script is deprecated in recent torch, but competitors' TorchScript files still exist.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


class _Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Flat(torch.nn.Module):
    """Loads fine, but returns (N, -1) instead of (N, C, Z, Y, X) logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _model_folder(folder: Path, module: torch.nn.Module) -> Path:
    folder.mkdir(parents=True)
    torch.jit.script(module).save(str(folder / "model.pt"))
    config = {
        "format": "kaggle-offline-unet", "format_version": 1, "program": "model.pt",
        "inference": {"patch_size": [16, 16, 16]},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"")
    return folder


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    return _model_folder(tmp_path / "my-model", _Conv())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", "model", *args], capture_output=True, text=True,
        cwd=ROOT, check=False,
    )  # fmt: skip


def test_a_model_that_runs_gets_an_instance_folder(tmp_path: Path, good_model: Path) -> None:
    out = tmp_path / "upload"
    completed = _cli(str(good_model), "-o", str(out), "--id", "alice/tiny-unet", "-q")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert "one 16x16x16 window on the CPU" in lines[1]
    assert f"next: kaggle models create -p {out}" in lines
    assert f"next: kaggle models instances create -p {out} --dir-mode zip" in lines
    assert "kernel: --model-source alice/tiny-unet/pyTorch/default/1" in lines
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model-instance-metadata.json", "model-metadata.json", "model.pt",
    ]  # fmt: skip
    instance = json.loads((out / "model-instance-metadata.json").read_text())
    assert {k: instance[k] for k in ("ownerSlug", "modelSlug", "instanceSlug", "framework")} == {
        "ownerSlug": "alice", "modelSlug": "tiny-unet", "instanceSlug": "default",
        "framework": "pyTorch",
    }  # fmt: skip
    assert instance["licenseName"] == "Apache 2.0" and instance["fineTunable"] is False
    model = json.loads((out / "model-metadata.json").read_text())
    assert model["isPrivate"] is True and model["slug"] == "tiny-unet" and model["description"]
    load_model(out)  # the folder as Kaggle mounts it is a model on its own


def test_a_second_upload_is_a_new_version_and_keeps_the_model_card(
    tmp_path: Path, good_model: Path
) -> None:
    out = tmp_path / "upload"
    prepare_model(good_model, out, model_id="alice/tiny-unet")
    card = out / "model-metadata.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "title": "My edited card"}))
    (good_model / "notes.txt").write_text("new file")
    upload = prepare_model(good_model, out, model_id="alice/tiny-unet")
    assert upload.update
    assert upload.commands[0].startswith(
        f"kaggle models instances versions create alice/tiny-unet/pyTorch/default -p {out} -n "
    )
    assert upload.kernel_option == "--model-source alice/tiny-unet/pyTorch/default/VERSION"
    assert json.loads(card.read_text())["title"] == "My edited card"
    assert (out / "notes.txt").is_file() and not upload.unchanged
    # Nothing changed since: nothing to upload.
    assert prepare_model(good_model, out, model_id="alice/tiny-unet").unchanged
    # Another model into the same folder: a new model, with a card of its own.
    other = prepare_model(good_model, out, model_id="alice/other-unet")
    assert not other.update and other.commands[0] == f"kaggle models create -p {out}"
    assert json.loads(card.read_text())["slug"] == "other-unet"


def test_as_a_dataset(tmp_path: Path, good_model: Path) -> None:
    out = tmp_path / "upload"
    upload = prepare_model(good_model / "model.pt", out, model_id="alice/tiny-weights",
                           as_dataset=True)  # fmt: skip
    assert upload.kernel_option == "--model-dataset alice/tiny-weights/model.pt"
    assert upload.commands == [f"kaggle datasets create -p {out} --dir-mode zip"]
    metadata = json.loads((out / "dataset-metadata.json").read_text())
    assert metadata["id"] == "alice/tiny-weights" and len(metadata["licenses"]) == 1
    again = prepare_model(good_model / "model.pt", out, model_id="alice/tiny-weights",
                          as_dataset=True)  # fmt: skip
    assert again.commands[0].startswith(f"kaggle datasets version -p {out} -m ")


@pytest.mark.parametrize("broken", ["load", "run"])
def test_a_model_that_fails_to_load_or_run_is_refused_before_anything_is_written(
    tmp_path: Path, broken: str
) -> None:
    if broken == "load":
        source = tmp_path / "pickled.pt"
        torch.save(_Conv(), source)  # needs arbitrary unpickling: refused by load_model
        message = "refused: .*unpickling it could run arbitrary code"
    else:
        source = _model_folder(tmp_path / "flat", _Flat())
        message = f"refused: {source} loads but fails .* on the CPU: .*expected \\(N, C, Z, Y, X\\)"
    out = tmp_path / "upload"
    with pytest.raises(BundlerError, match=message):
        prepare_model(source, out, model_id="alice/tiny-unet")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name])
    completed = _cli(str(source), "-o", str(out), "--id", "alice/tiny-unet", "-q")
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_id": "alice"}, "--id 'alice': give OWNER/SLUG"),
        ({"framework": "jax"}, "use pyTorch"),
        ({"variation": "Fold 0"}, "--variation 'Fold 0'"),
        ({"licence": "WTFPL"}, "--license 'WTFPL'"),
    ],
)
def test_bad_ids_are_refused_before_the_check(
    tmp_path: Path, good_model: Path, changes: dict[str, str], message: str
) -> None:
    arguments = {"model_id": "alice/tiny-unet", **changes}
    with pytest.raises(BundlerError, match=message):
        prepare_model(good_model, tmp_path / "upload", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "upload").exists()


def test_a_folder_of_other_files_is_never_replaced(tmp_path: Path, good_model: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(BundlerError, match="not empty and not a model folder"):
        prepare_model(good_model, out, model_id="alice/tiny-unet")
    assert [p.name for p in out.iterdir()] == ["thesis.pdf"]


def test_in_place_writes_only_the_metadata(good_model: Path) -> None:
    upload = prepare_model(good_model, good_model, model_id="alice/tiny-unet")
    assert (good_model / "model-instance-metadata.json").is_file()
    assert upload.files == ["__pycache__/x.pyc", "config.json", "model.pt"]


def test_an_unchanged_model_says_there_is_nothing_to_upload(
    tmp_path: Path, good_model: Path
) -> None:
    out = tmp_path / "upload"
    args = (str(good_model), "-o", str(out), "--id", "alice/tiny-unet", "-q")
    assert _cli(*args).returncode == 0
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert "next: " not in again.stdout
    assert f"nothing to upload: {out} holds the same files as before this run" in again.stdout


def test_the_hand_off_to_kernel_fills_what_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner, a notebook id and title from the model's, the wheelhouse built beside it."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    (house / "manifest.json").write_text(
        json.dumps({"wheels": [{"name": "a", "version": "1", "sha256": "0" * 64}]})
    )
    (house / "dataset-metadata.json").write_text(json.dumps({"id": "alice/vesuvius-wheels"}))
    monkeypatch.chdir(tmp_path)
    option = "--model-source alice/vesuvius-unet/pyTorch/default/1"

    command = kernel_handoff("alice/vesuvius-unet", option, tmp_path / "model-upload")

    assert command == (
        "python -m bundler kernel -o kernel --id alice/vesuvius-unet-submission "
        "--title 'vesuvius unet submission' --wheelhouse alice/vesuvius-wheels "
        "--competition vesuvius-challenge-surface-detection " + option
    )
    # It runs as printed: the kernel command accepts it (a title whose slug is the id's).
    completed = subprocess.run(
        [sys.executable, "-m", *shlex.split(command)[2:]], capture_output=True, text=True,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert completed.returncode == 0 and "warning" not in completed.stderr, completed.stderr
    # No wheelhouse beside it: only that stays a placeholder.
    shutil.rmtree(house)
    assert "--wheelhouse alice/WHEELHOUSE " in kernel_handoff(
        "alice/vesuvius-unet", option, tmp_path / "model-upload"
    )


def test_the_missing_torch_message_is_the_guides_command() -> None:
    """README.md's step 4 installs exactly what the model check's error asks for."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    step = readme.split("### 4.", 1)[1].split("### 5.", 1)[0]
    assert MODEL_CHECK_INSTALL in step
