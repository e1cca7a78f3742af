"""The competition's metric on cases whose answer is known by construction, and against the
reference implementations (DeepMind's surface-distance, scikit-image's VOI) where installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.volumes.metric import components
from runtime.volumes.metric.leaderboard import PreparedTruth, score_volume
from runtime.volumes.metric.surface_dice import surface_dice
from runtime.volumes.metric.topology import betti_numbers, feature_counts, octant_slices, topo_score
from runtime.volumes.metric.voi import variation_of_information


def _sheet(shape=(24, 32, 32), z=10) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[z, 4:-4, 4:-4] = 1
    return mask


def _blobs(seed: int, shape=(28, 30, 26), count=6) -> np.ndarray:
    """Random overlapping balls: several components, tunnels and cavities now and then."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        centre = rng.uniform(3, np.array(shape) - 3)
        radius = rng.uniform(2, 6)
        mask |= (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    mask ^= rng.random(shape) < 0.01  # specks and pinholes
    return mask


@pytest.fixture(params=["scipy", "cc3d"])
def labeller(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "cc3d":
        pytest.importorskip("cc3d")
    monkeypatch.setenv(components.BACKEND_VARIABLE, request.param)
    components.backend.cache_clear()
    yield request.param
    components.backend.cache_clear()


def test_identical_masks_score_one_on_every_part(labeller: str) -> None:
    mask = _blobs(1)
    result = score_volume(mask, mask.astype(np.uint8))
    assert result.surface_dice == 1.0
    assert result.voi_score == 1.0 and result.voi == 0.0
    assert result.topo_score == 1.0
    assert result.score == 1.0


def test_a_sheet_shifted_by_one_voxel_is_within_tolerance_2_but_not_0_5() -> None:
    truth, shifted = _sheet(z=10), _sheet(z=11)
    assert surface_dice(shifted, truth, tolerance=2.0) == 1.0
    assert surface_dice(shifted, truth, tolerance=1.0) == 1.0
    half = surface_dice(shifted, truth, tolerance=0.5)
    assert 0.3 < half < 0.7  # the two layers that coincide count, the other two do not


def test_a_split_sheet_raises_voi_by_the_entropy_of_its_pieces(labeller: str) -> None:
    truth = _sheet()  # one component of 24 x 24 voxels
    split = truth.copy()
    split[10, 4:-4, 16] = 0  # a one-voxel cut across it: 24 voxels, two halves of 24x12 and 24x11
    result = variation_of_information(split, truth)
    n = 24 * 24
    p = (
        np.array([24 * 12, 24 * 11, 24]) / n
    )  # the prediction's pieces over the union: 2 halves, the cut
    expected = float(-(p * np.log2(p)).sum())  # H(prediction | truth); H(truth | prediction) = 0
    assert result.merge == pytest.approx(0.0, abs=1e-12)
    assert result.split == pytest.approx(expected, rel=1e-12)
    assert result.score == pytest.approx(1 / (1 + 0.3 * expected), rel=1e-12)


def test_merging_two_true_sheets_is_a_merge_error(labeller: str) -> None:
    truth = _sheet() | _sheet(z=12)
    merged = truth.copy()
    merged[11, 4:-4, 4:-4] = 1  # one slab joining both
    result = variation_of_information(merged, truth)
    assert result.merge > 0 and result.split == pytest.approx(0.0, abs=1e-12)


def test_a_torus_has_one_tunnel_and_a_hollow_sphere_one_cavity(labeller: str) -> None:
    zz, yy, xx = np.indices((30, 30, 30)) - 14.5
    ring = (np.sqrt(yy**2 + xx**2) - 8) ** 2 + zz**2 <= 3.0**2
    assert betti_numbers(ring) == (1, 1, 0)
    radius = np.sqrt(zz**2 + yy**2 + xx**2)
    shell = (radius >= 7) & (radius <= 10)
    assert betti_numbers(shell) == (1, 0, 1)
    assert betti_numbers(np.ones((5, 5, 5))) == (1, 0, 0)
    assert betti_numbers(np.zeros((5, 5, 5))) == (0, 0, 0)


def test_components_are_6_connected_and_cavities_26_connected(labeller: str) -> None:
    # Betti-Matching-3D's complex has voxels as vertices: diagonal neighbours do not connect.
    diagonal = np.zeros((4, 4, 4), dtype=bool)
    diagonal[1, 1, 1] = diagonal[2, 2, 2] = True
    assert betti_numbers(diagonal)[0] == 2
    assert feature_counts(diagonal) == (1, 0, 0)  # the component that never dies is no feature
    # A cube shell with one diagonal "leak" in a corner: background escapes 26-connectedly.
    box = np.ones((7, 7, 7), dtype=bool)
    box[2:5, 2:5, 2:5] = False
    assert betti_numbers(box)[2] == 1
    box[1, 1, 1] = False
    box[0, 0, 0] = False  # touches (2, 2, 2)'s region only through corners
    assert betti_numbers(box)[2] == 0


def test_topology_is_counted_per_octant_as_the_official_tiling() -> None:
    assert octant_slices((5, 4, 1)) == [
        (slice(0, 3), slice(0, 2), slice(0, 1)),
        (slice(0, 3), slice(2, 4), slice(0, 1)),
        (slice(3, 5), slice(0, 2), slice(0, 1)),
        (slice(3, 5), slice(2, 4), slice(0, 1)),
    ]
    truth = np.zeros((20, 20, 20), dtype=bool)
    truth[2:4, 2:4, 2:4] = truth[2:4, 2:4, 6:8] = True  # two components in the first octant
    result = topo_score(truth, truth)
    assert result.counts[0] == (1, 1, 1) and result.score == 1.0 and result.kind == "approximate"
    one = truth.copy()
    one[2:4, 2:4, 4:6] = True  # bridged: no finite component left
    result = topo_score(one, truth)
    assert result.counts[0] == (0, 0, 1)
    assert result.f1[0] == 0.0 and math.isnan(result.f1[1])
    assert topo_score(truth, one).f1[0] == pytest.approx(0.5 / 1.5)  # predicted, none true


def test_ignored_voxels_change_nothing_wherever_they_are(labeller: str) -> None:
    rng = np.random.default_rng(3)
    truth = _blobs(4).astype(np.uint8)
    prediction = _blobs(5)
    ignored = np.zeros(truth.shape, dtype=bool)
    ignored[:, :8] = True  # a slab, cutting through components
    ignored |= rng.random(truth.shape) < 0.02  # and scattered voxels
    labels = np.where(ignored, 2, truth).astype(np.uint8)
    noisy = prediction | (ignored & (rng.random(truth.shape) < 0.5))  # junk where ignored
    reference = score_volume(prediction & ~ignored, np.where(ignored, 0, truth))
    result = score_volume(noisy, labels)
    assert result.ignored_voxels == int(ignored.sum())
    for field in ("score", "surface_dice", "voi_score", "topo_score"):
        assert getattr(result, field) == getattr(reference, field), field


def test_empty_against_empty_scores_one_and_empty_against_one_sheet_scores_0_65() -> None:
    empty = np.zeros((16, 16, 16), dtype=np.uint8)
    result = score_volume(empty, empty)
    assert (result.surface_dice, result.voi_score, result.topo_score, result.score) == (
        1.0,
        1.0,
        1.0,
        1.0,
    )
    truth = _sheet((16, 16, 16), z=5)
    missed = score_volume(empty, truth)
    # As officially defined: VOI compares over the union, where both labellings are constant, and
    # one component is no topological feature; only SurfaceDice sees the miss.
    assert (missed.surface_dice, missed.voi_score, missed.topo_score) == (0.0, 1.0, 1.0)
    assert missed.score == pytest.approx(0.65)


def test_prepared_truth_scores_like_a_fresh_score() -> None:
    truth = _blobs(6).astype(np.uint8)
    prepared = PreparedTruth(truth)
    for seed in (7, 8):
        prediction = _blobs(seed)
        again = score_volume(prediction, truth)
        fresh = prepared.score(prediction)
        assert (fresh.score, fresh.surface_dice, fresh.voi, fresh.topo_score) == (
            again.score,
            again.surface_dice,
            again.voi,
            again.topo_score,
        )


def test_cc3d_and_scipy_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cc3d")
    truth, prediction = _blobs(9).astype(np.uint8), _blobs(10)
    results = []
    for name in ("scipy", "cc3d"):
        monkeypatch.setenv(components.BACKEND_VARIABLE, name)
        components.backend.cache_clear()
        results.append(score_volume(prediction, truth))
    components.backend.cache_clear()
    assert results[0].score == results[1].score and results[0].topo_counts == results[1].topo_counts


# --- against the reference implementations (test-only dependencies) -----------------------------
def test_surfel_areas_equal_surface_distance_tables() -> None:
    lookup_tables = pytest.importorskip("surface_distance.lookup_tables")
    from runtime.volumes.metric.surface_tables import surfel_areas

    reference = lookup_tables.create_table_neighbour_code_to_surface_area((1.0, 1.0, 1.0))
    np.testing.assert_allclose(surfel_areas(), reference, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface-distance's scipy imports
@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.0, 3.5, 6.0])
def test_surface_dice_agrees_with_deepmind_surface_distance(seed: int, tolerance: float) -> None:
    surface_distance = pytest.importorskip("surface_distance")
    truth, prediction = _blobs(seed), _blobs(seed + 100)
    distances = surface_distance.compute_surface_distances(truth, prediction, (1.0, 1.0, 1.0))
    expected = surface_distance.compute_surface_dice_at_tolerance(distances, tolerance)
    assert surface_dice(prediction, truth, tolerance) == pytest.approx(
        expected, rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_voi_agrees_with_scikit_image(seed: int, labeller: str) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    from scipy import ndimage

    truth, prediction = _blobs(seed), _blobs(seed + 100)
    structure = np.ones((3, 3, 3), dtype=bool)
    a, _ = ndimage.label(truth, structure=structure)
    b, _ = ndimage.label(prediction, structure=structure)
    union = (a > 0) | (b > 0)
    split, merge = metrics.variation_of_information(a[union], b[union])  # (H(b|a), H(a|b))
    result = variation_of_information(prediction, truth)
    assert result.split == pytest.approx(split, rel=1e-9, abs=1e-12)
    assert result.merge == pytest.approx(merge, rel=1e-9, abs=1e-12)
