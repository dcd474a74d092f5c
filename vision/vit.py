"""A small Vision Transformer encoder for RL frames (Dosovitskiy et al. 2021), with the hooks MAE needs.

Patches of ``patch_size`` (which must divide the frame: 84 -> 7 or 12, 64 -> 8) are embedded by a strided
convolution, given learned positional embeddings, and passed through pre-norm transformer blocks. The
features are the CLS token, the mean of the patch tokens, or (``pool=grid``) the patch-token grid average-pooled
to ``pool_grid`` x ``pool_grid`` cells, after a final LayerNorm.

For masked autoencoding (He et al. 2022) the pieces are exposed: ``embed_patches`` (tokens without
positions), ``pos_embed`` (one learned vector per patch), ``grid`` / ``num_patches`` / ``patch_size``, and
``forward_tokens(obs, keep_idx)`` which runs the blocks on a per-sample subset of visible patches only.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.errors import RLKitError
from rlkit.registry import ENCODERS
from rlkit.vision.encoders import Encoder, _require_image


def valid_patch_sizes(height: int, width: int) -> list[int]:
    """Patch sizes that tile a ``height`` x ``width`` frame (common divisors, at least 2 patches a side)."""
    return [p for p in range(2, min(height, width) // 2 + 1) if height % p == 0 and width % p == 0]


def default_patch_size(height: int, width: int) -> int:
    """The valid patch size nearest 10, larger on a tie: 84 -> 12 (7x7 patches), 64 -> 8 (8x8 patches)."""
    sizes = valid_patch_sizes(height, width)
    if not sizes:
        raise RLKitError(f"no patch size tiles a {height}x{width} frame; resize the observations for encoder vit.")
    return min(sizes, key=lambda p: (abs(p - 10), -p))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch_size * patch_size * C), patches in row-major order (MAE's targets)."""
    b, c, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``patchify``: (B, N, p * p * C) -> (B, C, H, W)."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * patch_size, gw * patch_size)


class Attention(nn.Module):
    """Multi-head self-attention (fused QKV projection, scaled dot-product attention)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise RLKitError(f"vit width={width} is not divisible by heads={heads}; pick e.g. width={heads * 64}.")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@ENCODERS.register("vit")
class ViT(Encoder):
    """Small ViT: patch embedding, learned positions, ``depth`` pre-norm blocks of ``width`` (192) with
    ``heads`` (3), CLS, mean or grid pooling; ``features_dim`` = width (width * pool_grid**2 for grid), or a
    linear projection when given."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        patch_size: int | None = None,
        width: int = 192,
        depth: int = 4,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        features_dim: int | None = None,
        pool_grid: int = 4,
    ) -> None:
        super().__init__()
        channels, height, width_px = _require_image("vit", observation_space)
        valid = valid_patch_sizes(height, width_px)
        if patch_size is None:
            patch_size = default_patch_size(height, width_px)
        elif patch_size not in valid:
            raise RLKitError(
                f"vit patch_size={patch_size} does not tile the {height}x{width_px} input; valid patch sizes: "
                f"{', '.join(map(str, valid)) or 'none'}."
            )
        if pool not in ("cls", "mean", "grid"):
            raise RLKitError(f"vit pool={pool!r} is not valid; choose one of: cls, mean, grid.")
        if pool_grid < 1:
            raise RLKitError(f"vit pool_grid must be >= 1, got {pool_grid}.")
        self.scale_uint8 = observation_space.dtype == np.uint8
        self.in_channels = channels
        self.patch_size = patch_size
        self.grid = (height // patch_size, width_px // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.width = width
        self.pool = pool
        self.pool_grid = pool_grid
        pooled = width * pool_grid * pool_grid if pool == "grid" else width
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.patch_embed = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Identity() if features_dim is None else nn.Sequential(nn.Linear(pooled, features_dim), nn.ReLU())
        self.features_dim = pooled if features_dim is None else features_dim
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled float frames (B, C, H, W) -> patch tokens (B, num_patches, width), without positions."""
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward_tokens(self, observations: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Token features after the final LayerNorm: (B, num_prefix_tokens + K, width), CLS first when pooling
        by CLS. ``keep_idx`` (B, K) or (K,) picks the visible patches (row-major indices); None keeps all."""
        return self.tokens(self.preprocess(observations), keep_idx)

    def tokens(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``forward_tokens`` on already scaled float frames."""
        x = self.embed_patches(x) + self.pos_embed
        if keep_idx is not None:
            keep_idx = keep_idx.to(x.device).long()
            if keep_idx.dim() == 1:
                keep_idx = keep_idx.expand(x.shape[0], -1)
            x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, width) tokens -> the CLS token (B, width), the mean of the patch tokens (B, width), or
        (``grid``) the patch-token grid average-pooled to ``pool_grid`` x ``pool_grid`` cells, flattened
        (B, width * pool_grid**2): it keeps where each token is, which the mean throws away."""
        if self.pool == "cls":
            return tokens[:, 0]
        if self.pool == "mean":
            return tokens.mean(dim=1)
        grid = tokens.transpose(1, 2).reshape(len(tokens), self.width, *self.grid)
        return F.adaptive_avg_pool2d(grid, self.pool_grid).flatten(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool_tokens(self.tokens(x)))
