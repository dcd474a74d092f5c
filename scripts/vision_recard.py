"""Re-save an encoder file with changed encoder kwargs that do not change its weights (a feature-extraction
option: ``pool=grid`` for a ``vit`` trained with mean pooling, ``features=multi`` for a ``dcgan``).

Usage: python scripts/vision_recard.py ENCODER_FILE OUT_FILE KEY=VALUE [KEY=VALUE ...]   (values parsed as in ``--set``)
The weights are loaded strictly into the encoder built with the new kwargs (a kwarg that changes parameters
fails), and the rest of the card (method, config, data) is kept, with ``recarded_from`` added.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np

from rlkit.config import parse_value
from rlkit.errors import RLKitError
from rlkit.vision.io import load_encoder, read_card, save_encoder


def main(path: str, out: str, overrides: dict) -> None:
    """Write ``out``: the encoder at ``path`` with ``overrides`` applied to its card's encoder kwargs."""
    card = read_card(path)
    space = gym.spaces.Box(0, 255, tuple(card["observation_shape"]), np.dtype(card.get("observation_dtype", "uint8")))
    encoder = load_encoder(path, space, overrides)
    keep = {k: v for k, v in encoder.card.items() if k != "features_dim"}
    written = save_encoder(out, encoder, {**keep, "recarded_from": str(path)})
    print(f"wrote {out}: {written['encoder']} {written['encoder_kwargs']} features {written['features_dim']}")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], {k: parse_value(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])})
    except RLKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
