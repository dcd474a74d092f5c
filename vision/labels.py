"""Ground-truth labels for frame datasets: Atari RAM annotations (AtariARI), PyBullet simulator state, and a
``label_fn`` registry.

A label function maps a running env to ``{label name: int}`` for the state the current frame shows. It is
looked up by env family (``rlkit.envs.env_family``): ``atari`` reads bytes of the console RAM; ``navigation`` and
``driving`` read the simulator's privileged state (``NavigationEnv.ground_truth()`` /
``DrivingEnv.ground_truth()``) and quantise it to one byte per quantity (bins in ``NAVIGATION_BINS`` /
``DRIVING_BINS``). Families without one (classic-control, ...) collect frames only; to add labels for a family,
register a factory::

    @LABEL_FNS.register("my_family")
    def my_family_labels(env_id: str) -> LabelFn | None:
        return LabelFn(names=["speed", "lane"], read=lambda env: {...})  # values in 0..255 for classification

Values must be integers in 0..255 so that probes can classify them over 256 classes, as AtariARI does.

Quantisers (``x`` a physical value, results clipped to 0..255, ``round`` = half up; half away from zero in
``signed``):
    ``linear(x, hi)``: ``round(255 x / hi)``, 0 at 0 and 255 at ``hi`` (ranges, distances);
    ``signed(x, hi)``: ``128 + round(127 x / hi)``, 128 at 0, 1 at ``-hi``, 255 at ``hi`` (offsets, speeds);
    ``angle(a)``: ``round(256 (a + pi) / (2 pi)) mod 256``, 128 at 0, 64 at -pi/2, 192 at pi/2, 0 at +-pi
    (1.41 degrees per unit, wrapping like the angle).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from rlkit.registry import Registry

# AtariARI (Anand et al. 2019, atariari/benchmark/ram_annotations.py): game -> label -> RAM index.
ATARI_RAM_LABELS: dict[str, dict[str, int]] = {
    "pong": {
        "player_y": 51,
        "player_x": 46,
        "enemy_y": 50,
        "enemy_x": 45,
        "ball_x": 49,
        "ball_y": 54,
        "enemy_score": 13,
        "player_score": 14,
    },
    "breakout": {
        "ball_x": 99,
        "ball_y": 101,
        "player_x": 72,
        "blocks_hit_count": 77,
        "score": 84,
    },
}


@dataclasses.dataclass
class LabelFn:
    """Names of the labels and a function reading them from an env (values 0..255)."""

    names: list[str]
    read: Callable[[Any], dict[str, int]]
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


LABEL_FNS: Registry[Callable[[str], LabelFn | None]] = Registry("label family")


def atari_ram_reader(indices: dict[str, int]) -> Callable[[Any], dict[str, int]]:
    """A function reading the named RAM bytes of a (wrapped) ALE env via ``env.unwrapped.ale.getRAM()``."""

    def read(env: Any) -> dict[str, int]:
        ram = env.unwrapped.ale.getRAM()
        return {name: int(ram[index]) for name, index in indices.items()}

    return read


@LABEL_FNS.register("atari")
def atari_labels(env_id: str) -> LabelFn | None:
    """RAM labels of ``ALE/<Game>-v5`` when the game is annotated (see ``ATARI_RAM_LABELS``)."""
    from rlkit.envs.atari import rom_name

    indices = ATARI_RAM_LABELS.get(rom_name(env_id))
    if indices is None:
        return None
    return LabelFn(names=list(indices), read=atari_ram_reader(indices), source="atari-ram", extra={"ram": indices})


def label_fn_for(env_id: str) -> LabelFn | None:
    """The label function of ``env_id``'s family, or None (frames only)."""
    from rlkit.envs import env_family

    family = env_family(env_id)
    return LABEL_FNS.get(family)(env_id) if family in LABEL_FNS else None


def quantise_linear(x: float, hi: float) -> int:
    """``round(255 x / hi)`` clipped to 0..255 (non-finite values give 255)."""
    if not math.isfinite(x):
        return 255
    return int(min(255, max(0, math.floor(255.0 * x / hi + 0.5))))


def quantise_signed(x: float, hi: float) -> int:
    """``128 + round(127 x / hi)`` clipped to 0..255: 128 at zero, 1 at ``-hi``, 255 at ``hi``; halves round away
    from zero, so ``x`` and ``-x`` land symmetrically about 128."""
    units = 127.0 * x / hi
    return int(min(255, max(0, 128 + int(math.copysign(math.floor(abs(units) + 0.5), units)))))


def quantise_angle(a: float) -> int:
    """``round(256 (a + pi) / 2 pi) mod 256``: 128 straight ahead, 192 at +90 degrees (left), 0 behind."""
    return int(math.floor(256.0 * (a + math.pi) / (2 * math.pi) + 0.5)) % 256


# label -> its quantiser and scale, in words (written into the dataset manifest as label_info.bins)
NAVIGATION_BINS: dict[str, str] = {
    "goal_distance": "linear, hi = arena diagonal (11.31 m at the default 8 m arena: 4.4 cm per unit)",
    "goal_path_distance": "linear, hi = arena diagonal (geodesic, longer paths clip to 255)",
    "goal_bearing": "angle (goal direction minus heading; 1.41 degrees per unit, 128 = straight ahead)",
    "obstacle_range": "linear, hi = ray_length (4 m by default: 1.6 cm per unit; robot surface to nearest surface)",
    "front_range": "linear, hi = ray_length (ray from the robot centre along the heading)",
    "left_range": "linear, hi = ray_length (ray at +45 degrees, the left edge of the camera's view)",
    "right_range": "linear, hi = ray_length (ray at -45 degrees, the right edge of the camera's view)",
}

DRIVING_BINS: dict[str, str] = {
    "lateral_offset": "signed, hi = track_width / 2 + off_track_margin (1.05 m by default: 8.3 mm per unit)",
    "heading_error": "angle (car yaw minus centreline direction; 128 = aligned with the road)",
    "speed": "signed, hi = max_speed (3 m/s by default: 2.4 cm/s per unit; below 128 = reversing)",
    "steering": "signed, hi = max_steer (0.5 rad by default)",
    "curvature_ahead": "signed, hi = 1 / min_turn_radius (0.67 1/m by default; centreline 2 m ahead, + = left)",
    "obstacle_range": "linear, hi = ray start + ray_length (4.32 m by default; 255 = no obstacle ahead)",
}


def navigation_quantise(env: Any, truth: dict[str, float]) -> dict[str, int]:
    """Quantise ``NavigationEnv.ground_truth()`` with ``NAVIGATION_BINS``."""
    diagonal = env.arena_size * math.sqrt(2.0)
    out = {name: quantise_linear(truth[name], diagonal) for name in ("goal_distance", "goal_path_distance")}
    out["goal_bearing"] = quantise_angle(truth["goal_bearing"])
    for name in ("obstacle_range", "front_range", "left_range", "right_range"):
        out[name] = quantise_linear(truth[name], env.ray_length)
    return out


def driving_quantise(env: Any, truth: dict[str, float]) -> dict[str, int]:
    """Quantise ``DrivingEnv.ground_truth()`` with ``DRIVING_BINS``."""
    from rlkit.envs.driving import _RAY_START

    return {
        "lateral_offset": quantise_signed(truth["lateral_offset"], env.track.width / 2 + env.off_track_margin),
        "heading_error": quantise_angle(truth["heading_error"]),
        "speed": quantise_signed(truth["speed"], env.max_speed),
        "steering": quantise_signed(truth["steering"], env.max_steer),
        "curvature_ahead": quantise_signed(truth["curvature_ahead"], 1.0 / env.track_kwargs["min_turn_radius"]),
        "obstacle_range": quantise_linear(truth["obstacle_range"], _RAY_START + env.ray_length),
    }


Quantiser = Callable[[Any, dict[str, float]], dict[str, int]]


def _sim_labels(bins: dict[str, str], quantise: Quantiser, source: str) -> LabelFn:
    """A ``LabelFn`` reading ``env.unwrapped.ground_truth()`` and quantising it."""

    def read(env: Any) -> dict[str, int]:
        sim = env.unwrapped
        return quantise(sim, sim.ground_truth())

    return LabelFn(names=list(bins), read=read, source=source, extra={"bins": bins})


@LABEL_FNS.register("navigation")
def navigation_labels(env_id: str) -> LabelFn:
    """Goal distance (Euclidean and geodesic) and bearing, obstacle ranges, from ``NavigationEnv.ground_truth()``."""
    return _sim_labels(NAVIGATION_BINS, navigation_quantise, "navigation-sim")


@LABEL_FNS.register("driving")
def driving_labels(env_id: str) -> LabelFn:
    """Lateral offset, heading error, speed, steering, curvature ahead, obstacle range (``ground_truth()``)."""
    return _sim_labels(DRIVING_BINS, driving_quantise, "driving-sim")
