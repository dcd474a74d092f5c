"""Encoder files: weights as safetensors with a JSON card in the safetensors metadata.

The card says how to rebuild the module (registered ``encoder`` name + ``encoder_kwargs`` + observation
space) and where it came from (``method``, data directory, manifest sha256, metrics). Loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from rlkit.checkpoint import _atomic_write
from rlkit.errors import RLKitError

FORMAT = "rlkit-encoder-v1"


def space_to_json(space: gym.spaces.Box) -> dict[str, Any]:
    return {"shape": list(space.shape), "dtype": str(np.dtype(space.dtype)),
            "low": float(np.min(space.low)), "high": float(np.max(space.high))}


def space_from_json(data: dict[str, Any]) -> gym.spaces.Box:
    return gym.spaces.Box(data["low"], data["high"], tuple(data["shape"]), np.dtype(data["dtype"]))


def build_encoder(name: str, observation_space: gym.spaces.Space, kwargs: dict[str, Any] | None = None) -> Any:
    """Registered encoder ``name`` built for ``observation_space`` with constructor ``kwargs``."""
    import rlkit.vision  # noqa: F401  (fills ENCODERS)
    from rlkit.registry import ENCODERS

    cls = ENCODERS.get(name)
    try:
        return cls(observation_space, **(kwargs or {}))
    except TypeError as exc:
        raise RLKitError(f"bad encoder_kwargs for {name}: {exc}.") from None


def save_encoder(path: str | Path, encoder: torch.nn.Module, card: dict[str, Any]) -> Path:
    """Write ``encoder``'s state dict and ``card`` (needs ``encoder``, ``encoder_kwargs``, ``observation_space``)
    atomically; also writes the card next to it as ``<name>.json`` for people to read."""
    for key in ("encoder", "encoder_kwargs", "observation_space"):
        if key not in card:
            raise ValueError(f"encoder card needs {key!r}")
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    header = {"format": FORMAT, "card": json.dumps(card)}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    path.with_suffix(".json").write_text(json.dumps(card, indent=1))
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The card of an encoder file, or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise RLKitError(f"encoder file {path} does not exist; pass an encoder.safetensors from `rlkit pretrain`.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RLKitError(f"{path} is corrupt or not a safetensors file ({exc}).") from None
    if header.get("format") != FORMAT:
        raise RLKitError(f"{path} is not an rlkit encoder file (no {FORMAT} header).")
    return json.loads(header["card"])


def load_encoder(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(encoder with the saved weights, card)."""
    card = read_card(path)
    encoder = build_encoder(card["encoder"], space_from_json(card["observation_space"]), card["encoder_kwargs"])
    encoder.load_state_dict(load_file(str(path)))
    return encoder, card
