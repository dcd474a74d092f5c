"""Ground-truth labels for frame datasets: Atari RAM annotations (AtariARI) and a ``label_fn`` registry.

A label function maps a running env to ``{label name: int}`` for the state the current frame shows. It is
looked up by env family (``rlkit.envs.env_family``): ``atari`` reads bytes of the console RAM. Families
without one (classic-control, the PyBullet driving / navigation sims while they are being built) collect
frames only; to add labels for a family, register a factory::

    @LABEL_FNS.register("driving")
    def driving_labels(env_id: str) -> LabelFn | None:
        return LabelFn(names=["speed", "lane"], read=lambda env: {...})  # values in 0..255 for classification

Values must be integers in 0..255 so that probes can classify them over 256 classes, as AtariARI does.
"""

from __future__ import annotations

import dataclasses
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
