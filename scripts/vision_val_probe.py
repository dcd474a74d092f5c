"""Model selection without the test split: linear probes on frozen features, trained on every 4th train frame
(at most 10 epochs, patience 3), early-stopped on val and scored on val. Optimistic (val both stops and scores),
but equally so for every encoder; used to choose pretraining settings before the one `rlkit probe` on test.

Usage: python scripts/vision_val_probe.py ENCODER_FILE DATA_DIR [nobase] [whiten] [bin=N] [KEY=VALUE ...]
Prints the val F1 of the 4 varying Pong labels (and the 8-label mean) for the encoder file and (unless
``nobase``) for a random init of the same architecture (seed 1, as ``rlkit probe``). ``KEY=VALUE`` overrides
an encoder kwarg of the card for both (e.g. ``features=multi`` for a ``dcgan`` file; values are parsed as
in ``--set``), so a feature-extraction option can be compared on a trained encoder without retraining.
Two diagnostics, off the AtariARI protocol: ``whiten`` PCA-whitens the features first (every component
above 1e-3 of the largest singular value, fitted on the train frames), which removes the probe's
sensitivity to how the features are conditioned; ``bin=N`` divides the 4 varying labels by N (coarser
positions: N byte values per class).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from rlkit.config import parse_value
from rlkit.errors import RLKitError
from rlkit.vision.data import FrameDataset
from rlkit.vision.encoders import make_encoder
from rlkit.vision.io import load_encoder
from rlkit.vision.probe import extract_features, probe_features

VARYING = ["player_y", "enemy_y", "ball_x", "ball_y"]


def whitened(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """PCA-whiten ``train`` and ``others`` with the train frames' components above 1e-3 of the largest."""
    mean = train.mean(0, dtype=np.float64)
    _, singular, components = np.linalg.svd(train - mean, full_matrices=False)
    keep = singular > singular[0] * 1e-3
    transform = components[keep].T / singular[keep] * np.sqrt(len(train))
    return [((x - mean) @ transform).astype(np.float32) for x in (train, *others)]


def main(path: str, data: str, baseline: bool = True, overrides: dict | None = None, whiten: bool = False,
         bin_size: int = 1) -> None:
    """Print val-probe F1 (varying labels) of the encoder at ``path`` and of its random init."""
    torch.set_num_threads(1)
    train, val = FrameDataset(data, "train"), FrameDataset(data, "val")
    sub = np.arange(0, len(train), 4)
    names = train.label_names
    space = train.observation_space()
    encoders = {"pretrained": load_encoder(path, space, overrides)}
    if baseline:
        card = encoders["pretrained"].card
        torch.manual_seed(1)
        encoders["random"] = make_encoder(card["encoder"], space, **card["encoder_kwargs"])
    labels_train = train.get_batch(sub, "labels")
    labels_val = val.get_batch(np.arange(len(val)), "labels")
    varying = [names.index(n) for n in VARYING]
    labels_train[:, varying] //= bin_size
    labels_val[:, varying] //= bin_size
    for key, encoder in encoders.items():
        start = time.time()
        feats = extract_features(encoder, train, indices=sub)
        feats_val = extract_features(encoder, val)
        if whiten:
            feats, feats_val = whitened(feats.astype(np.float64), feats_val.astype(np.float64))
        scores = probe_features({"train": feats, "val": feats_val, "test": feats_val},
                                {"train": labels_train, "val": labels_val, "test": labels_val}, names,
                                max_epochs=10, patience=3)
        f1 = {n: scores[n]["f1_weighted"] for n in names}
        print(f"{key:10s} val-probe varying mean {np.mean([f1[n] for n in VARYING]):.3f} "
              + " ".join(f"{n}={f1[n]:.3f}" for n in VARYING) + f" all8={np.mean(list(f1.values())):.3f}"
              + f" [{time.time() - start:.0f}s]", flush=True)


if __name__ == "__main__":
    rest = sys.argv[3:]
    extra = {k: parse_value(v) for k, v in (a.split("=", 1) for a in rest if "=" in a)}
    bin_size = int(extra.pop("bin", 1))  # the rest are encoder kwargs
    try:
        main(sys.argv[1], sys.argv[2], baseline="nobase" not in rest, overrides=extra, whiten="whiten" in rest,
             bin_size=bin_size)
    except RLKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
