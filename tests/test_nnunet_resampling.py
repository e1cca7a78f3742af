"""nnU-Net configurations trained at another spacing (3d_lowres, anisotropic models): the volume is
resampled as nnU-Net resamples it, and the blended logits come back to the volume's grid.

The resize is checked against scikit-image's ``resize`` (what nnU-Net calls) and the along-axis
step against ``map_coordinates`` over nnU-Net's full coordinate grid, both written out here;
``test_agrees_with_nnunetv2`` compares with nnunetv2's own function where it is installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.contract.errors import ModelError
from runtime.inference.models import load_model
from runtime.inference.nnunet.resampling import ResamplingRule, new_shape, resample
from tests.support.nnunet_folders import make_plans, write_trained_model_folder
from tests.test_nnunet import label_probabilities, run, volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = ResamplingRule("resample_data_or_seg_to_shape", 3, 0, None)
LOGITS = ResamplingRule("resample_data_or_seg_to_shape", 1, 0, None)


def skimage_resize(image: np.ndarray, shape, order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(image.astype(float), shape, order, mode="edge", anti_aliasing=False)


def nnunet_separate_z(image, shape, axis, order, order_z) -> np.ndarray:
    """nnU-Net's separate-z branch as it is written: 2D resizes, then map_coordinates over a
    full float64 coordinate grid."""
    from scipy.ndimage import map_coordinates

    shape = np.array(shape)
    planes = shape.copy()
    planes[axis] = image.shape[axis]
    here = np.zeros(planes)
    plane = tuple(v for i, v in enumerate(shape) if i != axis)
    for index in range(image.shape[axis]):
        where = (slice(None),) * axis + (index,)
        here[where] = skimage_resize(image[where], plane, order)
    scales = [float(o) / n for o, n in zip(here.shape, shape, strict=True)]
    grid = np.mgrid[: shape[0], : shape[1], : shape[2]]
    coords = np.array([s * (g + 0.5) - 0.5 for s, g in zip(scales, grid, strict=True)])
    return map_coordinates(here, coords, order=order_z, mode="nearest").astype(np.float32)


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("shape", [(9, 13, 7), (30, 20, 26)])
def test_a_3d_resize_is_scikit_images(order, shape) -> None:
    image = np.random.default_rng(order).normal(size=(17, 15, 13)).astype(np.float32)
    ours = resample(
        image, shape, (1, 1, 1), (2, 2, 2), ResamplingRule(DATA.function, order, 0, False)
    )
    assert ours.dtype == np.float32
    assert np.array_equal(ours, skimage_resize(image, shape, order).astype(np.float32))


@pytest.mark.parametrize(
    ("current", "new", "axis"), [((1, 1, 1), (4, 1, 1), 0), ((1, 1, 5), (1, 1, 1), 2)]
)
@pytest.mark.parametrize("order_z", [0, 1])
def test_anisotropic_spacing_resamples_the_low_resolution_axis_on_its_own(
    current, new, axis, order_z
) -> None:
    image = np.random.default_rng(1).normal(size=(21, 11, 12)).astype(np.float32)
    shape = new_shape(image.shape, current, new)
    rule = ResamplingRule(DATA.function, 3, order_z, None)
    assert rule.separate_axis(current, new) == axis
    ours = resample(image, shape, current, new, rule)
    assert np.array_equal(ours, nnunet_separate_z(image, shape, axis, 3, order_z))


def test_the_separate_axis_follows_nnunets_rule() -> None:
    assert DATA.separate_axis((1, 1, 1), (2, 2, 2)) is None  # isotropic: 3D
    assert DATA.separate_axis((3, 1, 1), (1, 1, 1)) is None  # exactly 3x is not above 3
    assert DATA.separate_axis((3.1, 1, 1), (1, 1, 1)) == 0
    assert DATA.separate_axis((1, 4, 4), (1, 1, 1)) is None  # two axes share the largest
    forced = ResamplingRule(DATA.function, 3, 0, True)
    assert forced.separate_axis((1, 1, 2), (1, 1, 1)) == 2
    assert ResamplingRule(DATA.function, 3, 0, False).separate_axis((5, 1, 1), (1, 1, 1)) is None


def test_a_lowres_configuration_runs_as_nnunet_runs_it(tmp_path) -> None:
    """spacing 2,2,2 on 1,1,1 volumes: downsampled, segmented, logits back; softmax agrees with
    the step-by-step reference to 1e-4 and the masks to 99.9%."""
    plans = make_plans(spacing=(2.0, 2.0, 2.0), configuration="3d_lowres")
    folder, networks = write_trained_model_folder(tmp_path, plans, configuration="3d_lowres")
    model = load_model(folder)
    image = volume((40, 36, 30), border=3)

    def by_skimage(array, shape, order):
        target = shape or new_shape(array.shape, (1, 1, 1), (2, 2, 2))
        return skimage_resize(array, target, order).astype(np.float32)

    mask, probability = run(model, image)
    expected = label_probabilities(image, networks, resample=by_skimage)
    assert probability.shape == image.shape
    assert np.abs(probability - expected).max() < 1e-4
    assert np.mean(mask == (expected > 0.5)) >= 0.999


def test_only_what_can_be_reproduced_is_refused(tmp_path) -> None:
    plans = make_plans(spacing=(2.0, 1.0, 1.0))
    config = plans["configurations"]["3d_fullres"]
    config["resampling_fn_data"] = "resample_torch_fornnunet"
    folder, _ = write_trained_model_folder(tmp_path / "torch", plans)
    with pytest.raises(ModelError, match="resample_torch_fornnunet.* is not implemented"):
        load_model(folder)
    # The same folder at its own spacing needs no resampling: nothing to refuse.
    assert load_model(folder, spacing=(2.0, 1.0, 1.0)) is not None
    plans = make_plans(spacing=(2.0, 1.0, 1.0))
    plans["configurations"]["3d_fullres"]["resampling_fn_probabilities_kwargs"] = {"order": 3}
    folder, _ = write_trained_model_folder(tmp_path / "cubic", plans)
    with pytest.raises(ModelError, match="spline order 3"):
        load_model(folder)
    plans = make_plans(spacing=(2.0, 1.0, 1.0))
    plans["configurations"]["3d_fullres"]["resampling_fn_data_kwargs"] = {"order": "3"}
    (tmp_path / "bad").mkdir()
    folder, _ = write_trained_model_folder(tmp_path / "bad", plans)
    with pytest.raises(ModelError, match=r"resampling_fn_data_kwargs.order must be"):
        load_model(folder)


def test_agrees_with_nnunetv2() -> None:
    nnunet = pytest.importorskip("nnunetv2.preprocessing.resampling.default_resampling")
    image = np.random.default_rng(2).normal(size=(1, 19, 14, 16)).astype(np.float32)
    for current, new, order, order_z in [
        ((1, 1, 1), (2, 2, 2), 3, 0),
        ((1, 1, 1), (4, 1, 1), 3, 0),
        ((1, 1, 1), (4, 1, 1), 1, 1),
        ((5, 1, 1), (1, 1, 1), 1, 0),
    ]:
        shape = new_shape(image.shape[1:], current, new)
        theirs = nnunet.resample_data_or_seg_to_shape(
            image, shape, current, new, is_seg=False, order=order, order_z=order_z,
            force_separate_z=None,
        )  # fmt: skip
        rule = ResamplingRule(DATA.function, order, order_z, None)
        assert np.array_equal(resample(image[0], shape, current, new, rule), theirs[0])


def test_plans_kwargs_reach_the_rule(tmp_path) -> None:
    plans = make_plans(spacing=(2.0, 2.0, 2.0))
    config = plans["configurations"]["3d_fullres"]
    config["resampling_fn_data_kwargs"] = {
        "is_seg": False,
        "order": 1,
        "order_z": 1,
        "force_separate_z": None,
    }
    folder, _ = write_trained_model_folder(tmp_path, plans)
    assert (
        json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"][
            "resampling_fn_data_kwargs"
        ]["order"]
        == 1
    )
    model = load_model(folder)
    assert model.preprocessing.data_rule == ResamplingRule(DATA.function, 1, 1, None)
    assert model.preprocessing.probability_rule == LOGITS
