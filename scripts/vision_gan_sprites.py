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
- ``pasted`` (round 11): nothing is learned but the positions. The court is the median train frame, the score
  band is copied from a random real stack, and the two paddles and the ball are pasted at 84 x 84 from
  templates cut out of real frames; an MLP maps z to each frame's paddle heights, ball position and ball
  presence. The composite goes through the same 84 -> 64 resize as real frames, so a fake differs from a real
  stack only in where the objects are and how they move (``--sprites`` and ``--sprite-size`` are unused).
- ``pasted-visible``: the same, with every object kept whole inside the court and the ball always present, so
  the generator cannot hide the objects (in ``pasted`` it learned to push them under the walls).

Usage: python scripts/vision_gan_sprites.py MODE [--sprites K] [--sprite-size S] -- PRETRAIN_ARGS...
e.g. ``python scripts/vision_gan_sprites.py info --sprites 3 -- --data D --steps 2000 --set info_codes=12``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

import rlkit.vision.gan as gan
from rlkit.errors import RLKitError

MODES = ("free", "forced", "info", "pasted", "pasted-visible")
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


SCORE_ROWS = 9  # Pong at 84 x 84: rows 0-8 hold the score digits
FOREGROUND = 15  # |frame - median court| in uint8 units that marks an object pixel


def cut_templates(newest: np.ndarray, court: np.ndarray) -> tuple[list[np.ndarray], list[float], tuple[int, int]]:
    """Cut the enemy paddle, the player paddle and the ball out of real 84 x 84 frames.

    ``newest``: (N, 84, 84) uint8 newest frames; ``court``: their (84, 84) per-pixel median. Returns the three
    templates (each object's pixels minus the court, on a 1-pixel margin), the paddles' column centres and the
    court's first and last row. Paddles are the components in the outer 15% of columns, the ball those in
    between. Frames are max-pooled over two emulator frames, so a moving object is smeared; each template is
    the median of the most common component shape in its zone, which is the object at rest.
    """
    rows = np.flatnonzero(np.abs(court - np.median(court)).max(axis=1) < 1)  # rows that are all court
    top, bottom = int(rows[rows >= SCORE_ROWS].min()), int(rows.max())
    width = court.shape[1]
    found: dict[str, dict[tuple[int, int], list[tuple[np.ndarray, float]]]] = {"enemy": {}, "player": {}, "ball": {}}
    for frame in newest.astype(np.float32):
        delta = frame - court
        mask = np.zeros_like(delta, dtype=bool)
        mask[top : bottom + 1] = np.abs(delta[top : bottom + 1]) > FOREGROUND
        labels, _ = ndimage.label(mask)
        for ys, xs in ndimage.find_objects(labels):
            if ys.start <= top or ys.stop > bottom:  # touches a wall: possibly clipped
                continue
            patch = delta[ys.start - 1 : ys.stop + 1, xs.start - 1 : xs.stop + 1].copy()
            patch[np.abs(patch) <= FOREGROUND / 3] = 0.0
            centre_x = (xs.start + xs.stop - 1) / 2
            kind = "enemy" if centre_x < width * 0.15 else "player" if centre_x > width * 0.85 else "ball"
            found[kind].setdefault(patch.shape, []).append((patch, centre_x))
    if not all(found.values()):
        raise RLKitError("mode pasted could not find both paddles and the ball in the train frames (Pong only).")
    templates, columns = [], []
    for kind in ("enemy", "player", "ball"):
        instances = max(found[kind].values(), key=len)
        templates.append(np.median(np.stack([patch for patch, _ in instances]), axis=0))
        columns.append(float(np.median([x for _, x in instances])))
    return templates, columns[:2], (top, bottom)


class PastedSpriteGenerator(nn.Module):
    """z -> each frame's paddle heights, ball position and presence; real objects pasted on the median court.

    Each stack frame is the max of two emulator frames (as ALE's frame skip pools them), so the generator
    places the objects twice per frame and a moving object smears as it does in real frames.
    """

    def __init__(self, channels: int, z_dim: int, frames: np.ndarray, visible: bool = False,
                 output_size: int = gan.SIZE) -> None:
        super().__init__()
        self.channels, self.z_dim, self.visible, self.output_size = channels, z_dim, visible, output_size
        court = np.median(frames[:, -1].astype(np.float32), axis=0)
        templates, paddle_columns, (self.top, self.bottom) = cut_templates(frames[:, -1], court)
        self.size = court.shape[-1]
        self.register_buffer("court", torch.from_numpy(court), persistent=False)
        bands = torch.from_numpy(frames[:, :, :SCORE_ROWS].astype(np.float32))
        self.register_buffer("score_bands", bands, persistent=False)
        side = max(max(t.shape) for t in templates)
        padded = np.zeros((len(templates), 1, side, side), dtype=np.float32)
        for i, t in enumerate(templates):  # centred in a square canvas, so every template's centre is its own
            y0, x0 = (side - t.shape[0]) // 2, (side - t.shape[1]) // 2
            padded[i, 0, y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]] = t
        self.side = side
        # (K, 2) half extents (x, y) of each object's pixels, to keep whole objects inside the court
        extents = [[(np.ptp(np.flatnonzero(t.any(axis=axis))) + 1) / 2 for axis in (0, 1)] for t in templates]
        self.register_buffer("half_extents", torch.tensor(extents, dtype=torch.float32), persistent=False)
        self.register_buffer("templates", torch.from_numpy(padded), persistent=False)
        # the square's centre sits half a pixel right of an even-width template's centre when side - width is odd
        columns = [col + (side - t.shape[1]) % 2 / 2 for col, t in zip(paddle_columns, templates[:2])]
        self.register_buffer("paddle_columns", torch.tensor(columns, dtype=torch.float32), persistent=False)
        court_mask = torch.zeros(self.size, self.size)
        court_mask[self.top : self.bottom + 1] = 1.0
        self.register_buffer("court_mask", court_mask, persistent=False)
        self.net = nn.Sequential(nn.Linear(z_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, channels * 2 * 5))

    def layout(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2C, 3, 2) object centres (x, y) in 84 x 84 pixels and (N, 2C) ball presence of a latent batch,
        two emulator frames per stack frame."""
        n, c = len(latent), 2 * self.channels
        params = self.net(latent.view(n, -1)[:, : self.z_dim]).view(n, c, 5)
        inset = self.half_extents if self.visible else torch.zeros_like(self.half_extents)
        low, high = self.top + inset[:, 1], self.bottom - inset[:, 1]  # (3,): centre heights that stay in range
        y = low + (torch.tanh(params[..., :3]) + 1) * (high - low) / 2  # enemy, player, ball heights
        ball_x = inset[2, 0] + (torch.tanh(params[..., 3]) + 1) * (self.size - 1 - 2 * inset[2, 0]) / 2
        x = torch.stack([self.paddle_columns[0].expand(n, c), self.paddle_columns[1].expand(n, c), ball_x], dim=-1)
        presence = torch.ones(n, c) if self.visible else torch.sigmoid(params[..., 4] + 2.0)
        return torch.stack([x, y], dim=-1), presence

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        n, c, size, side = len(latent), 2 * self.channels, self.size, self.side
        centres, ball_presence = self.layout(latent)
        k = self.templates.shape[0]
        centres = centres.reshape(n * c * k, 2)
        # affine_grid (align_corners=False): canvas pixel p shows template pixel p - (centre - (side - 1) / 2)
        theta = torch.zeros(n * c * k, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = size / side
        theta[:, :, 2] = (size - 2 * (centres - (side - 1) / 2)) / side - 1
        grid = F.affine_grid(theta, [n * c * k, 1, size, size], align_corners=False)
        layers = F.grid_sample(self.templates.repeat(n * c, 1, 1, 1), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False).view(n, c, k, size, size)
        presence = torch.cat([torch.ones(n, c, 2), ball_presence[..., None]], dim=-1)
        objects = (layers * presence[..., None, None]).sum(dim=2) * self.court_mask
        objects = objects.view(n, self.channels, 2, size, size).amax(dim=2)  # the max-pool of the two frames
        frames = self.court.expand(n, self.channels, size, size) + objects
        bands = self.score_bands[torch.randint(0, len(self.score_bands), (n,))]
        frames = torch.cat([bands, frames[:, :, SCORE_ROWS:]], dim=2).clamp(0.0, 255.0)
        return gan.to_gan_range(frames, self.output_size)


def patch(mode: str, sprites: int, sprite_size: int) -> None:
    """Make ``rlkit pretrain gan`` build a SpriteGenerator in place of DCGAN's generator."""
    original_build = gan.GANPretrainer.build

    def build(self: gan.GANPretrainer) -> None:
        if mode == "info" and self.config.info_codes != CODES_PER_SPRITE * sprites:
            raise RLKitError(f"mode info with {sprites} sprites needs --set info_codes={CODES_PER_SPRITE * sprites} "
                             f"(x, y, vx, vy per sprite), got {self.config.info_codes}.")
        original_build(self)
        z_dim = self.config.z_dim + (0 if mode == "info" else self.config.info_codes)
        channels = self.observation_space.shape[0]
        if mode.startswith("pasted"):
            indices = np.linspace(0, len(self.data) - 1, min(2048, len(self.data))).astype(np.int64)
            self.generator = PastedSpriteGenerator(channels, z_dim, self.data.get_batch(indices),
                                                   visible=mode == "pasted-visible", output_size=self.size)
        else:
            if self.size != gan.SIZE:
                raise RLKitError(f"mode {mode} draws {gan.SIZE}x{gan.SIZE} frames; drop encoder_kwargs.size "
                                 "(only the pasted modes render at another size).")
            court = self.median_frame()[-1]  # the newest frame's median court
            self.generator = SpriteGenerator(mode, channels, z_dim, court, sprites, sprite_size)
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
