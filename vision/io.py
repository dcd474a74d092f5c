"""Encoder files: weights as safetensors, a JSON card in the header; written atomically, loaded without code.

The card holds at least ``encoder`` (registered name), ``encoder_kwargs`` and ``observation_shape``; also
``observation_dtype`` and ``features_dim``, and whatever the producer adds (pretraining method, data, steps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlkit.checkpoint import _atomic_write, read_safetensors_header
from rlkit.errors import RLKitError
from rlkit.registry import ENCODERS
from rlkit.vision.encoders import Encoder, make_encoder

FORMAT = "rlkit-encoder-v1"
REQUIRED = ("encoder", "encoder_kwargs", "observation_shape")


def save_encoder(path: str | Path, encoder: Encoder, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``encoder``'s weights and its card to ``path`` atomically; returns the card written.

    The card starts from ``encoder.spec`` (set by ``make_encoder``) and ``features_dim``; ``card`` adds to or
    overrides it (an encoder built without ``make_encoder`` needs ``encoder``, ``encoder_kwargs`` and
    ``observation_shape`` there)."""
    full = {**(encoder.spec or {}), "features_dim": int(encoder.features_dim), **(card or {})}
    missing = [key for key in REQUIRED if key not in full]
    if missing:
        raise ValueError(f"encoder card lacks {missing}; build the encoder with make_encoder or pass them in card")
    full["observation_shape"] = [int(d) for d in full["observation_shape"]]
    header = {"format": FORMAT, "card": json.dumps(full)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))
    return full


def read_card(path: str | Path) -> dict[str, Any]:
    """The card of an encoder file (header only), or a one-line error if it is missing, corrupt or no encoder."""
    if Path(path).is_dir():
        inside = Path(path) / "encoder.safetensors"
        hint = f"pass {inside}" if inside.is_file() else "pass the encoder.safetensors of a `rlkit pretrain` run"
        raise RLKitError(f"encoder file {path} is a directory; {hint}.")
    header = read_safetensors_header(path, "encoder file", "pass a .safetensors file written by rlkit pretrain",
                                     "pass another encoder file")
    if header.get("format") != FORMAT:
        raise RLKitError(f"{path} is not an rlkit encoder file (no {FORMAT} header); pass one saved by save_encoder.")
    try:
        card = json.loads(header["card"])
    except (KeyError, json.JSONDecodeError):
        raise RLKitError(f"encoder file {path} has a corrupt card (header JSON); re-save the encoder.") from None
    missing = [key for key in REQUIRED if key not in card]
    if missing or not isinstance(card.get("encoder_kwargs"), dict):
        raise RLKitError(f"encoder file {path} has a card without {', '.join(missing) or 'encoder_kwargs'}.")
    if card["encoder"] not in ENCODERS:
        raise RLKitError(
            f"encoder file {path} holds unknown encoder {card['encoder']!r}; registered: {', '.join(ENCODERS.names())}."
        )
    return card


def check_observations(card: dict[str, Any], observation_space: gym.spaces.Space, path: str | Path) -> None:
    """A one-line error unless the env's observations match those the encoder was trained on."""
    shape = list(observation_space.shape or ())
    dtype = str(observation_space.dtype)
    if list(card["observation_shape"]) != shape or card.get("observation_dtype", dtype) != dtype:
        expected = f"{tuple(card['observation_shape'])} {card.get('observation_dtype', '')}".strip()
        raise RLKitError(
            f"encoder file {path} expects observations {expected}, this env gives {tuple(shape)} {dtype}; "
            "use an encoder trained on this env's observations (same frame size, stack and dtype)."
        )


def load_weights(encoder: torch.nn.Module, path: str | Path) -> None:
    """Copy the file's weights into ``encoder`` (same architecture), or a one-line error."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RLKitError(f"encoder file {path} is corrupt ({exc}).") from None
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise RLKitError(f"encoder file {path} does not fit its card's architecture ({detail[:300]}).") from None


def load_encoder(
    path: str | Path, observation_space: gym.spaces.Space, overrides: dict[str, Any] | None = None
) -> Encoder:
    """Build the encoder a file describes for ``observation_space`` and load its weights (``.card`` keeps
    the card, its ``encoder_kwargs`` as built). ``overrides`` change encoder kwargs that leave the weights as
    they are (a feature option such as ``pool=grid`` for a ViT); one that changes the parameters is the
    one-line "does not fit" error."""
    card = read_card(path)
    check_observations(card, observation_space, path)
    if overrides:
        card = {**card, "encoder_kwargs": {**card["encoder_kwargs"], **overrides}}
    encoder = make_encoder(card["encoder"], observation_space, **card["encoder_kwargs"])
    load_weights(encoder, path)
    encoder.card = card
    return encoder
