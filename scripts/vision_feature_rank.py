"""Effective dimension of an encoder's features on a frame dataset's val split.

Usage: python scripts/vision_feature_rank.py DATA_DIR ENCODER [ENCODER ...]
ENCODER is an encoder file, or ``random:NAME[:key=value,...]`` for a fresh encoder (seed 1, as `rlkit probe`'s
baseline), e.g. ``random:dcgan:width=16,norm=spectral``. Features of up to 2,000 val frames (every 2nd) are
standardised per feature; the script prints the participation ratio of their covariance spectrum
((sum s)^2 / sum s^2), the share of the top 10 directions and the number of directions that hold 90% of the
variance. Trained trunks whose features collapse into a few directions score low (docs/vision.md, round 6).
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import torch

from rlkit.config import parse_value
from rlkit.errors import RLKitError
from rlkit.vision.data import FrameDataset
from rlkit.vision.encoders import make_encoder
from rlkit.vision.io import load_encoder


def spectrum_summary(features: np.ndarray) -> dict[str, float]:
    """Participation ratio, top-10 share and 90%-variance dimension count of (N, D) features."""
    f = features.astype(np.float64)
    f = (f - f.mean(0)) / (f.std(0) + 1e-8)
    s = np.linalg.svd(f, compute_uv=False) ** 2
    share = np.cumsum(s) / s.sum()
    return {"participation_ratio": float(s.sum() ** 2 / (s**2).sum()), "top10_share": float(share[min(9, len(s) - 1)]),
            "dims_90": int(np.searchsorted(share, 0.9)) + 1}


def build(spec: str, space: gym.spaces.Space) -> torch.nn.Module:
    """The encoder named by ``spec``: a file, or ``random:NAME[:key=value,...]`` (seed 1)."""
    if not spec.startswith("random:"):
        return load_encoder(spec, space)
    _, name, *rest = spec.split(":", 2)
    pairs = rest[0].split(",") if rest else []
    if any("=" not in pair for pair in pairs):
        raise RLKitError(f"{spec!r}: encoder options are key=value pairs, e.g. random:dcgan:width=16,norm=none.")
    kwargs = {k: parse_value(v) for k, v in (pair.split("=", 1) for pair in pairs)}
    torch.manual_seed(1)
    return make_encoder(name, space, **kwargs)


def main(data: str, specs: list[str]) -> None:
    """Print the spectrum summary of each encoder's features on ``data``'s val frames."""
    torch.set_num_threads(1)
    val = FrameDataset(data, "val")
    obs = torch.from_numpy(val.get_batch(np.arange(0, len(val), 2)[:2000]))
    for spec in specs:
        encoder = build(spec, val.observation_space()).eval()
        with torch.no_grad():
            features = torch.cat([encoder(obs[i : i + 250]) for i in range(0, len(obs), 250)]).numpy()
        r = spectrum_summary(features)
        print(f"{spec}: participation ratio {r['participation_ratio']:.1f}, top-10 share {r['top10_share']:.3f}, "
              f"dims for 90% {r['dims_90']}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python scripts/vision_feature_rank.py DATA_DIR ENCODER [ENCODER ...]")
    try:
        main(sys.argv[1], sys.argv[2:])
    except RLKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
