"""Image augmentation for RL updates (vectorised over the batch, any dtype, on the data's device)."""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's random shift (Kostrikov et al. 2020): pad each (C, H, W) image by ``pad`` pixels replicating the
    border, then crop back to H x W at an offset drawn per sample, i.e. shift by up to ``pad`` pixels in each
    direction. Computed as a gather with clamped indices (identical to replicate padding + crop, no padded
    copy), so uint8 batches stay uint8. ``pad=0`` returns the input."""
    if pad <= 0:
        return images
    if images.dim() != 4:
        raise ValueError(f"random_shift needs (batch, channels, height, width) images, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    shifts = torch.randint(-pad, pad + 1, (b, 2), generator=generator).to(images.device)
    rows = (torch.arange(h, device=images.device) + shifts[:, :1]).clamp_(0, h - 1)
    cols = (torch.arange(w, device=images.device) + shifts[:, 1:]).clamp_(0, w - 1)
    out = images.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
