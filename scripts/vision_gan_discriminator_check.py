"""Does a trained GAN discriminator still tell Pong frames apart? (docs/vision.md, round 7)

Usage: python scripts/vision_gan_discriminator_check.py GAN_RUN_DIR
Loads the run's last checkpoint and prints D's mean output and logit spread on every 20th val stack, on as
many generated stacks, on the median court (the static background), and on the val stacks with their
objects painted over with that court; then how far the objects move a frame's 4x4 trunk map from the
court's, against a random init of the same trunk (seed 1, as ``rlkit probe``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import rlkit.vision.gan  # noqa: F401  (registers the gan pretrainer)
from rlkit.checkpoint import load_checkpoint
from rlkit.run import read_run_config
from rlkit.vision.data import FrameDataset
from rlkit.vision.encoders import make_encoder
from rlkit.vision.gan import to_gan_range
from rlkit.vision.mae import background_frame
from rlkit.vision.pretrain import build_pretrain_config, method_class


def object_shift(trunk: torch.nn.Module, real: torch.Tensor, court: torch.Tensor) -> str:
    """Mean L2 distance between the trunk maps of ``real`` and of the court, and the maps' mean norm."""
    maps, court_maps = trunk.trunk_map(real).flatten(1), trunk.trunk_map(court).flatten(1)
    distance, norm = (maps - court_maps).norm(dim=1).mean().item(), maps.norm(dim=1).mean().item()
    return f"{distance:.3f} of {norm:.3f} ({100 * distance / norm:.1f}%)"


def main(run_dir: str) -> None:
    """Print the checks for the GAN run in ``run_dir``."""
    torch.set_num_threads(1)
    run = Path(run_dir)
    saved = read_run_config(run)
    config = build_pretrain_config("gan", [], saved["config"])
    data, val = FrameDataset(saved["data"], "train"), FrameDataset(saved["data"], "val")
    trainer = method_class("gan")(config, data, val, torch.device("cpu"))
    trainer.load_state(*load_checkpoint(run / "checkpoints" / "last.safetensors"))
    for module in trainer.modules.values():
        module.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        real = to_gan_range(torch.from_numpy(val.get_batch(np.arange(0, len(val), 20))))
        fake = trainer.generate(torch.randn(len(real), config.z_dim + config.info_codes), real)
        court = torch.from_numpy(background_frame(real.numpy()))[None].expand(len(real), -1, -1, -1)
        erased = torch.where((real - court).abs() > 0.04, court, real)
        for name, x in (("real val stacks", real), ("generated", fake), ("median court", court),
                        ("real, objects erased", erased)):
            logit = trainer.logits(x)
            print(f"{name:22s} D {torch.sigmoid(logit).mean():.3f}  logit {logit.mean():+.3f} +/- {logit.std():.3f}")
        torch.manual_seed(1)
        random = make_encoder("dcgan", val.observation_space(), **config.encoder_kwargs).eval()
        print(f"objects move the 4x4 map: trained {object_shift(trainer.disc, real, court)}, "
              f"random init {object_shift(random, real, court)}")


if __name__ == "__main__":
    main(sys.argv[1])
