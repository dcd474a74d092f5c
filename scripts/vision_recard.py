"""Re-save an encoder file with changed encoder kwargs that do not change its weights (a feature-extraction
option: ``pool=grid`` for a ``vit`` trained with mean pooling, ``features=multi`` for a ``dcgan``).

Usage: python scripts/vision_recard.py ENCODER_FILE OUT_FILE KEY=VALUE [KEY=VALUE ...]
The weights are loaded strictly into the encoder built with the new kwargs (a kwarg that changes parameters
fails), and the rest of the card (method, config, data) is kept, with ``recarded_from`` added.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import yaml

from rlkit.vision.encoders import make_encoder
from rlkit.vision.io import load_weights, read_card, save_encoder


def main(path: str, out: str, overrides: dict) -> None:
    """Write ``out``: the encoder at ``path`` with ``overrides`` applied to its card's encoder kwargs."""
    card = read_card(path)
    kwargs = {**card["encoder_kwargs"], **overrides}
    space = gym.spaces.Box(0, 255, tuple(card["observation_shape"]), np.dtype(card.get("observation_dtype", "uint8")))
    encoder = make_encoder(card["encoder"], space, **kwargs)
    load_weights(encoder, path)
    keep = {k: v for k, v in card.items() if k not in ("encoder_kwargs", "features_dim")}
    written = save_encoder(out, encoder, {**keep, "encoder_kwargs": kwargs, "recarded_from": str(path)})
    print(f"wrote {out}: {written['encoder']} {written['encoder_kwargs']} features {written['features_dim']}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])})
