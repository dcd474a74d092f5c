"""Procedural closed tracks for the driving env: a smooth star-shaped curve, arc-length tables, projection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Track:
    """A closed centreline sampled densely at (almost) uniform arc length.

    ``points`` (N, 2), ``tangents`` (N, 2) unit, ``normals`` (N, 2) unit, pointing left of the driving direction;
    ``s`` (N,) arc length at each point, ``curvature`` (N,) signed (positive turns left), ``length`` total.
    """

    points: np.ndarray
    tangents: np.ndarray
    normals: np.ndarray
    s: np.ndarray
    curvature: np.ndarray
    length: float
    width: float

    @property
    def spacing(self) -> float:
        return self.length / len(self.points)

    def index_at(self, s: float | np.ndarray) -> np.ndarray:
        """Index of the sample at arc length ``s`` (wrapped)."""
        return (np.round(np.mod(s, self.length) / self.spacing).astype(np.int64)) % len(self.points)

    def point_at(self, s: float | np.ndarray, offset: float | np.ndarray = 0.0) -> np.ndarray:
        """Point(s) at arc length ``s`` and lateral ``offset`` (left positive), linearly interpolated."""
        s = np.mod(np.asarray(s, dtype=np.float64), self.length)
        pos = s / self.spacing
        i0 = np.floor(pos).astype(np.int64) % len(self.points)
        i1 = (i0 + 1) % len(self.points)
        frac = (pos - np.floor(pos))[..., None]
        centre = self.points[i0] * (1.0 - frac) + self.points[i1] * frac
        normal = self.normals[i0] * (1.0 - frac) + self.normals[i1] * frac
        return centre + normal * np.asarray(offset, dtype=np.float64)[..., None]

    def project(self, xy: np.ndarray, hint: int | None = None, window: int = 40) -> tuple[float, float, int]:
        """(arc length, signed lateral offset, nearest index) of ``xy``; searches +-``window`` samples around
        ``hint`` when given, else the whole track."""
        n = len(self.points)
        if hint is None:
            idx = np.arange(n)
        else:
            idx = np.arange(hint - window, hint + window + 1) % n
        d2 = np.sum((self.points[idx] - xy) ** 2, axis=1)
        if hint is not None and d2.min() > self.width**2:  # far off the road: the local window may mislead
            idx = np.arange(n)
            d2 = np.sum((self.points - xy) ** 2, axis=1)
        i = int(idx[int(np.argmin(d2))])
        rel = xy - self.points[i]
        along = float(rel @ self.tangents[i])
        lateral = float(rel @ self.normals[i])
        return float((self.s[i] + along) % self.length), lateral, i


def generate_track(
    rng: np.random.Generator,
    radius: float = 6.0,
    roughness: float = 0.25,
    harmonics: int = 4,
    width: float = 1.5,
    min_turn_radius: float = 1.5,
    spacing: float = 0.1,
) -> Track:
    """A random closed track: a circle of mean ``radius`` whose radius is perturbed by a random Fourier series
    (harmonics 2..``harmonics``, relative amplitude ``roughness``), so the curve is smooth, periodic and
    star-shaped (never self-intersecting). If a draw has a turn tighter than ``min_turn_radius`` or two distant
    stretches of road closer than ``1.5 * width``, the perturbation is scaled down by 0.8 until it is drivable
    (deterministic: no extra random draws)."""
    ks = np.arange(2, max(2, harmonics) + 1)
    amps = rng.uniform(0.3, 1.0, len(ks)) / ks  # higher harmonics smaller
    amps = amps / amps.sum() * roughness
    phases = rng.uniform(0.0, 2.0 * np.pi, len(ks))
    rotation = rng.uniform(0.0, 2.0 * np.pi)
    fine = 2048
    theta = np.linspace(0.0, 2.0 * np.pi, fine, endpoint=False)
    scale = 1.0
    for _ in range(40):
        r = radius * (1.0 + scale * np.sum(amps[:, None] * np.cos(ks[:, None] * theta + phases[:, None]), axis=0))
        xy = np.stack([r * np.cos(theta + rotation), r * np.sin(theta + rotation)], axis=1)
        track = _resample(xy, spacing, width)
        if _drivable(track, min_turn_radius):
            return track
        scale *= 0.8
    return _resample(np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1), spacing, width)


def _resample(xy: np.ndarray, spacing: float, width: float) -> Track:
    seg = np.linalg.norm(np.roll(xy, -1, axis=0) - xy, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(cum[-1])
    n = max(16, int(round(length / spacing)))
    s = np.arange(n) * (length / n)
    closed = np.concatenate([xy, xy[:1]], axis=0)
    points = np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], axis=1)
    # Central differences on the closed, uniformly spaced polyline.
    d1 = (np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)) / (2.0 * length / n)
    d2 = (np.roll(points, -1, axis=0) - 2.0 * points + np.roll(points, 1, axis=0)) / (length / n) ** 2
    speed = np.linalg.norm(d1, axis=1)
    tangents = d1 / speed[:, None]
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    curvature = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / speed**3
    # smooth the numerical curvature a little (window ~ 0.5 m)
    k = max(1, int(round(0.25 / (length / n))))
    kernel = np.ones(2 * k + 1) / (2 * k + 1)
    curvature = np.convolve(np.concatenate([curvature[-k:], curvature, curvature[:k]]), kernel, mode="valid")
    return Track(points, tangents, normals, s, curvature, length, width)


def _drivable(track: Track, min_turn_radius: float) -> bool:
    if np.max(np.abs(track.curvature)) > 1.0 / min_turn_radius:
        return False
    pts = track.points[::4]
    s = track.s[::4]
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    ds = np.abs(s[:, None] - s[None])
    ds = np.minimum(ds, track.length - ds)
    far = ds > 3.0 * track.width
    return bool(np.all(dist[far] > 1.5 * track.width))
