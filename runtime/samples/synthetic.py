"""Synthetic papyrus-like CT volumes with ground truth, for the demo model, samples and tests.

A scroll is a rolled sheet, so a small chunk of it shows a stack of nearly parallel, gently curved
layers a few voxels thick. Here each layer is a shell around one common scroll axis (placed well
outside the chunk so the layers look like arcs, not rings), wobbled by smooth displacement fields,
with gaps that sometimes close so that neighbouring layers touch. The CT look comes from faint and
damaged stretches along the layers, bright debris blobs that are not surface, a smooth beam-hardening
bias, blur and noise: enough that a global threshold does not segment it, while a small 3D U-Net can.

Only numpy is needed (scipy is not), so ``runtime sample`` works wherever numpy does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["IGNORE_LABEL", "SURFACE_LABEL", "SyntheticVolume", "synthetic_volume"]

SURFACE_LABEL = 1
IGNORE_LABEL = 2  # like the competition's "unlabeled" voxels: a grader skips them


@dataclass(frozen=True)
class SyntheticVolume:
    """One CT-like chunk and its labels, both ``uint8`` of shape ``(Z, Y, X)``."""

    image: np.ndarray  # CT-like intensities with noise and blur
    label: np.ndarray  # 0 background, 1 surface (sheet), 2 unlabeled (ignored)


def synthetic_volume(
    shape: tuple[int, int, int],
    seed: int | np.random.Generator,
    *,
    n_sheets: int | None = None,
) -> SyntheticVolume:
    """Generate a papyrus-like volume of ``shape``; the same ``seed`` gives the same volume.

    ``n_sheets`` fixes how many layers are drawn (centred on the chunk); ``None`` fills the chunk
    with as many as the random spacing allows.
    """
    dims = _checked_shape(shape)
    if n_sheets is not None and (isinstance(n_sheets, bool) or n_sheets < 0):
        raise ValueError(f"n_sheets must be a non-negative integer or None, got {n_sheets!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    coords = np.indices(dims, dtype=np.float32).reshape(3, -1).T  # (N, 3) voxel centres
    radius, half_extent = _scroll_radius(coords, dims, rng)
    # A shared wobble bends all layers alike (they were rolled together); per-layer wobbles make
    # the gaps vary, so that neighbours sometimes touch.
    shared_wobble = _smooth_field(coords, rng, amplitude=rng.uniform(0.5, 3.0), wavelength=(24, 96))
    radius += shared_wobble

    centres, thicknesses = _layer_positions(rng, half_extent, n_sheets)
    occupancy = np.zeros(len(coords), dtype=np.float32)  # soft (anti-aliased) sheet coverage
    surface = np.zeros(len(coords), dtype=bool)
    brightness = np.zeros(len(coords), dtype=np.float32)
    for centre, thickness in zip(centres, thicknesses, strict=True):
        if abs(centre) > half_extent + thickness:
            continue
        amplitude = rng.uniform(0.0, 1.2)
        # Only voxels within reach of the layer can be covered: working on them alone makes a
        # 320^3 chunk with dozens of layers take seconds instead of minutes.
        reach = thickness / 2 + amplitude + 1.0
        near = np.flatnonzero(np.abs(radius - np.float32(centre)) <= reach)
        own_wobble = _smooth_field(coords[near], rng, amplitude=amplitude, wavelength=(16, 64))
        distance = np.abs(radius[near] - centre - own_wobble)
        cover = np.clip(thickness / 2 + 0.5 - distance, 0.0, 1.0)
        level = rng.uniform(120.0, 200.0)
        covered, lit = occupancy[near], brightness[near]
        brightness[near] = np.where(cover * level > covered * lit, level, lit)
        occupancy[near] = np.maximum(covered, cover)
        surface[near] |= distance <= thickness / 2

    image = _render(coords, dims, occupancy, brightness, surface, rng)
    label = surface.reshape(dims).astype(np.uint8)
    _mark_unlabeled(label, rng)
    return SyntheticVolume(image=image, label=label)


def _checked_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    dims = tuple(shape)
    if len(dims) != 3 or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(f"shape must be three positive integers (Z, Y, X), got {shape!r}")
    return (int(dims[0]), int(dims[1]), int(dims[2]))


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


def _scroll_radius(
    coords: np.ndarray, dims: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Distance of every voxel from the scroll axis, minus the radius at the chunk's centre.

    Returns it with the half-extent of the chunk across the layers (layers beyond are invisible).
    """
    # Scroll chunks are cut with z along the scroll axis, but the layers wander: tilt the axis.
    axis = np.array([1.0, 0.0, 0.0]) + 0.6 * rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    across = _random_unit(rng)
    across -= across.dot(axis) * axis
    across /= np.linalg.norm(across)
    half_diagonal = 0.5 * math.sqrt(sum(d * d for d in dims))
    # A radius of one to four chunk diagonals: arcs that are visibly curved but never closed rings.
    scroll_radius = rng.uniform(1.0, 4.0) * max(half_diagonal, 8.0) * 2
    centre = (np.array(dims, dtype=np.float64) - 1) / 2 - scroll_radius * across
    offset = coords - centre.astype(np.float32)
    along = offset @ axis.astype(np.float32)
    radial = np.sqrt(np.maximum((offset * offset).sum(axis=1) - along * along, 0.0))
    return (radial - np.float32(scroll_radius)).astype(np.float32), half_diagonal


def _smooth_field(
    coords: np.ndarray,
    rng: np.random.Generator,
    *,
    amplitude: float,
    wavelength: tuple[float, float],
    waves: int = 3,
) -> np.ndarray:
    """A smooth random field (a few plane waves) with roughly the given peak amplitude."""
    field = np.zeros(len(coords), dtype=np.float32)
    if amplitude <= 0:
        return field
    for _ in range(waves):
        direction = _random_unit(rng) * (2 * math.pi / rng.uniform(*wavelength))
        phase = rng.uniform(0, 2 * math.pi)
        field += np.cos(coords @ direction.astype(np.float32) + np.float32(phase))
    field *= np.float32(amplitude / waves)
    return field


def _layer_positions(
    rng: np.random.Generator, half_extent: float, n_sheets: int | None
) -> tuple[list[float], list[float]]:
    """Radial centres and thicknesses of the layers, relative to the chunk's centre."""
    thicknesses: list[float] = []
    gaps: list[float] = []
    count = n_sheets if n_sheets is not None else 10_000
    span = 0.0
    while len(thicknesses) < count:
        thickness = float(rng.uniform(2.5, 5.0))
        # About one gap in four nearly closes: touching layers are the hard case in real scrolls.
        gap = float(rng.uniform(0.0, 1.0) if rng.random() < 0.25 else rng.uniform(4.0, 18.0))
        if n_sheets is None and span > 2 * half_extent + 10:
            break
        thicknesses.append(thickness)
        gaps.append(gap)
        span += thickness + gap
    if not thicknesses:
        return [], []
    span -= gaps[-1]
    # Centre the stack on the chunk, shifted randomly by up to one period when filling.
    start = -span / 2 + (rng.uniform(-4.0, 4.0) if n_sheets is None else 0.0)
    centres: list[float] = []
    for thickness, gap in zip(thicknesses, gaps, strict=True):
        centres.append(start + thickness / 2)
        start += thickness + gap
    return centres, thicknesses


def _render(
    coords: np.ndarray,
    dims: tuple[int, int, int],
    occupancy: np.ndarray,
    brightness: np.ndarray,
    surface: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    background = rng.uniform(35.0, 70.0)
    # Damaged and faint stretches along the layers: contrast drops to a third in places.
    damage = np.clip(
        0.75 + _smooth_field(coords, rng, amplitude=0.45, wavelength=(12, 48)), 0.3, 1.0
    )
    image = background + occupancy * (brightness - background) * damage
    image = image.reshape(dims)
    _add_debris(image, surface.reshape(dims), rng)
    bias = 1.0 + _smooth_field(coords, rng, amplitude=rng.uniform(0.1, 0.35), wavelength=(64, 192))
    image *= bias.reshape(dims)
    image = _gaussian_blur(image, sigma=rng.uniform(0.6, 1.1))
    image += rng.normal(0.0, rng.uniform(14.0, 26.0), size=dims).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _add_debris(image: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> None:
    """Bright compact blobs between the layers: as bright as papyrus but not surface."""
    volume = image.size
    count = rng.poisson(volume / 25_000)
    for _ in range(count):
        r = rng.uniform(1.5, 4.5)
        centre = [rng.uniform(0, d - 1) for d in image.shape]
        lo = [max(int(c - r - 1), 0) for c in centre]
        hi = [min(int(c + r + 2), d) for c, d in zip(centre, image.shape, strict=True)]
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            continue
        grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        blob = np.clip(r + 0.5 - np.sqrt(dist2), 0.0, 1.0).astype(np.float32)
        region = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        blob[surface[region]] = 0.0  # debris sits in the gaps, it never overwrites papyrus
        level = np.float32(rng.uniform(110.0, 200.0))
        image[region] = np.maximum(image[region], image[region] + blob * (level - image[region]))


def _mark_unlabeled(label: np.ndarray, rng: np.random.Generator) -> None:
    """Mark a slab at one face as unlabeled (2), as annotators leave parts of a chunk undone."""
    if rng.random() < 0.3:
        return
    axis = int(rng.integers(0, 3))
    size = label.shape[axis]
    depth = int(round(size * rng.uniform(0.1, 0.3)))
    if depth == 0:
        return
    index: list[slice] = [slice(None)] * 3
    index[axis] = slice(0, depth) if rng.random() < 0.5 else slice(size - depth, size)
    label[tuple(index)] = IGNORE_LABEL


def _gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding, in numpy alone (scipy is optional here)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = volume.astype(np.float32, copy=True)
    for axis in range(3):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for offset, weight in enumerate(taps):
            window: list[slice] = [slice(None)] * 3
            window[axis] = slice(offset, offset + n)
            acc += weight * padded[tuple(window)]
        out = acc
    return out
