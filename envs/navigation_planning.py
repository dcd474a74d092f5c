"""Occupancy grids and exact 8-connected shortest paths for the navigation env and its expert.

Grid convention: ``grid[i, j]`` is the cell whose centre is ``(x0 + (i + 0.5) * res, y0 + (j + 0.5) * res)``;
``True`` means free. Moves go to the 8 neighbours (cost ``res`` straight, ``res * sqrt(2)`` diagonal); a
diagonal move is allowed only when both cells it cuts past are free (no corner cutting). A* and the
Bellman-Ford distance field use the same moves, so they agree exactly.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

SQRT2 = math.sqrt(2.0)
MOVES = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]


@dataclass(frozen=True)
class Obstacle:
    """An upright box (half extents ``hx``, ``hy``, rotated by ``yaw``) or cylinder (radius ``hx``)."""

    kind: str
    x: float
    y: float
    hx: float
    hy: float
    yaw: float = 0.0


def signed_distance(points: np.ndarray, obstacles: list[Obstacle], half_size: float) -> np.ndarray:
    """Distance from each ``(..., 2)`` point to the nearest obstacle surface or arena wall (negative inside)."""
    px, py = points[..., 0], points[..., 1]
    dist = np.minimum(half_size - np.abs(px), half_size - np.abs(py))  # inner faces of the walls
    for ob in obstacles:
        dx, dy = px - ob.x, py - ob.y
        if ob.kind == "cylinder":
            d = np.hypot(dx, dy) - ob.hx
        else:
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            qx = np.abs(c * dx + s * dy) - ob.hx
            qy = np.abs(-s * dx + c * dy) - ob.hy
            d = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)
        dist = np.minimum(dist, d)
    return dist


def point_clearance(x: float, y: float, obstacles: list[Obstacle], half_size: float) -> float:
    """``signed_distance`` for one point in plain Python (about 1 us per obstacle, 50x faster than numpy)."""
    dist = min(half_size - abs(x), half_size - abs(y))
    for ob in obstacles:
        dx, dy = x - ob.x, y - ob.y
        if ob.kind == "cylinder":
            d = math.hypot(dx, dy) - ob.hx
        else:
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            qx, qy = abs(c * dx + s * dy) - ob.hx, abs(-s * dx + c * dy) - ob.hy
            d = math.hypot(max(qx, 0.0), max(qy, 0.0)) + min(max(qx, qy), 0.0)
        if d < dist:
            dist = d
    return dist


def cell_centers(n: int, res: float, origin: float) -> np.ndarray:
    """``(n, n, 2)`` cell centres of a square grid whose corner is ``(origin, origin)``."""
    c = origin + (np.arange(n) + 0.5) * res
    xs, ys = np.meshgrid(c, c, indexing="ij")
    return np.stack([xs, ys], axis=-1)


def _shift(a: np.ndarray, di: int, dj: int, fill: float | bool) -> np.ndarray:
    """``out[i, j] = a[i + di, j + dj]`` (``fill`` outside)."""
    out = np.full_like(a, fill)
    n, m = a.shape
    out[max(0, -di) : n - max(0, di), max(0, -dj) : m - max(0, dj)] = a[
        max(0, di) : n - max(0, -di), max(0, dj) : m - max(0, -dj)
    ]
    return out


def distance_field(free: np.ndarray, source: tuple[int, int], res: float = 1.0) -> np.ndarray:
    """Exact 8-connected shortest-path distance from ``source`` to every cell (``inf`` if unreachable).

    Vectorised Bellman-Ford: relax all cells along the 8 moves until nothing changes; the result equals
    Dijkstra's (and A*'s) path lengths on the same graph.
    """
    dist = np.full(free.shape, np.inf)
    if not free[source]:
        return dist
    dist[source] = 0.0
    # allowed[k][i, j]: the move from neighbour (i + di, j + dj) into (i, j) is legal
    allowed = []
    for di, dj in MOVES:
        ok = free & _shift(free, di, dj, False)
        if di and dj:
            ok &= _shift(free, di, 0, False) & _shift(free, 0, dj, False)
        allowed.append((di, dj, res * (SQRT2 if di and dj else 1.0), ok))
    while True:
        new = dist
        for di, dj, cost, ok in allowed:
            cand = np.where(ok, _shift(new, di, dj, np.inf) + cost, np.inf)
            new = np.minimum(new, cand)
        if np.array_equal(new, dist):
            return dist
        dist = new


def astar(
    free: np.ndarray, start: tuple[int, int], goal: tuple[int, int], res: float = 1.0
) -> tuple[list[tuple[int, int]], float]:
    """Shortest 8-connected path of cells from ``start`` to ``goal`` and its length; ``([], inf)`` if none.

    Octile-distance heuristic (admissible and consistent for these moves), so the path is optimal.
    """
    n, m = free.shape
    if not (free[start] and free[goal]):
        return [], math.inf

    def h(c: tuple[int, int]) -> float:
        dx, dy = abs(c[0] - goal[0]), abs(c[1] - goal[1])
        return res * (max(dx, dy) + (SQRT2 - 1.0) * min(dx, dy))

    g = {start: 0.0}
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    heap = [(h(start), 0.0, start)]
    closed = set()
    while heap:
        _, gc, cell = heapq.heappop(heap)
        if cell in closed:
            continue
        if cell == goal:
            path = [cell]
            while cell in parent:
                cell = parent[cell]
                path.append(cell)
            return path[::-1], gc
        closed.add(cell)
        i, j = cell
        for di, dj in MOVES:
            a, b = i + di, j + dj
            if not (0 <= a < n and 0 <= b < m) or not free[a, b] or (a, b) in closed:
                continue
            if di and dj and not (free[a, j] and free[i, b]):
                continue
            ng = gc + res * (SQRT2 if di and dj else 1.0)
            if ng < g.get((a, b), math.inf):
                g[(a, b)] = ng
                parent[(a, b)] = cell
                heapq.heappush(heap, (ng + h((a, b)), ng, (a, b)))
    return [], math.inf


def path_length(points: np.ndarray) -> float:
    """Length of a polyline given as ``(k, 2)`` points."""
    return float(np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1))) if len(points) > 1 else 0.0
