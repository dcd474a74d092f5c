"""DCGAN pretraining (Radford et al. 2016) on frame stacks; the discriminator trunk becomes an encoder.

Frames are resized 84x84 -> 64x64 (bilinear, antialiased), the natural DCGAN size, and scaled to [-1, 1]
(``encoder_kwargs.size=84`` keeps them at 84x84 with a geometry 84 -> 42 -> 21 -> 11 -> 5, see ``GEOMETRIES``);
all C stacked frames are generated together (a short clip). Generator: z (100) -> 4x4x8k -> stride-2
transposed convs 4k, 2k, k -> C x 64 x 64, BatchNorm + ReLU, tanh. Discriminator (the ``dcgan`` encoder)
mirrors it: stride-2 convs k, 2k, 4k, 8k with LeakyReLU 0.2; its features are the flattened 4x4x8k map.
Adam 2e-4, beta1 0.5, non-saturating generator loss.

Stabilisers (defaults; the paper's recipe collapsed on Pong, see docs/vision.md): spectral normalisation of
the discriminator's convolutions instead of BatchNorm (Miyato et al. 2018; ``encoder_kwargs.norm=batch`` gives
the paper's BatchNorm discriminator, ``none`` neither), instance noise on both real and generated inputs,
annealed linearly to zero over the run (Sønderby et al. 2017), and one-sided label smoothing of the real
targets (Salimans et al. 2016). Optional: a minibatch standard-deviation channel in the discriminator head
(Karras et al. 2018; ``minibatch_std``; the saved encoder, the trunk, stays per-frame). Pong frames are one
constant court with a few moving pixels: with BatchNorm over all-real and all-fake batches the discriminator
can separate the two by batch statistics alone, and it won outright (generator: grey noise). With the
defaults the generator draws the court, but collapses to one frame without paddles or ball, and the
discriminator features still do not beat a random init on the Pong probe (docs/vision.md).

Further options, off by default, each measured on Pong in docs/vision.md (round 6): ``condition=past``
(adversarial next-frame prediction: a U-Net generator draws the newest frame from the older ones),
``condition=labels`` (a conditional GAN on the dataset's ground-truth labels with a projection discriminator),
``recon_weight`` (FastGAN's reconstructing discriminator; ``adversarial=false`` is its autoencoder ablation),
``info_codes`` (InfoGAN), ``ortho_weight`` (orthogonal filters in the discriminator trunk),
``uniformity_weight`` (Wang & Isola's uniformity loss on the trunk's real-frame features) and
``contrastive_weight`` (ContraD's SimCLR loss on the discriminator trunk, Jeong & Shin 2021).

Sample quality: Fréchet distance between features of real val frames and of samples, computed with a fixed
*randomly initialised* conv net (seed 0). It is NOT the standard Inception FID and is not comparable with
published FIDs; compare it only between runs on the same data (the real-vs-real distance is its floor).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.errors import RLKitError
from rlkit.registry import ENCODERS, PRETRAINERS
from rlkit.vision.encoders import Encoder, _require_image, make_encoder
from rlkit.vision.mae import background_frame
from rlkit.vision.metrics import frechet_distance
from rlkit.vision.pretrain import PretrainConfig, Pretrainer, recalibrated_batch_norms

SIZE = 64
"""the default side of the GAN's frames (DCGAN's natural size)"""
LABEL_VALUES = 256
"""values a label can take: rlkit collect stores each label as one byte"""

# Per side: the discriminator's four (kernel, stride, padding) convolutions. The generator runs them in reverse
# as transposed convolutions from a z projection of the last layer's grid.
# 84 = the agent's frames unresized: 84 -> 42 -> 21 -> 11 -> 5 and back (kernel 3 where 4 would not divide).
GEOMETRIES: dict[int, tuple[tuple[int, int, int], ...]] = {
    64: ((4, 2, 1), (4, 2, 1), (4, 2, 1), (4, 2, 1)),
    84: ((4, 2, 1), (4, 2, 1), (3, 2, 1), (3, 2, 0)),
}


def geometry(size: int) -> tuple[tuple[tuple[int, int, int], ...], tuple[int, ...]]:
    """The convolution specs of a DCGAN at ``size`` x ``size`` (see ``GEOMETRIES``) and the side of each layer's
    output map (64: 32, 16, 8, 4; 84: 42, 21, 11, 5)."""
    if size not in GEOMETRIES:
        raise RLKitError(f"dcgan size={size} is not supported; choose one of: {', '.join(map(str, GEOMETRIES))}.")
    specs, grids, side = GEOMETRIES[size], [], size
    for kernel, stride, padding in specs:
        side = (side + 2 * padding - kernel) // stride + 1
        grids.append(side)
    return specs, tuple(grids)


def _init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def to_gan_range(obs: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """uint8 / [0, 255] frames (N, C, H, W) -> [-1, 1] at ``size`` x ``size`` (resized if needed)."""
    x = obs.float() * (2.0 / 255.0) - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


FEATURE_CHOICES = ("last", "multi", "layer1", "layer2", "layer3", "layer4")


@ENCODERS.register("dcgan")
class DCGANDiscriminator(Encoder):
    """DCGAN discriminator trunk as an encoder: (C, H, W) frames -> 4x4x8k features (resized to 64x64).

    ``size``: the side the frames are resized to, 64 (default, DCGAN's) or 84 (the agent's frames as they
    are, no resize: convolutions 84 -> 42 -> 21 -> 11 -> 5, so the last map is 5x5x8k; see ``GEOMETRIES``).

    ``norm``: ``spectral`` (default) wraps every convolution in spectral normalisation and uses no BatchNorm;
    ``batch`` is the paper's discriminator (BatchNorm after every convolution but the first); ``none`` has
    neither (convolutions with biases). ``features``: ``last`` (default) is the flattened 4x4x8k map; ``multi``
    is DCGAN's evaluation protocol (Radford et al. 2016, section 5.1): every layer's activations max-pooled to a
    4x4 grid and concatenated (4x4x15k); ``layer1``-``layer4`` is one layer's whole activation map, flattened
    without pooling (32x32xk, 16x16x2k, 8x8x4k, 4x4x8k; ``layer4`` equals ``last``), a per-layer linear probe
    that keeps the finer positions of the earlier layers. The weights are the same for every choice, so each
    reads the same encoder file.
    ``motion``: the first convolution also sees the C - 1 absolute differences of consecutive stacked frames
    (``|x[t] - x[t-1]| - 1`` on the [-1, 1] scale, so a static pixel reads -1): in Pong they are zero except
    at the ball and the paddles, so a generator drawing one still court cannot pass for a real clip."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        width: int = 64,
        norm: str = "spectral",
        features: str = "last",
        motion: bool = False,
        size: int = SIZE,
    ) -> None:
        super().__init__()
        specs, self.grids = geometry(int(size))
        self.size = int(size)
        channels, _, _ = _require_image(type(self).__name__, observation_space)
        if motion and channels < 2:
            raise RLKitError(f"dcgan motion=true needs a stack of frames; this observation has {channels} channel.")
        self.motion = bool(motion)
        if norm not in ("spectral", "batch", "none"):
            raise RLKitError(f"dcgan norm={norm!r} is not valid; choose one of: spectral, batch, none.")
        if features not in FEATURE_CHOICES:
            raise RLKitError(f"dcgan features={features!r} is not valid; choose one of: {', '.join(FEATURE_CHOICES)}.")
        self.features = features
        self.scale_uint8 = observation_space.dtype == np.uint8
        self.norm = norm
        k = width
        layers: list[nn.Module] = []
        c_first = 2 * channels - 1 if self.motion else channels
        channel_pairs = ((c_first, k), (k, 2 * k), (2 * k, 4 * k), (4 * k, 8 * k))
        for i, ((c_in, c_out), (kernel, stride, padding)) in enumerate(zip(channel_pairs, specs)):
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=norm != "batch")
            layers.append(conv)
            if norm == "batch" and i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.trunk = nn.Sequential(*layers)
        if features == "multi":
            self.features_dim = 15 * k * 4 * 4
        else:  # layer i of 4: 2^(i-1) k channels on its grid (64: 32, 16, 8, 4); "last" is layer 4
            layer = 4 if features == "last" else int(features[-1])
            self.features_dim = k * 2 ** (layer - 1) * self.grids[layer - 1] ** 2
        self.apply(_init)
        if norm == "spectral":  # after the init, so the power iteration starts from the final weights
            for module in self.trunk:
                if isinstance(module, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(module)

    def with_motion(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] frames (N, C, H, W) -> the trunk's input: the frames, plus their motion channels if on."""
        if not self.motion:
            return x
        return torch.cat([x, (x[:, 1:] - x[:, :-1]).abs() - 1.0], dim=1)

    def trunk_map(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] input at ``size`` -> the last map (N, 8k, g, g), g the last grid (4 at 64)."""
        return self.trunk(self.with_motion(x))

    def trunk_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[-1, 1] input at ``size`` -> its layer-3 map (N, 4k, 8, 8 at 64) and last map, in one pass."""
        x, seen, layer3 = self.with_motion(x), 0, None
        for module in self.trunk:
            x = module(x)
            if isinstance(module, nn.LeakyReLU):
                seen += 1
                if seen == 3:
                    layer3 = x
        return layer3, x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # x is in [0, 1] (uint8 scaled by Encoder.forward); the GAN saw [-1, 1] at size x size.
        x = to_gan_range(x * 255.0, self.size)
        if self.features == "last":
            return self.trunk_map(x).flatten(1)
        x = self.with_motion(x)
        if self.features != "multi":  # one layer's full map: stop after its activation
            wanted, seen = int(self.features[-1]), 0
            for module in self.trunk:
                x = module(x)
                if isinstance(module, nn.LeakyReLU):
                    seen += 1
                    if seen == wanted:
                        return x.flatten(1)
        pooled = []  # DCGAN's evaluation features: every layer's activations max-pooled to 4x4, concatenated
        for module in self.trunk:
            x = module(x)
            if isinstance(module, nn.LeakyReLU):
                pooled.append(F.adaptive_max_pool2d(x, 4).flatten(1))
        return torch.cat(pooled, dim=1)


AUGMENTATIONS = ("translation", "cutout")


def translate(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each image of (N, C, H, W) by its own ``shifts[n] = (dy, dx)`` pixels, filling with -1 (black on
    the [-1, 1] scale); differentiable (DiffAugment's translation, Zhao et al. 2020)."""
    n, _, h, w = x.shape
    pad = int(shifts.abs().max()) if len(shifts) else 0
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    rows = torch.arange(h, device=x.device)[None] + pad - shifts[:, :1].to(x.device)  # (N, H)
    cols = torch.arange(w, device=x.device)[None] + pad - shifts[:, 1:].to(x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Set a ``size`` x ``size`` square around each image's ``centres[n] = (y, x)`` to 0 (DiffAugment's cutout)."""
    _, _, h, w = x.shape
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    cy, cx = (centres[:, :1, None].to(x.device), centres[:, 1:, None].to(x.device))
    low, high = -(size // 2), size - size // 2
    inside = (ys - cy >= low) & (ys - cy < high) & (xs - cx >= low) & (xs - cx < high)  # (N, H, W)
    return x * (~inside)[:, None].to(x.dtype)


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. (2016): mean over features of the squared difference between the batch means of
    (N, D) real and generated features; gradients flow into ``fake_features`` only."""
    return (fake_features.mean(0) - real_features.detach().mean(0)).pow(2).mean()


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over the batch of the squared gradient norm of the discriminator's
    logits with respect to its real ``inputs`` (which must require grad); differentiable, for the D loss."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     mix: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean of (|grad critic(x)| - 1)^2 at x = mix * real + (1 - mix) * fake,
    one mixing weight per row of ``mix`` (N, 1, 1, 1); differentiable, for the critic's loss."""
    mixed = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def minibatch_std(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W) filled with the batch's mean feature standard deviation (Karras et al.
    2018): a generator that collapses to one frame gives batches with no spread, which the head can see."""
    std = (features.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    return std.expand(features.shape[0], 1, *features.shape[2:])


def upsampling_layers(channels: int, width: int, size: int = SIZE) -> list[nn.Module]:
    """DCGAN's generator body: 4x4x8k -> stride-2 transposed convs 4k, 2k, k (BatchNorm, ReLU) -> C x 64 x 64
    (tanh); at ``size`` 84: 5x5x8k -> 11, 21, 42 -> 84, the discriminator's convolutions in reverse."""
    k = width
    specs = geometry(size)[0][::-1]
    layers: list[nn.Module] = []
    for (c_in, c_out), spec in zip(((8 * k, 4 * k), (4 * k, 2 * k), (2 * k, k)), specs):
        layers += [nn.ConvTranspose2d(c_in, c_out, *spec, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return layers + [nn.ConvTranspose2d(k, channels, *specs[-1], bias=False), nn.Tanh()]


def z_projection(z_dim: int, width: int, size: int = SIZE) -> list[nn.Module]:
    """DCGAN's first generator layer: (N, z_dim, 1, 1) -> the last discriminator grid (4x4 at 64) x 8k."""
    grid = geometry(size)[1][-1]
    return [nn.ConvTranspose2d(z_dim, 8 * width, grid, 1, 0, bias=False), nn.BatchNorm2d(8 * width), nn.ReLU()]


class Generator(nn.Module):
    """z -> 4x4x8k -> 8x8x4k -> 16x16x2k -> 32x32xk -> C x 64 x 64 (tanh); at ``size`` 84 the grids are
    5, 11, 21, 42, 84."""

    def __init__(self, channels: int, width: int = 64, z_dim: int = 100, size: int = SIZE) -> None:
        super().__init__()
        self.net = nn.Sequential(*z_projection(z_dim, width, size), *upsampling_layers(channels, width, size))
        self.z_dim = z_dim
        self.apply(_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.z_dim, 1, 1))


class NextFrameGenerator(nn.Module):
    """Conditional generator for ``condition=past``: the C - 1 older frames and z -> the newest frame.

    A U-Net (Ronneberger et al. 2015; pix2pix's generator, Isola et al. 2017) at DCGAN's widths: stride-2
    convs k, 2k, 4k, 8k (LeakyReLU 0.2, BatchNorm after the first) take the past frames to 4x4x8k; z enters
    there as DCGAN's 4x4x8k projection; stride-2 transposed convs 4k, 2k, k, 1 (BatchNorm, ReLU) come back
    up, each also fed the encoder map of its size. The output is a change to the newest past frame in
    pre-tanh space, ``tanh(atanh(last) + delta)``: with delta = 0 it copies the last frame exactly, so the
    net starts from "nothing moved" and learns the motion. At ``size`` 84 the grids are those of the
    84x84 discriminator (42, 21, 11, 5)."""

    def __init__(self, channels: int, width: int = 64, z_dim: int = 100, size: int = SIZE) -> None:
        super().__init__()
        k = width
        specs = geometry(size)[0]
        sizes = ((channels - 1, k), (k, 2 * k), (2 * k, 4 * k), (4 * k, 8 * k))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, *spec, bias=i == 0),
                          *([nn.BatchNorm2d(c_out)] if i > 0 else []), nn.LeakyReLU(0.2))
            for i, ((c_in, c_out), spec) in enumerate(zip(sizes, specs))
        )
        self.project = nn.Sequential(*z_projection(z_dim, width, size))
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c_in, c_out, *spec, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
            for (c_in, c_out), spec in zip(((16 * k, 4 * k), (8 * k, 2 * k), (4 * k, k)), specs[::-1])
        )
        self.out = nn.ConvTranspose2d(2 * k, 1, *specs[0])
        self.z_dim = z_dim
        self.apply(_init)
        nn.init.zeros_(self.out.bias)

    def forward(self, past: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, C-1, S, S) past frames in [-1, 1] and (N, z_dim) noise -> the newest frame (N, 1, S, S)."""
        skips, x = [], past
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = torch.cat([x, self.project(z.view(len(z), self.z_dim, 1, 1))], dim=1)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = torch.cat([block(x), skip], dim=1)
        last = past[:, -1:].clamp(-0.999, 0.999)
        return torch.tanh(torch.atanh(last) + self.out(x))


class LabelGenerator(nn.Module):
    """Conditional generator for ``condition=labels`` (a class-conditional GAN over the dataset's ground-truth
    labels, Mirza & Osindero 2014): each of the L labels (a byte value 0-255, e.g. an Atari RAM variable) picks
    a learned ``embedding``-wide vector; the L vectors are concatenated to z and DCGAN's generator draws the
    whole stack from them."""

    def __init__(self, channels: int, labels: int, width: int = 64, z_dim: int = 100, size: int = SIZE,
                 embedding: int = 16) -> None:
        super().__init__()
        self.embed = LabelEmbedding(labels, embedding)
        self.body = Generator(channels, width, z_dim + labels * embedding, size)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) noise and (N, L) int labels in [0, 255] -> (N, C, S, S) in [-1, 1]."""
        return self.body(torch.cat([z, self.embed(labels).flatten(1)], dim=1))


class LabelEmbedding(nn.Module):
    """One learned vector per (label, byte value): (N, L) ints in [0, 255] -> (N, L, dim)."""

    def __init__(self, labels: int, dim: int, init_zero: bool = False) -> None:
        super().__init__()
        self.table = nn.Embedding(labels * LABEL_VALUES, dim)
        if init_zero:
            nn.init.zeros_(self.table.weight)
        else:
            nn.init.normal_(self.table.weight, 0.0, 1.0)
        self.register_buffer("offsets", torch.arange(labels) * LABEL_VALUES, persistent=False)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels.long() + self.offsets)


class ReconDecoder(nn.Module):
    """The discriminator's self-supervision decoder (FastGAN, Liu et al. 2021): the trunk's 4x4x8k map ->
    C x 64 x 64 frames, the generator's transposed convs 4k, 2k, k, C (BatchNorm, ReLU, tanh). It trains with
    the discriminator and is not part of the saved encoder. ``linear`` exists at size 64 only."""

    def __init__(self, channels: int, width: int = 64, kind: str = "deep", size: int = SIZE) -> None:
        super().__init__()
        if kind == "linear":  # each 4x4 cell's 8k features -> its own 16x16 patch, one linear map, then tanh
            if size != SIZE:
                raise RLKitError(f"recon_decoder=linear needs size {SIZE} (its 4x4 cells tile the frame); "
                                 f"use recon_decoder=deep at size {size}.")
            self.net = nn.Sequential(nn.ConvTranspose2d(8 * width, channels, SIZE // 4, SIZE // 4), nn.Tanh())
        else:
            self.net = nn.Sequential(*upsampling_layers(channels, width, size))
        self.apply(_init)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def orthogonal_penalty(modules: Any) -> torch.Tensor:
    """Sum over the convolutions in ``modules`` of ||W W^T * (1 - I)||_F^2, W their (out, in*k*k) weights:
    zero when the filters of every layer are mutually orthogonal (their norms are left free)."""
    total = torch.zeros(())
    for module in modules:
        if isinstance(module, nn.Conv2d):
            w = module.weight.flatten(1)
            gram = w @ w.T
            total = total + (gram - torch.diag(torch.diagonal(gram))).pow(2).sum()
    return total


def uniformity_loss(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity of (N, ...) features on the unit sphere (Wang & Isola 2020): ``log mean_{i != j}
    exp(-t ||f_i - f_j||^2)`` over the L2-normalised feature vectors of a batch. It is 0 when every frame maps
    to the same direction (collapse) and falls as the frames spread apart; no feature can lower it by dying."""
    z = F.normalize(features.flatten(1), dim=1)
    n = len(z)
    sq_dist = (2 - 2 * z @ z.T).clamp_min(0)
    off_diagonal = sq_dist[~torch.eye(n, dtype=torch.bool, device=z.device)]
    return torch.logsumexp(-t * off_diagonal, dim=0) - math.log(n * (n - 1))


def nt_xent_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020) of two (N, D) embeddings of the same N frames: each of the 2N
    L2-normalised vectors must pick its partner among the other 2N - 1 by cosine similarity / ``temperature``
    (softmax cross-entropy, averaged over all 2N)."""
    z = F.normalize(torch.cat([view_a, view_b]).flatten(1), dim=1)
    n = len(view_a)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def temporal_partners(episode: np.ndarray, step: np.ndarray, offset: int) -> np.ndarray:
    """For each dataset position, the position of the frame ``offset`` steps later in its episode; where the
    episode ends sooner, the frame ``offset`` steps earlier; where neither exists, the position itself."""
    key = episode.astype(np.int64) * (1 << 32) + step.astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    partner = np.arange(len(key))
    for target in (key - offset, key + offset):  # later last, so it wins where both exist
        where = np.clip(np.searchsorted(sorted_key, target), 0, len(key) - 1)
        found = sorted_key[where] == target
        partner[found] = order[where[found]]
    return partner


def stdim_loss(global_now: torch.Tensor, local_now: torch.Tensor, local_later: torch.Tensor,
               global_to_local: nn.Module, local_to_local: nn.Module) -> torch.Tensor:
    """ST-DIM (Anand et al. 2019): InfoNCE at every cell (h, w) of the later (N, D, H, W) map: row i's global
    feature (N, G), and separately its own cell (h, w) of ``local_now``, must score the later map's cell of row
    i above those of the other rows, with bilinear scores ``global_to_local(g) . l`` and
    ``local_to_local(l) . l'``; the sum of the two cross-entropies, each averaged over rows and cells."""
    n = len(global_now)
    later = local_later.flatten(2).permute(2, 1, 0)  # (HW, D, N)
    now = local_now.flatten(2).permute(2, 0, 1)  # (HW, N, D)
    target = torch.arange(n, device=global_now.device).repeat(later.shape[0])
    global_scores = global_to_local(global_now).unsqueeze(0) @ later  # (HW, N, N): row i, column j
    local_scores = local_to_local(now) @ later
    return F.cross_entropy(global_scores.reshape(-1, n), target) + F.cross_entropy(local_scores.reshape(-1, n), target)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, background: torch.Tensor | None,
                        foreground_weight: float, threshold: float = 0.04) -> torch.Tensor:
    """Mean squared error of ``recon`` against ``target`` ([-1, 1] frames), each pixel weighted 1, or
    1 + ``foreground_weight`` where the target differs from ``background`` by more than ``threshold``
    (0.04 on the [-1, 1] scale = 0.02 on [0, 1], as the MAE's), normalised by the total weight."""
    error = (recon - target).pow(2)
    if background is None or foreground_weight == 0:
        return error.mean()
    weight = 1.0 + foreground_weight * ((target - background).abs() > threshold).to(error.dtype)
    return (error * weight).sum() / weight.sum()


class FeatureNet(nn.Module):
    """Fixed, randomly initialised (seed 0) conv net: the in-house feature space of the Fréchet distance."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        generator = torch.random.fork_rng()
        with generator:
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            )
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def image_grid(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """(N, H, W) in [-1, 1] -> one uint8 grid image (rows x columns) with 2-pixel gaps."""
    n, h, w = images.shape
    rows = (n + columns - 1) // columns
    grid = np.zeros((rows * (h + 2), columns * (w + 2)), dtype=np.uint8)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = pixels[i]
    return grid


@dataclasses.dataclass
class GANConfig(PretrainConfig):
    encoder: str = "dcgan"
    """the discriminator trunk (encoder_kwargs.width = k, default 64)"""
    lr: float = 2e-4
    """Adam learning rate of the generator, and of the discriminator unless ``disc_lr`` is set (DCGAN)"""
    disc_lr: float = 0.0
    """discriminator learning rate; 0 uses ``lr`` (a larger one is the two time-scale update rule, TTUR)"""
    instance_noise: float = 0.1
    """std of Gaussian noise added to every discriminator input (real and fake, [-1, 1] scale), annealed
    linearly to 0 at ``instance_noise_steps`` (instance noise); 0 turns it off"""
    instance_noise_steps: int = 0
    """step at which the instance noise reaches 0; 0: the run's ``steps`` when it starts (recorded then, so a
    resume with more ``steps`` keeps the schedule the run began with)"""
    real_label: float = 0.9
    """discriminator target for real frames with ``loss=bce`` (one-sided label smoothing; 1.0 turns it off)"""
    loss: str = "bce"
    """adversarial loss: ``bce`` (DCGAN: binary cross-entropy, non-saturating generator loss), ``hinge``
    (SN-GAN, Miyato et al. 2018: the discriminator minimises relu(1 - D(x)) + relu(1 + D(G(z))), the generator
    -D(G(z))) or ``wgan-gp`` (Gulrajani et al. 2017: a critic minimising D(G(z)) - D(x) plus ``gp_weight`` *
    (|grad D(x_mix)| - 1)^2 on random mixes of real and generated stacks, the generator -D(G(z)); the paper's
    recipe also has ``critic_steps=5``, ``beta1=0``, ``lr=1e-4`` and no normalisation in the critic)"""
    gp_weight: float = 10.0
    """with ``loss=wgan-gp``: weight lambda of the gradient penalty"""
    critic_steps: int = 1
    """discriminator updates per generator update (WGAN's n_critic); each update draws its own batch"""
    minibatch_std: bool = False
    """give the discriminator head the batch's feature spread (against mode collapse; not in the encoder)"""
    generator_loss: str = "nonsaturating"
    """``nonsaturating`` (DCGAN: make the discriminator say real) or ``feature_matching`` (Salimans et al. 2016:
    match the batch mean of the discriminator trunk's features on real frames, the encoder's own features)"""
    augment: str = ""
    """differentiable augmentation of every discriminator input, real and generated (DiffAugment, Zhao et al.
    2020): a comma-separated subset of ``translation`` (shifts of up to 1/8 of the side, black fill) and
    ``cutout`` (a square of half the side set to 0); empty turns it off"""
    r1_gamma: float = 0.0
    """weight gamma of the R1 gradient penalty on real frames, gamma/2 * E|grad D(x)|^2 (Mescheder et al. 2018;
    with it a DCGAN converges without normalisation, smoothing or noise); 0 turns it off"""
    beta1: float = 0.5
    """Adam beta1 (DCGAN)"""
    z_dim: int = 100
    """noise dimension"""
    fd_samples: int = 1000
    """samples for the Fréchet distance (in-house features, not Inception FID)"""
    condition: str = "none"
    """``none`` (DCGAN: the generator draws all stacked frames from z), ``past`` (adversarial next-frame
    prediction, Mathieu et al. 2016: the generator sees the older real frames and z and draws the newest; the
    discriminator judges the whole stack, so it has to check that ball and paddles moved as the past implies)
    or ``labels`` (a conditional GAN on the dataset's ground-truth labels: the generator draws a stack for the
    labels of a real one, and a projection discriminator (Miyato & Koyama 2018) scores each stack with its
    labels, so it has to check that the frame shows what the labels say; needs a dataset with labels)"""
    label_embedding: int = 16
    """with ``condition=labels``: width of the generator's learned vector per label value"""
    recon_weight: float = 0.0
    """weight of the discriminator's self-supervised reconstruction loss (FastGAN, Liu et al. 2021): a small
    decoder rebuilds each real input frame from the trunk's 4x4x8k map, so the trunk must keep what the frame
    shows, not only what tells it from a fake; 0 turns it off"""
    recon_decoder: str = "deep"
    """``deep`` (FastGAN's: the generator's transposed convs) or ``linear`` (each cell of the 4x4 map rebuilds
    its own 16x16 patch through one linear map and tanh, so what the frame shows must be linearly readable
    from the trunk's features, as a linear probe reads them)"""
    recon_foreground_weight: float = 20.0
    """extra weight in that loss of pixels differing from the median train frame (the static court), as the
    MAE's ``foreground_weight``"""
    uniformity_weight: float = 0.0
    """weight of the uniformity loss (Wang & Isola 2020) of the trunk's features of real frames: it spreads
    the frames of a batch apart on the unit sphere, so the trunk must keep what tells them apart (in Pong: the
    ball, paddles and scores), against the dimensional collapse of trained trunks; 0 turns it off"""
    contrastive_weight: float = 0.0
    """weight of a contrastive loss on the discriminator trunk, as in ContraD (Jeong & Shin 2021): SimCLR's
    NT-Xent over two views of each real frame (each shifted by up to ``contrastive_shift`` pixels, black fill,
    plus Gaussian noise of std ``contrastive_noise``) through a 2-layer projection head with BatchNorm
    (SimCLR's); frames of a batch differ only where the ball, paddles and scores are, so telling them apart
    needs those; 0 turns it off"""
    contrastive_temperature: float = 0.2
    """NT-Xent temperature"""
    contrastive_shift: int = 2
    """largest shift in pixels (of 64) of a contrastive view, each axis"""
    contrastive_noise: float = 0.1
    """std of the Gaussian noise of a contrastive view ([-1, 1] scale)"""
    temporal_weight: float = 0.0
    """weight of ST-DIM's temporal InfoNCE losses on the discriminator trunk (Anand et al. 2019, the AtariARI
    paper): each real stack's positive is the stack ``temporal_offset`` steps later in its episode, the other
    stacks of the batch are its negatives; global-local (the flattened 4x4 map against each cell of the later
    stack's 8x8 layer-3 map) plus local-local (cell against the same cell); 0 turns it off"""
    temporal_offset: int = 1
    """steps between a stack and its ST-DIM positive (1: ST-DIM's consecutive frames)"""
    adversarial: bool = True
    """false: ablation, train the discriminator trunk on its regularisers alone (``recon_weight``,
    ``uniformity_weight``, ``contrastive_weight``; with reconstruction alone, an autoencoder; with the
    contrastive loss alone, SimCLR); the generator and the real/fake head are not trained"""
    info_codes: int = 0
    """InfoGAN (Chen et al. 2016): number of continuous codes c ~ U(-1, 1) given to the generator besides z; a
    linear head on the discriminator trunk's features predicts them from generated frames, and generator and
    discriminator both minimise its squared error (a mutual-information bound), so whatever the generator
    varies with c (e.g. where the paddles and ball are) the trunk must read linearly; 0 turns it off"""
    info_weight: float = 1.0
    """weight lambda of the InfoGAN code-prediction loss"""
    ortho_weight: float = 0.0
    """weight of an orthogonal regularisation of the discriminator trunk's convolutions (Brock et al. 2017 /
    BigGAN's off-diagonal form): sum over layers of ||W W^T * (1 - I)||_F^2 of each (out, in*k*k) weight (after
    spectral normalisation when on), which keeps the filters of a layer distinct against feature collapse; 0 off"""
    l1_weight: float = 100.0
    """with ``condition=past``: weight of the mean L1 distance between the generated and the real newest frame
    in the generator's loss (pix2pix's 100, Isola et al. 2017); 0 leaves the adversarial loss alone"""


@PRETRAINERS.register("gan")
class GANPretrainer(Pretrainer):
    """DCGAN (non-saturating loss by default; hinge and WGAN-GP as options); the discriminator trunk is the encoder."""

    Config = GANConfig
    name = "gan"
    resume_changeable = Pretrainer.resume_changeable | {"fd_samples"}

    def build(self) -> None:
        cfg = self.config
        if cfg.encoder != "dcgan":
            raise RLKitError(
                f"gan trains the 'dcgan' discriminator as its encoder, not {cfg.encoder!r}; drop --encoder."
            )
        if cfg.r1_gamma < 0:
            raise RLKitError(f"r1_gamma must be >= 0 (0 turns the R1 penalty off), got {cfg.r1_gamma}.")
        if cfg.loss not in ("bce", "hinge", "wgan-gp"):
            raise RLKitError(f"loss={cfg.loss!r} is not valid; choose one of: bce, hinge, wgan-gp.")
        if cfg.gp_weight < 0 or cfg.critic_steps < 1:
            raise RLKitError(f"gp_weight must be >= 0 and critic_steps >= 1, got {cfg.gp_weight} and "
                             f"{cfg.critic_steps}.")
        if cfg.generator_loss not in ("nonsaturating", "feature_matching"):
            raise RLKitError(
                f"generator_loss={cfg.generator_loss!r} is not valid; choose one of: nonsaturating, feature_matching."
            )
        if cfg.condition not in ("none", "past", "labels"):
            raise RLKitError(f"condition={cfg.condition!r} is not valid; choose one of: none, past, labels.")
        labels = len(self.data.label_names)
        if cfg.condition == "labels":
            if labels == 0:
                raise RLKitError(f"condition=labels needs ground-truth labels, but {self.data.dir} has none "
                                 "(collect with labels, or use condition=none).")
            if cfg.label_embedding < 1:
                raise RLKitError(f"label_embedding must be >= 1, got {cfg.label_embedding}.")
            values = self.data.get_batch(np.arange(len(self.data)), "labels")
            if values.min() < 0 or values.max() >= LABEL_VALUES:
                raise RLKitError(f"condition=labels needs label values in 0-{LABEL_VALUES - 1} (one byte each, as "
                                 f"rlkit collect writes them); {self.data.dir} has {values.min()}..{values.max()}.")
        whole_batch = [name for name, on in (
            ("minibatch_std", cfg.minibatch_std), ("generator_loss=feature_matching",
                                                   cfg.generator_loss == "feature_matching"),
            ("recon_weight", cfg.recon_weight > 0), ("uniformity_weight", cfg.uniformity_weight > 0),
            ("contrastive_weight", cfg.contrastive_weight > 0), ("temporal_weight", cfg.temporal_weight > 0),
        ) if on]
        if self.world > 1 and whole_batch:
            raise RLKitError(
                f"{', '.join(whole_batch)}: these terms are computed over the whole batch, and with {self.world} "
                "data-parallel processes each would see only its share, unlike one process at the same global "
                "batch; run them in one process, or turn them off."
            )
        channels = self.observation_space.shape[0]
        if cfg.condition == "past" and channels < 2:
            raise RLKitError(
                f"condition=past predicts the newest of a stack of frames; these frames have {channels} channel "
                "(collect an env with frame stacking, or use condition=none)."
            )
        if cfg.l1_weight < 0:
            raise RLKitError(f"l1_weight must be >= 0, got {cfg.l1_weight}.")
        if cfg.ortho_weight < 0:
            raise RLKitError(f"ortho_weight must be >= 0, got {cfg.ortho_weight}.")
        if cfg.info_codes < 0 or cfg.info_weight < 0:
            raise RLKitError("info_codes and info_weight must be >= 0.")
        if cfg.recon_weight < 0 or cfg.recon_foreground_weight < 0:
            raise RLKitError("recon_weight and recon_foreground_weight must be >= 0.")
        if cfg.recon_decoder not in ("deep", "linear"):
            raise RLKitError(f"recon_decoder={cfg.recon_decoder!r} is not valid; choose one of: deep, linear.")
        if cfg.uniformity_weight < 0:
            raise RLKitError(f"uniformity_weight must be >= 0, got {cfg.uniformity_weight}.")
        if cfg.contrastive_weight < 0 or cfg.contrastive_temperature <= 0 or cfg.contrastive_shift < 0 \
                or cfg.contrastive_noise < 0:
            raise RLKitError("contrastive_weight, contrastive_shift and contrastive_noise must be >= 0 and "
                             "contrastive_temperature > 0.")
        if cfg.temporal_weight < 0 or cfg.temporal_offset < 1:
            raise RLKitError("temporal_weight must be >= 0 and temporal_offset >= 1.")
        if not cfg.adversarial and cfg.recon_weight == 0 and cfg.uniformity_weight == 0 \
                and cfg.contrastive_weight == 0 and cfg.temporal_weight == 0:
            raise RLKitError("adversarial=false trains the discriminator on its regularisers alone; set "
                             "recon_weight, uniformity_weight, contrastive_weight or temporal_weight > 0 too.")
        self.augmentations = [a.strip() for a in cfg.augment.split(",") if a.strip()]
        unknown = sorted(set(self.augmentations) - set(AUGMENTATIONS))
        if unknown:
            raise RLKitError(
                f"augment={cfg.augment!r} names unknown augmentations {unknown}; use a comma-separated subset of "
                f"{', '.join(AUGMENTATIONS)} (or '' for none)."
            )
        self.disc = make_encoder("dcgan", self.observation_space, **cfg.encoder_kwargs)
        width = cfg.encoder_kwargs.get("width", 64)
        self.size = size = self.disc.size
        grid = self.disc.grids[-1]  # side of the trunk's last map: 4 at 64, 5 at 84
        extra = 1 if cfg.minibatch_std else 0  # one channel: the batch's feature standard deviation
        self.disc_head = nn.Conv2d(8 * width + extra, 1, grid, 1, 0, bias=False)
        _init(self.disc_head)
        if self.disc.norm == "spectral":
            nn.utils.parametrizations.spectral_norm(self.disc_head)
        parts: dict[str, nn.Module] = {"trunk": self.disc, "head": self.disc_head}
        last_dim = 8 * width * grid**2  # the trunk's flattened last map
        if cfg.condition == "labels":  # the projection discriminator's inner product of labels and features
            self.label_projection = parts["label_projection"] = LabelEmbedding(labels, last_dim, init_zero=True)
        if cfg.info_codes > 0:  # InfoGAN's Q: a linear read-out of the trunk's flattened 4x4x8k map
            self.info_head = parts["info"] = nn.Linear(last_dim, cfg.info_codes)
        if cfg.contrastive_weight > 0:  # SimCLR's projection head on the trunk's flattened map. Its BatchNorm
            # removes what every frame of the batch shares (in Pong the court, almost the whole feature vector);
            # without it all frames project to nearly one direction and NT-Xent stays at chance, log(2N - 1).
            self.projection = parts["projection"] = nn.Sequential(
                nn.Linear(last_dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128)
            )
        if cfg.temporal_weight > 0:  # ST-DIM's bilinear scores: global (8k*16) -> local (4k), local -> local
            self.stdim_global = parts["stdim_global"] = nn.Linear(last_dim, 4 * width)
            self.stdim_local = parts["stdim_local"] = nn.Linear(4 * width, 4 * width)
            self.partner = temporal_partners(self.data.get_batch(np.arange(len(self.data)), "episode"),
                                             self.data.get_batch(np.arange(len(self.data)), "step"),
                                             cfg.temporal_offset)
        self.train_generator = True  # train_step sets it per step from critic_steps
        self.background: torch.Tensor | None = None
        if cfg.recon_weight > 0:
            self.recon_decoder = parts["decoder"] = ReconDecoder(channels, width, cfg.recon_decoder, size)
            if cfg.recon_foreground_weight > 0:
                self.background = self.median_frame()[None].to(self.device)
        self.discriminator = nn.ModuleDict(parts)
        if cfg.condition == "past":
            self.generator: nn.Module = NextFrameGenerator(channels, width, cfg.z_dim + cfg.info_codes, size)
        elif cfg.condition == "labels":
            self.generator = LabelGenerator(channels, labels, width, cfg.z_dim + cfg.info_codes, size,
                                            cfg.label_embedding)
        else:
            self.generator = Generator(channels, width, cfg.z_dim + cfg.info_codes, size)
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        betas = (cfg.beta1, 0.999)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr or cfg.lr, betas=betas),
        }

    def median_frame(self, frames: int = 2048) -> torch.Tensor:
        """Per-pixel median (C, S, S) in [-1, 1] of ``frames`` evenly spaced train stacks: the static court."""
        indices = np.linspace(0, len(self.data) - 1, min(frames, len(self.data))).astype(np.int64)
        frames_in_range = to_gan_range(torch.from_numpy(self.data.get_batch(indices)), self.size)
        return torch.from_numpy(background_frame(frames_in_range.numpy()))

    def latent(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The generator's input: z ~ N(0, I) (z_dim), followed by ``info_codes`` InfoGAN codes ~ U(-1, 1)."""
        z = torch.randn(n, self.config.z_dim, generator=gen)
        codes = torch.rand(n, self.config.info_codes, generator=gen) * 2 - 1
        return torch.cat([z, codes], dim=1)

    def info_loss(self, features: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """InfoGAN's code-prediction loss: squared error of the codes predicted from the trunk's (N, 8k, 4, 4)
        maps of generated frames against the codes in ``latent``'s last ``info_codes`` columns."""
        codes = latent[:, self.config.z_dim :]
        return (self.info_head(features.flatten(1)) - codes).pow(2).mean()

    def noise_std(self, step: int) -> float:
        """Instance-noise std at ``step``: ``instance_noise`` decaying linearly to 0 at ``instance_noise_steps``
        (``steps`` when that is 0)."""
        horizon = self.config.instance_noise_steps or self.config.steps
        return self.config.instance_noise * max(0.0, 1.0 - step / max(horizon, 1))

    def extras(self, step: int, batch_size: int, rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        extras = {"z": self.latent(batch_size, gen)}
        if self.config.loss == "wgan-gp":  # each row's mixing weight of its real and generated stack
            extras["gp_mix"] = torch.rand(batch_size, 1, 1, 1, generator=gen)
        std = self.noise_std(step)
        size = self.size
        if std > 0:  # (B, 2, C, S, S): row i's noise for its real frame and for its generated frame
            channels = self.observation_space.shape[0]
            extras["noise"] = std * torch.randn(batch_size, 2, channels, size, size, generator=gen)
        # (B, 2, 2): row i's (y, x) for its real frame and for its generated frame
        if "translation" in self.augmentations:
            extras["shift"] = torch.randint(-(size // 8), size // 8 + 1, (batch_size, 2, 2), generator=gen)
        if "cutout" in self.augmentations:
            extras["cutout"] = torch.randint(0, size, (batch_size, 2, 2), generator=gen)
        cfg = self.config
        if cfg.contrastive_weight > 0:  # two views per real frame: (B, 2, 2) shifts and (B, 2, C, S, S) noise
            reach = cfg.contrastive_shift
            extras["view_shift"] = torch.randint(-reach, reach + 1, (batch_size, 2, 2), generator=gen)
            channels = self.observation_space.shape[0]
            extras["view_noise"] = cfg.contrastive_noise * torch.randn(batch_size, 2, channels, size, size,
                                                                       generator=gen)
        return extras

    def global_batch(self, step: int) -> tuple[np.ndarray, dict[str, Any]]:
        indices, extras = super().global_batch(step)
        if self.config.temporal_weight > 0:  # each frame's ST-DIM positive, (B, C, 84, 84) uint8
            extras["later_obs"] = self.data.batch(self.partner[indices])[0]
        return indices, extras

    def train_step(self, step: int) -> dict[str, float]:
        # the generator moves on the last of every ``critic_steps`` discriminator updates
        self.train_generator = step % self.config.critic_steps == self.config.critic_steps - 1
        return super().train_step(step)

    def temporal_loss(self, real: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """ST-DIM's global-local plus local-local InfoNCE of real [-1, 1] stacks against their later stacks."""
        local_now, global_now = self.disc.trunk_maps(real)
        local_later, _ = self.disc.trunk_maps(later)
        return stdim_loss(global_now.flatten(1), local_now, local_later, self.stdim_global, self.stdim_local)

    def augment(self, x: torch.Tensor, extras: dict[str, Any], which: int) -> torch.Tensor:
        """DiffAugment of a discriminator input batch; ``which`` 0 = the real frames' draws, 1 = the generated."""
        if "shift" in extras:
            x = translate(x, extras["shift"][:, which])
        if "cutout" in extras:
            x = cutout(x, extras["cutout"][:, which], self.size // 2)
        return x

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Discriminator logits (N,) of [-1, 1] inputs at ``size`` (one batch: all real or all generated)."""
        return self.head_logits(self.disc.trunk_map(x), labels)

    def head_logits(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Discriminator logits (N,) of the trunk's last maps (N, 8k, 4, 4 at 64) of one batch; with
        ``condition=labels`` plus the projection term, the inner product of the labels' embeddings (summed over
        labels) with the flattened map."""
        logits = self.disc_head(torch.cat([features, minibatch_std(features)], dim=1)
                                if self.config.minibatch_std else features).view(-1)
        if self.config.condition == "labels":
            logits = logits + (self.label_projection(labels).sum(1) * features.flatten(1)).sum(1)
        return logits

    def generate(self, z: torch.Tensor, real: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generated stacks (N, C, S, S): from z alone, with ``condition=past`` the older frames of ``real``
        followed by a generated newest frame, with ``condition=labels`` for those (N, L) labels."""
        if self.config.condition == "past":
            past = real[:, :-1]
            return torch.cat([past, self.generator(past, z)], dim=1)
        if self.config.condition == "labels":
            return self.generator(z, labels)
        return self.generator(z)

    def contrastive_loss(self, real: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        """NT-Xent of the projected trunk features of two shifted, noisy views of the real [-1, 1] frames."""
        views = []
        for which in range(2):
            view = translate(real, extras["view_shift"][:, which]) + extras["view_noise"][:, which].to(self.device)
            views.append(self.projection(self.disc.trunk_map(view).flatten(1)))
        return nt_xent_loss(views[0], views[1], self.config.contrastive_temperature)

    def update(self, obs: torch.Tensor, labels: torch.Tensor, extras: dict[str, Any]) -> dict[str, float]:
        real = to_gan_range(obs, self.size)
        noise_real = noise_fake = 0.0
        if "noise" in extras:  # instance noise: the same for the discriminator's and the generator's pass
            noise = extras["noise"].to(self.device)
            noise_real, noise_fake = noise[:, 0], noise[:, 1]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]
        # discriminator: real -> real_label (one-sided smoothing), fake -> 0
        real_seen = self.augment(real, extras, 0)  # what the discriminator sees of the real frames, noise aside
        real_in = real_seen + noise_real
        cfg = self.config
        if cfg.r1_gamma > 0:
            real_in = real_in.detach().requires_grad_(True)
        real_features = self.disc.trunk_map(real_in)
        recon_loss = None
        if cfg.recon_weight > 0:  # rebuild the (augmented, noise-free) real frames from the trunk's map
            recon = self.recon_decoder(real_features)
            recon_loss = reconstruction_loss(recon, real_seen, self.background, cfg.recon_foreground_weight)
        uniform = uniformity_loss(real_features) if cfg.uniformity_weight > 0 else None
        contrast = self.contrastive_loss(real, extras) if cfg.contrastive_weight > 0 else None
        temporal = None
        if cfg.temporal_weight > 0:
            temporal = self.temporal_loss(real, to_gan_range(extras["later_obs"].to(self.device), self.size))
        regularisers = ((cfg.recon_weight, recon_loss), (cfg.uniformity_weight, uniform),
                        (cfg.contrastive_weight, contrast), (cfg.temporal_weight, temporal))
        if not cfg.adversarial:  # ablation: the trunk learns from its regularisers alone
            loss = sum(w * term for w, term in regularisers if term is not None)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.sync_gradients(self.discriminator)
            opt_d.step()
            named = (("recon", recon_loss), ("uniformity", uniform), ("contrastive", contrast),
                     ("temporal", temporal))
            return {k: v.item() for k, v in named if v is not None}
        latent = extras["z"].to(self.device)
        with torch.set_grad_enabled(self.train_generator):  # no generator graph on critic-only steps
            fake = self.generate(latent, real, labels)
        fake_in = self.augment(fake, extras, 1) + noise_fake  # the generator's pass below sees the same
        fake_features = self.disc.trunk_map(fake_in.detach())
        real_logits, fake_logits = self.head_logits(real_features, labels), self.head_logits(fake_features, labels)
        gp = None
        if cfg.loss == "hinge":
            loss_d = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        elif cfg.loss == "wgan-gp":
            loss_d = fake_logits.mean() - real_logits.mean()
            gp = gradient_penalty(lambda x: self.logits(x, labels), real_in.detach(), fake_in.detach(),
                                  extras["gp_mix"].to(self.device))
            loss_d = loss_d + cfg.gp_weight * gp
        else:
            loss_d = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, cfg.real_label)) \
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        r1 = None
        if cfg.r1_gamma > 0:
            r1 = r1_penalty(real_logits, real_in)
            loss_d = loss_d + 0.5 * cfg.r1_gamma * r1
        for weight, term in regularisers:
            if term is not None:
                loss_d = loss_d + weight * term
        ortho = None
        if cfg.ortho_weight > 0:
            ortho = orthogonal_penalty(self.disc.trunk)
            loss_d = loss_d + cfg.ortho_weight * ortho
        info_d = None
        if cfg.info_codes > 0:
            info_d = self.info_loss(fake_features, latent)
            loss_d = loss_d + cfg.info_weight * info_d
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.sync_gradients(self.discriminator)
        opt_d.step()
        metrics = {"d": loss_d.item()}
        if cfg.loss == "bce":
            metrics.update(d_real=torch.sigmoid(real_logits.detach()).mean().item(),
                           d_fake=torch.sigmoid(fake_logits.detach()).mean().item())
        else:  # raw scores; for the WGAN critic their difference estimates the Wasserstein-1 distance
            metrics.update(score_real=real_logits.detach().mean().item(), score_fake=fake_logits.detach().mean().item())
        optional = {"r1": r1, "gp": gp, "recon": recon_loss, "info": info_d, "ortho": ortho, "uniformity": uniform,
                    "contrastive": contrast, "temporal": temporal}
        metrics.update({name: value.item() for name, value in optional.items() if value is not None})
        if not self.train_generator:  # a critic-only step (critic_steps > 1)
            return metrics
        gen_features = self.disc.trunk_map(fake_in)
        if self.config.generator_loss == "feature_matching":  # match the mean trunk features of the real batch
            with torch.no_grad():
                real_features = self.disc.trunk_map(real_in.detach()).flatten(1)
            loss_g = feature_matching_loss(real_features, gen_features.flatten(1))
        elif cfg.loss == "bce":  # make the discriminator say 1 (non-saturating loss)
            gen_logits = self.head_logits(gen_features, labels)
            loss_g = F.binary_cross_entropy_with_logits(gen_logits, torch.ones_like(gen_logits))
        else:  # hinge and WGAN: raise the discriminator's score of the generated stacks
            loss_g = -self.head_logits(gen_features, labels).mean()
        if cfg.info_codes > 0:
            loss_g = loss_g + cfg.info_weight * self.info_loss(gen_features, latent)
        l1 = None
        if self.config.condition == "past":  # the generated newest frame against the real one
            l1 = (fake[:, -1] - real[:, -1]).abs().mean()
            loss_g = loss_g + self.config.l1_weight * l1
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.sync_gradients(self.generator)
        opt_g.step()
        metrics = {"d": metrics.pop("d"), "g": loss_g.item(), **metrics}  # the progress line's order: d, g, ...
        if l1 is not None:
            metrics["l1"] = l1.item()
        return metrics

    def fixed_real(self, n: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
        """n fixed real stacks (val, else train) in [-1, 1] and their (n, L) labels."""
        dataset = self.val if self.val is not None else self.data
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(len(dataset), n, replace=len(dataset) < n))
        obs, labels = dataset.batch(indices)
        return to_gan_range(obs, self.size), labels

    def condition_frames(self, n: int, seed: int = 1234) -> torch.Tensor | None:
        """With ``condition=past`` or ``labels``: the n fixed real stacks that samples are conditioned on
        (their older frames, or their labels); else None."""
        return self.fixed_real(n, seed)[0] if self.config.condition in ("past", "labels") else None

    @torch.no_grad()
    def samples(self, n: int, seed: int = 1234) -> torch.Tensor:
        """n generated stacks (N, C, S, S) in [-1, 1] (with ``condition=past``: on fixed real stacks)."""
        self.generator.eval()
        z = self.latent(n, torch.Generator().manual_seed(seed)).to(self.device)
        real, labels = self.fixed_real(n, seed) if self.config.condition in ("past", "labels") else (None, None)
        out = torch.cat([
            self.generate(z[i : i + 256], None if real is None else real[i : i + 256].to(self.device),
                          None if labels is None else labels[i : i + 256].to(self.device))
            for i in range(0, n, 256)
        ])
        self.generator.train()
        return out.cpu()

    @torch.no_grad()
    def fd_score(self) -> dict[str, float]:
        """Fréchet distance (in-house random-conv features) of samples vs real val frames, and real vs real."""
        dataset = self.val if self.val is not None else self.data
        n = min(self.config.fd_samples, len(dataset))
        features = FeatureNet(self.observation_space.shape[0])
        rng = np.random.default_rng(0)
        real_a = dataset.get_batch(np.sort(rng.choice(len(dataset), n, replace=False)))
        real_b = self.data.get_batch(np.sort(rng.choice(len(self.data), min(n, len(self.data)), replace=False)))

        def embed(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([features(x[i : i + 256]) for i in range(0, len(x), 256)])

        feat_a = embed(to_gan_range(torch.from_numpy(real_a), self.size))
        feat_b = embed(to_gan_range(torch.from_numpy(real_b), self.size))
        feat_f = embed(self.samples(n))
        return {"eval/fd_random_features": frechet_distance(feat_a, feat_f),
                "eval/fd_real_train_vs_val": frechet_distance(feat_a, feat_b)}

    def evaluate(self, run: Any, final: bool) -> dict[str, float]:
        samples = self.samples(64)
        real = self.condition_frames(64)
        if real is None:
            grid = image_grid(samples[:, -1])  # newest frame of each generated stack
        else:  # pairs: the real newest frame, then the generated one
            grid = image_grid(torch.stack([real[:32, -1], samples[:32, -1]], dim=1).flatten(0, 1))
        if getattr(run, "writer", None) is not None:
            run.writer.add_image("samples", grid[None], self.step)
        if run.dir is not None:
            import imageio.v3 as iio

            out = Path(run.dir) / "samples"
            out.mkdir(exist_ok=True)
            iio.imwrite(out / f"step_{self.step:07d}.png", grid)
        metrics = self.fd_score()
        if real is not None and self.config.condition == "past":  # against the truth, and "nothing moved"
            metrics["eval/l1_newest"] = (samples[:, -1] - real[:, -1]).abs().mean().item()
            metrics["eval/l1_copy_last"] = (real[:, -2] - real[:, -1]).abs().mean().item()
            run.print(f"step {self.step}: newest-frame L1 {metrics['eval/l1_newest']:.4g} "
                      f"(copying the last past frame: {metrics['eval/l1_copy_last']:.4g})")
        run.print(
            f"step {self.step}: Fréchet distance {metrics['eval/fd_random_features']:.4g} "
            f"(real train vs val: {metrics['eval/fd_real_train_vs_val']:.4g}) -- in-house random-conv features, "
            "NOT the standard Inception FID"
        )
        return metrics

    @torch.no_grad()
    def calibrate_disc_norm(self, frames: int = 2048) -> None:
        """Recompute the discriminator trunk's BatchNorm statistics on real train frames (precise BN).

        During training two of every three discriminator passes are on generated batches, so the running
        statistics describe fakes; the saved encoder is used in eval mode on real frames, where those
        statistics are wrong (measured on Pong: the eval-mode discriminator called every real val frame fake).
        BatchNorm2d and SyncBatchNorm (multi-GPU) alike, on this process alone."""
        with recalibrated_batch_norms(self.disc.trunk) as norms:
            if not norms:  # the spectral-norm discriminator has no running statistics
                return
            indices = np.linspace(0, len(self.data) - 1, min(frames, len(self.data))).astype(np.int64)
            for start in range(0, len(indices), 256):
                obs, _ = self.data.batch(indices[start : start + 256])
                self.disc.trunk_map(to_gan_range(obs.to(self.device), self.size))

    def encoder(self) -> nn.Module:
        self.calibrate_disc_norm()
        return self.disc
