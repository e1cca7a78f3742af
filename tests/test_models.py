"""Loading the three model formats, the refusal of pickled objects, C-class logits, ensembles."""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from runtime.contract.errors import ModelError
from runtime.contract.settings import OptionError, resolve_ensemble
from runtime.inference.segmentation_model import Ensemble, SegmentationModel
from runtime.inference.unet import MODEL_FORMAT, MODEL_FORMAT_VERSION, UNet3D, UNetConfig
from runtime.pipeline.models import load_model

# The fixtures below make TorchScript files, which torch now deprecates but competitors still ship.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script.*deprecated:DeprecationWarning")

BATCH = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_unet_dir(
    folder: Path,
    *,
    out_channels: int = 1,
    foreground_class: int | None = None,
    seed: int = 0,
    **overrides: object,
) -> UNet3D:
    torch.manual_seed(seed)
    config = UNetConfig(channels=(4, 8), out_channels=out_channels)
    network = UNet3D(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), folder / "weights.pt")
    data = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": config.to_dict(),
        "weights": "weights.pt",
        "normalization": {"mean": 127.5, "std": 64.0},
        "foreground_class": foreground_class,
        "inference": {"patch_size": [16, 16, 16], "overlap": 0.5, "threshold": 0.5},
        **overrides,
    }
    (folder / "config.json").write_text(json.dumps(data))
    return network


class Ramp(torch.nn.Module):
    """A scriptable, exportable module whose output depends on its weights and position."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y[:, :1] * 2.0 - y[:, 1:]


def test_unet_folder_and_config_load_the_same_network(tmp_path: Path) -> None:
    network = write_unet_dir(tmp_path / "m")
    for spec in (tmp_path / "m", tmp_path / "m" / "config.json", str(tmp_path / "m")):
        model = load_model(spec)
        assert model.name == "m"
        assert model.normalization == (127.5, 64.0)
        assert model.size_multiple == 2
        assert model.recommended == {"patch_size": [16, 16, 16], "overlap": 0.5, "threshold": 0.5}
        with torch.no_grad():
            torch.testing.assert_close(model.foreground_logits(BATCH), network(BATCH))


def test_torchscript_and_export_programs_load(tmp_path: Path) -> None:
    module = Ramp().eval()
    with torch.no_grad():
        expected = module(BATCH)
    torch.jit.script(module).save(str(tmp_path / "ramp.ts"))
    scripted = load_model(tmp_path / "ramp.ts")
    assert scripted.static_input_shape is None and scripted.normalization == (0.0, 1.0)

    torch.export.save(torch.export.export(module, (BATCH,)), str(tmp_path / "ramp.pt2"))
    exported = load_model(tmp_path / "ramp.pt2")
    assert exported.static_input_shape == (2, 1, 8, 8, 8)
    assert exported.recommended == {"patch_size": [8, 8, 8], "batch_size": 2}

    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = torch.export.export(module, (BATCH,), dynamic_shapes=({0: batch},))
    torch.export.save(dynamic, str(tmp_path / "dynamic.pt2"))
    flexible = load_model(tmp_path / "dynamic.pt2")
    assert flexible.static_input_shape == (None, 1, 8, 8, 8)
    assert flexible.recommended == {"patch_size": [8, 8, 8]}

    with torch.no_grad():
        for model in (scripted, exported, flexible, exported.replicate("cpu")):
            torch.testing.assert_close(model.foreground_logits(BATCH), expected)
        torch.testing.assert_close(flexible.foreground_logits(BATCH[:1]), expected[:1])


def test_a_program_config_gives_a_program_its_normalization(tmp_path: Path) -> None:
    torch.jit.script(Ramp().eval()).save(str(tmp_path / "net.ts"))
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "program": "net.ts",
        "normalization": {"mean": 10.0, "std": 2.0},
        "inference": {"patch_size": [8, 8, 8]},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_model(tmp_path)
    assert model.normalization == (10.0, 2.0)
    assert model.recommended["patch_size"] == [8, 8, 8]
    # A folder holding a single program and no config loads that program.
    alone = tmp_path / "alone"
    alone.mkdir()
    torch.jit.script(Ramp().eval()).save(str(alone / "only.ts"))
    assert load_model(alone).name == "only"


def test_pickled_objects_are_refused_without_running_them(tmp_path: Path) -> None:
    torch.save(Ramp(), tmp_path / "full.pt")
    with pytest.raises(ModelError) as refused:
        load_model(tmp_path / "full.pt")
    message = str(refused.value)
    assert "\n" not in message
    assert str(tmp_path / "full.pt") in message
    assert "refused" in message and "arbitrary code" in message
    assert "Ramp" in message and "state_dict()" in message

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # what a hostile checkpoint does
            return (os.mkdir, (str(marker),))

    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="refused"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()

    # The same protection holds for a config's weights file.
    write_unet_dir(tmp_path / "m")
    torch.save({"weights": Payload()}, tmp_path / "m" / "weights.pt")
    with pytest.raises(ModelError, match="weights.pt: refused"):
        load_model(tmp_path / "m")
    assert not marker.exists()


def _export_ramp(path: Path) -> None:
    """A real .pt2 of Ramp with a dynamic batch (so its graph holds symbolic-shape strings)."""
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Ramp().eval(), (BATCH,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def _edit_pt2(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite a .pt2 archive: ``edit`` changes its entries (names without the root folder)."""
    with zipfile.ZipFile(source) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        entries = {n[len(root) + 1 :]: archive.read(n) for n in archive.namelist()}
    edit(entries)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(f"{root}/{name}", data)


def _edit_json(entries: dict[str, bytes], name: str, edit: Callable[[dict], None]) -> None:
    data = json.loads(entries[name])
    edit(data)
    entries[name] = json.dumps(data).encode()


class _MakesFolder:
    """What a hostile pickle does: unpickling it calls os.mkdir."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pt2_weight_flagged_as_a_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    _export_ramp(tmp_path / "ramp.pt2")
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(_MakesFolder(marker), payload)

    def weight_as_pickle(entries: dict[str, bytes]) -> None:
        config = "data/weights/model_weights_config.json"
        _edit_json(entries, config, lambda d: d["config"]["conv.weight"].update(use_pickle=True))
        path_name = json.loads(entries[config])["config"]["conv.weight"]["path_name"]
        entries[f"data/weights/{path_name}"] = payload.getvalue()

    _edit_pt2(tmp_path / "ramp.pt2", tmp_path / "evil.pt2", weight_as_pickle)
    with pytest.raises(ModelError) as refused:
        load_model(tmp_path / "evil.pt2")
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "evil.pt2") in message
    assert "refused: weight 'conv.weight' (data/weights/weight_" in message
    assert "pickled Python object" in message and "arbitrary code" in message
    assert not marker.exists()
    # The fixture is live: torch's own loader runs the payload.
    with contextlib.suppress(Exception):
        torch.export.load(str(tmp_path / "evil.pt2"))
    assert marker.exists()


def test_strings_in_a_pt2_are_never_evaluated(tmp_path: Path) -> None:
    """torch.export.load hands symbolic shapes to sympy's eval and guards to exec; not here."""
    _export_ramp(tmp_path / "ramp.pt2")
    marker = tmp_path / "pwned"
    code = f"__import__('os').mkdir({str(marker)!r})"

    def code_in_strings(program: dict) -> None:
        program["guards_code"] = [code]
        graph = program["graph_module"]["graph"]
        for meta in graph["tensor_values"].values():
            for size in meta["sizes"]:
                if "as_expr" in size:
                    size["as_expr"]["expr_str"] = code
        for node in graph["nodes"]:
            node["metadata"]["stack_trace"] = f"\r{code}"

    _edit_pt2(
        tmp_path / "ramp.pt2",
        tmp_path / "strings.pt2",
        lambda entries: _edit_json(entries, "models/model.json", code_in_strings),
    )
    model = load_model(tmp_path / "strings.pt2")
    with torch.no_grad():
        torch.testing.assert_close(model.foreground_logits(BATCH), Ramp().eval()(BATCH))
    assert not marker.exists()
    with contextlib.suppress(Exception):
        torch.export.load(str(tmp_path / "strings.pt2"))
    assert marker.exists()  # the fixture is live


def _set_target(target: str) -> Callable[[dict[str, bytes]], None]:
    def edit(entries: dict[str, bytes]) -> None:
        _edit_json(
            entries,
            "models/model.json",
            lambda p: p["graph_module"]["graph"]["nodes"][0].update(target=target),
        )

    return edit


def _add_entry(name: str) -> Callable[[dict[str, bytes]], None]:
    return lambda entries: entries.update({name: b"\x7fELF"})


def _opaque_constant(entries: dict[str, bytes]) -> None:
    config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}}}
    entries["data/constants/model_constants_config.json"] = json.dumps(config).encode()
    entries["data/constants/opaque_obj_0"] = b"\x80\x02."


def _buffer_mutation(entries: dict[str, bytes]) -> None:
    def edit(program: dict) -> None:
        specs = program["graph_module"]["signature"]["output_specs"]
        specs.insert(0, {"buffer_mutation": {"arg": {"name": "x"}, "buffer_name": "b"}})

    _edit_json(entries, "models/model.json", edit)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set_target("torch.load"), "calls 'torch.load', which is not a PyTorch operator"),
        (_set_target("builtins.exec"), "calls 'builtins.exec', which is not a PyTorch operator"),
        (_set_target("torch.ops.load_library.x.y"), "not a PyTorch operator"),
        (_set_target("torch.ops.aten.__class__.x"), "not a PyTorch operator"),
        (
            _set_target("torch.ops.higher_order.cond.default"),
            "higher_order.cond.default (control flow",
        ),
        (_add_entry("data/aotinductor/model/model.so"), "AOTInductor-compiled native code"),
        (_add_entry("data/weights/model.pt"), "weights stored as a pickle"),
        (_add_entry("data/executorch/model.bin"), "a payload of a kind this runtime does not"),
        (_opaque_constant, "constant 'c' (data/constants/opaque_obj_0) is stored as a pickled"),
        (_buffer_mutation, "a buffer_mutation output"),
    ],
)
def test_pt2_payloads_that_could_run_code_are_refused_by_name(
    tmp_path: Path, edit: Callable[[dict[str, bytes]], None], expected: str
) -> None:
    _export_ramp(tmp_path / "ramp.pt2")
    _edit_pt2(tmp_path / "ramp.pt2", tmp_path / "edited.pt2", edit)
    with pytest.raises(ModelError, match="refused") as refused:
        load_model(tmp_path / "edited.pt2")
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_exported_unets_run_as_their_modules(tmp_path: Path) -> None:
    """Normalization layers, transposed convolutions, skip connections, decomposed graphs."""
    for norm in ("instance", "batch"):
        torch.manual_seed(0)
        network = UNet3D(UNetConfig(channels=(4, 8), norm=norm)).eval()
        sample = torch.randn(2, 1, 16, 16, 16)
        program = torch.export.export(network, (sample,)).run_decompositions()
        torch.export.save(program, str(tmp_path / f"{norm}.pt2"))
        model = load_model(tmp_path / f"{norm}.pt2").replicate("cpu")
        with torch.inference_mode():
            torch.testing.assert_close(model.foreground_logits(sample), network(sample))


def test_bare_state_dicts_and_other_files_get_a_clear_error(tmp_path: Path) -> None:
    torch.save(Ramp().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelError, match="bare state_dict has no architecture; put it beside"):
        load_model(tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="junk.pt: not a TorchScript, torch.export or torch"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="not found: give 'demo'"):
        load_model(tmp_path / "missing")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"format": "other"}, "'format' must be 'kaggle-offline-unet'"),
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"normalisation": {}}, "unknown key\\(s\\) 'normalisation'"),
        ({"weights": "nope.pt"}, "weights file 'nope.pt' not found"),
        ({"normalization": {"mean": 0, "std": 0}}, "std must be a positive"),
        ({"inference": {"patch_size": [16, 16]}}, "patch_size must be 3 positive integers"),
        ({"architecture": {"channels": [4, 8], "depth": 3}}, "unknown U-Net config key"),
        ({"architecture": {"channels": [4, 16]}}, "weights do not match the architecture"),
        ({"foreground_class": 1}, "foreground_class 1 given, but the model has one output"),
    ],
)
def test_config_errors_name_the_file_and_the_problem(
    tmp_path: Path, edit: dict, expected: str
) -> None:
    write_unet_dir(tmp_path / "m", **edit)
    with pytest.raises(ModelError, match=expected) as error:
        load_model(tmp_path / "m")
    assert "\n" not in str(error.value)
    assert "m/config.json" in str(error.value) or "weights.pt" in str(error.value)


def test_c_class_logits_become_foreground_log_odds(tmp_path: Path) -> None:
    network = write_unet_dir(tmp_path / "m", out_channels=3, foreground_class=1)
    model = load_model(tmp_path / "m")
    with torch.no_grad():
        log_odds = model.foreground_logits(BATCH)
        probabilities = torch.softmax(network(BATCH), dim=1)
    assert log_odds.shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(torch.sigmoid(log_odds), probabilities[:, 1:2])
    # The argument overrides the config's class.
    other = load_model(tmp_path / "m", foreground_class=2)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.sigmoid(other.foreground_logits(BATCH)), probabilities[:, 2:3]
        )
    write_unet_dir(tmp_path / "n", out_channels=3)
    with pytest.raises(ModelError, match="3 class logits but no foreground class"):
        load_model(tmp_path / "n")
    with pytest.raises(ModelError, match="out of range for 3"):
        load_model(tmp_path / "m", foreground_class=3)


def test_two_class_program_without_a_class_fails_at_the_first_forward(tmp_path: Path) -> None:
    module = torch.nn.Conv3d(1, 2, 1).eval()
    torch.jit.script(module).save(str(tmp_path / "two.ts"))
    with pytest.raises(ModelError, match="outputs 2 class logits.*--foreground-class"):
        load_model(tmp_path / "two.ts").foreground_logits(BATCH)
    picked = load_model(tmp_path / "two.ts", foreground_class=1)
    with torch.no_grad():
        out = module(BATCH)
        torch.testing.assert_close(picked.foreground_logits(BATCH), out[:, 1:] - out[:, :1])


def test_ensembles_fuse_per_volume_probabilities_or_logits(tmp_path: Path) -> None:
    import numpy as np

    from runtime.inference.engine import InferenceOptions, Segmenter

    write_unet_dir(tmp_path / "a", seed=1)
    # Another normalization and another window: each member runs as it would alone.
    write_unet_dir(
        tmp_path / "b",
        seed=2,
        normalization={"mean": 0.0, "std": 255.0},
        inference={"patch_size": [12, 12, 12]},
    )
    specs = [tmp_path / "a", tmp_path / "b"]
    image = (np.random.default_rng(0).random((18, 20, 22)) * 255).astype(np.uint8)

    def probability(model: object) -> np.ndarray:
        options = InferenceOptions(keep_probability=True, threshold=0.4)
        result = Segmenter(model, options).segment(image)  # type: ignore[arg-type]
        assert result.probability is not None
        assert np.array_equal(result.mask, (result.probability > 0.4).astype(np.uint8))
        return result.probability

    pa, pb = (probability(load_model(spec)) for spec in specs)
    members = tuple(load_model(spec) for spec in specs)
    by_probability = Ensemble(members, resolve_ensemble(2, [3, 1], None))
    assert by_probability.name == "a+b" and by_probability.weights == (0.75, 0.25)
    np.testing.assert_allclose(probability(by_probability), 0.75 * pa + 0.25 * pb, atol=1e-6)
    by_logit = Ensemble(members, resolve_ensemble(2, None, "logits"))
    expected = 1 / (1 + np.exp(-(np.log(pa / (1 - pa)) + np.log(pb / (1 - pb))) / 2))
    np.testing.assert_allclose(probability(by_logit), expected, atol=1e-5)


def test_ensemble_arguments_are_checked() -> None:
    with pytest.raises(OptionError, match=r"2 --ensemble-weights given for 3 model\(s\)"):
        resolve_ensemble(3, [1, 2], None)
    with pytest.raises(OptionError, match="must be positive"):
        resolve_ensemble(2, [1, -1], None)
    with pytest.raises(OptionError, match="unknown ensemble mode 'mean'"):
        resolve_ensemble(2, None, "mean")
    with pytest.raises(OptionError, match="at least two"):
        resolve_ensemble(1, None, None)


def test_replicas_are_independent() -> None:
    model = SegmentationModel.from_module(torch.nn.Conv3d(1, 1, 3, padding=1), name="c")
    replica = model.replicate("cpu").to_channels_last()
    with torch.no_grad():
        replica.network.weight.add_(1.0)
        assert not torch.equal(replica.network.weight, model.network.weight)
    assert replica.network.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_the_demo_model_loads() -> None:
    model = load_model("demo")
    assert model.name == "demo"
    multiple = model.size_multiple
    with torch.no_grad():
        out = model.foreground_logits(torch.zeros(1, 1, multiple * 2, multiple * 2, multiple * 2))
    assert out.shape == (1, 1, multiple * 2, multiple * 2, multiple * 2)
