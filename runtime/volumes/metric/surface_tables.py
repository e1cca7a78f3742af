"""Surface-element areas for every 2x2x2 neighbourhood, as DeepMind's surface-distance weighs them.

SurfaceDice weighs each surface element by its area. surface-distance ships a table of the
marching-cubes triangles of all 256 corner configurations; the same numbers follow from a rule,
which is what this module computes (``tests/test_metric.py`` checks all 256 against the package
when it is installed):

* the surface separates the *minority* corners (those set, or those unset when more than four are
  set) from the rest, so a configuration and its complement weigh the same;
* corners that touch only diagonally are separated (each gets its own piece of surface);
* each piece is the polygon through the midpoints of the cube edges it cuts, triangulated the way
  that gives the largest area (the two non-planar cases, three corners on a face and a zig-zag of
  four, are the only ones where the triangulation matters).

Codes use surface-distance's bit order: the corner at offset (i, j, k) of the 2x2x2 block has the
bit ``1 << (7 - (4i + 2j + k))``.
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CORNERS", "corner_bit", "surfel_areas"]

CORNERS: tuple[tuple[int, int, int], ...] = tuple(
    (x, y, z) for x, y, z in itertools.product((0, 1), repeat=3)
)
_Point = tuple[float, float, float]


def corner_bit(corner: tuple[int, int, int]) -> int:
    i, j, k = corner
    return 1 << (7 - (4 * i + 2 * j + k))


@functools.cache
def surfel_areas() -> np.ndarray:
    """Area (unit voxel spacing) of the surface inside a 2x2x2 block, for each of the 256 codes."""
    import numpy as np

    table = np.zeros(256, dtype=np.float64)
    for code in range(256):
        inside = {corner for corner in CORNERS if code & corner_bit(corner)}
        minority = inside if len(inside) <= 4 else set(CORNERS) - inside
        table[code] = sum(
            _largest_triangulation(polygon)
            for piece in _edge_connected_pieces(minority)
            for polygon in _cut_polygons(piece)
        )
    return table


def _edge_connected_pieces(corners: set[tuple[int, int, int]]) -> list[set[tuple[int, int, int]]]:
    pieces: list[set[tuple[int, int, int]]] = []
    left = set(corners)
    while left:
        piece = {left.pop()}
        frontier = list(piece)
        while frontier:
            corner = frontier.pop()
            for other in list(left):
                if sum(a != b for a, b in zip(corner, other, strict=True)) == 1:
                    left.remove(other)
                    piece.add(other)
                    frontier.append(other)
        pieces.append(piece)
    return pieces


def _cut_polygons(piece: set[tuple[int, int, int]]) -> list[list[_Point]]:
    """The closed polygons through the midpoints of the cube edges leaving ``piece``."""
    # On each face, walking round its four corners, every run of corners of the piece is bounded
    # by two cut edges: those two are consecutive on the polygon.
    links: dict[frozenset, list[frozenset]] = {}
    for axis, side in itertools.product(range(3), (0, 1)):
        ring = _face_ring(axis, side)
        inside = [corner in piece for corner in ring]
        if all(inside) or not any(inside):
            continue
        start = inside.index(False)  # walk from an outside corner, so runs do not wrap
        order = ring[start:] + ring[:start]
        flags = inside[start:] + inside[:start]
        cuts = [
            frozenset((order[n], order[(n + 1) % 4]))
            for n in range(4)
            if flags[n] != flags[(n + 1) % 4]
        ]
        for entering, leaving in zip(cuts[::2], cuts[1::2], strict=True):
            links.setdefault(entering, []).append(leaving)
            links.setdefault(leaving, []).append(entering)
    polygons = []
    unvisited = set(links)
    while unvisited:
        first = unvisited.pop()
        cycle, previous, current = [first], None, first
        while True:
            following = next(e for e in links[current] if e != previous)
            if following == first:
                break
            unvisited.discard(following)
            cycle.append(following)
            previous, current = current, following
        polygons.append([_midpoint(edge) for edge in cycle])
    return polygons


def _face_ring(axis: int, side: int) -> list[tuple[int, int, int]]:
    """The four corners of a cube face in cyclic order."""
    ring = []
    for u, v in ((0, 0), (0, 1), (1, 1), (1, 0)):
        corner = [u, v]
        corner.insert(axis, side)
        ring.append((corner[0], corner[1], corner[2]))
    return ring


def _midpoint(edge: frozenset) -> _Point:
    a, b = tuple(edge)
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2)


def _largest_triangulation(polygon: list[_Point]) -> float:
    n = len(polygon)

    @functools.cache
    def best(i: int, j: int) -> float:
        if j - i < 2:
            return 0.0
        return max(
            best(i, k) + best(k, j) + _triangle_area(polygon[i], polygon[k], polygon[j])
            for k in range(i + 1, j)
        )

    return best(0, n - 1)


def _triangle_area(a: _Point, b: _Point, c: _Point) -> float:
    u = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    v = (c[0] - a[0], c[1] - a[1], c[2] - a[2])
    cross = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    return 0.5 * (cross[0] ** 2 + cross[1] ** 2 + cross[2] ** 2) ** 0.5
