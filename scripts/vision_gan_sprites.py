"""Experiment (docs/vision.md, GAN round 10): the DCGAN discriminator against a layered sprite generator.

The generator draws a learned background (initialised to the median train frame) and K learned sprites
(S x S templates of alpha and intensity at the 64 x 64 scale) placed in every frame of the stack by a
spatial transformer (bilinear sampling, so the positions receive gradients). Everything else is
``rlkit pretrain gan``: the discriminator, its losses, the saved encoder, the run directory.

Modes:
- ``free``: an MLP maps z to each frame's K positions (x, y) and presences.
- ``forced``: the same, with every sprite present and every template at least one opaque pixel.
- ``info``: InfoGAN whose codes are the sprites' parameters: per sprite its position in the newest frame
  and its velocity (x, y, vx, vy, each ~U(-1, 1), scaled by learned per-sprite spreads), so the older frames
  show straight-line motion; needs ``--set info_codes=4K``. The discriminator's linear code head must then
  read every sprite's position and velocity from the trunk, as a linear probe reads the real objects.

Usage: python scripts/vision_gan_sprites.py MODE [--sprites K] [--sprite-size S] -- PRETRAIN_ARGS...
e.g. ``python scripts/vision_gan_sprites.py info --sprites 3 -- --data D --steps 2000 --set info_codes=12``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

import rlkit.vision.gan as gan
from rlkit.errors import RLKitError

MODES = ("free", "forced", "info")
CODES_PER_SPRITE = 4  # info mode: x, y, vx, vy


class SpriteGenerator(nn.Module):
    """Learned background plus ``sprites`` templates composited (alpha blending) into each of C frames."""

    def __init__(self, mode: str, channels: int, z_dim: int, background: torch.Tensor, sprites: int,
                 sprite_size: int) -> None:
        super().__init__()
        self.mode, self.channels, self.z_dim = mode, channels, z_dim
        self.sprites, self.sprite_size = sprites, sprite_size
        self.background = nn.Parameter(background.clone().view(1, 1, gan.SIZE, gan.SIZE))
        self.alpha_logits = nn.Parameter(0.5 * torch.randn(sprites, 1, sprite_size, sprite_size))
        scale = 1.0 if mode == "info" else 0.5
        self.intensity_logits = nn.Parameter(scale * torch.randn(sprites, 1, sprite_size, sprite_size))
        if mode == "info":
            self.spread = nn.Parameter(torch.full((sprites, 2), 1.5))  # sigmoid: 0.82 of the half-canvas
            self.centre = nn.Parameter(torch.zeros(sprites, 2))
            self.speed = nn.Parameter(torch.full((sprites, 2), -3.0))  # softplus: 0.049 half-canvas per frame
        else:
            self.net = nn.Sequential(nn.Linear(z_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                     nn.Linear(256, channels * sprites * 3))

    def positions(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, K, 2) sprite centres in [-1, 1] canvas units and (N, C, K) presences of a latent batch."""
        n, c, k = len(latent), self.channels, self.sprites
        if self.mode == "info":
            codes = latent.view(n, -1)[:, self.z_dim :].view(n, k, CODES_PER_SPRITE)
            newest = self.centre + torch.sigmoid(self.spread) * codes[..., :2]
            velocity = F.softplus(self.speed) * codes[..., 2:]
            t = (torch.arange(c, dtype=latent.dtype) - (c - 1)).view(1, c, 1, 1)  # newest frame at 0
            return newest[:, None] + t * velocity[:, None], torch.ones(n, c, k)
        params = self.net(latent.view(n, -1)[:, : self.z_dim]).view(n, c, k, 3)
        presence = torch.sigmoid(params[..., 2] + 2.0)
        if self.mode == "forced":
            presence = torch.ones_like(presence)
        return torch.tanh(params[..., :2]), presence

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        n, c, k, size = len(latent), self.channels, self.sprites, gan.SIZE
        centres, presence = self.positions(latent)
        centres = centres.reshape(n * c * k, 2)
        zoom = size / self.sprite_size
        theta = torch.zeros(n * c * k, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = zoom
        theta[:, :, 2] = -centres * zoom
        grid = F.affine_grid(theta, [n * c * k, 2, size, size], align_corners=False)
        alpha = torch.sigmoid(self.alpha_logits)
        if self.mode != "free":  # at least one opaque pixel per template: a sprite cannot fade away
            alpha = alpha / alpha.amax(dim=(1, 2, 3), keepdim=True)
        templates = torch.cat([alpha, torch.tanh(self.intensity_logits)], dim=1).repeat(n * c, 1, 1, 1)
        layers = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        layers = layers.view(n, c, k, 2, size, size)
        frames = self.background.expand(n, c, size, size)
        for i in range(k):
            a = layers[:, :, i, 0] * presence[:, :, i, None, None]
            frames = frames * (1 - a) + layers[:, :, i, 1] * a
        return frames


def patch(mode: str, sprites: int, sprite_size: int) -> None:
    """Make ``rlkit pretrain gan`` build a SpriteGenerator in place of DCGAN's generator."""
    original_build = gan.GANPretrainer.build

    def build(self: gan.GANPretrainer) -> None:
        if mode == "info" and self.config.info_codes != CODES_PER_SPRITE * sprites:
            raise RLKitError(f"mode info with {sprites} sprites needs --set info_codes={CODES_PER_SPRITE * sprites} "
                             f"(x, y, vx, vy per sprite), got {self.config.info_codes}.")
        original_build(self)
        court = self.median_frame()[-1]  # the newest frame's median court
        z_dim = self.config.z_dim + (0 if mode == "info" else self.config.info_codes)
        self.generator = SpriteGenerator(mode, self.observation_space.shape[0], z_dim, court, sprites, sprite_size)
        self.modules["generator"] = self.generator
        self.optimizers["generator"] = torch.optim.Adam(self.generator.parameters(), lr=self.config.lr,
                                                        betas=(self.config.beta1, 0.999))

    gan.GANPretrainer.build = build


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--sprites", type=int, default=3)
    parser.add_argument("--sprite-size", type=int, default=8)
    args = parser.parse_args(argv[:split])
    if args.sprites < 1 or not 1 <= args.sprite_size <= gan.SIZE:
        parser.error(f"--sprites must be >= 1 and --sprite-size in 1..{gan.SIZE}")
    patch(args.mode, args.sprites, args.sprite_size)
    from rlkit.cli import main as cli_main

    return cli_main(["pretrain", "gan", *argv[split + 1 :]])


if __name__ == "__main__":
    sys.exit(main())
