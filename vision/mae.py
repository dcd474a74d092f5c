"""Masked-autoencoder pretraining (He et al. 2022) of the ViT encoder (``vision/vit.py``).

Each frame stack is cut into patches (84x84 with the ViT's patch size: 12 -> 7x7 patches by default); a
random ``mask_ratio`` (75%) of them is hidden per sample: ``int(N * (1 - mask_ratio))`` patches stay visible,
exactly as MAE's ``random_masking``. The encoder sees only the visible patches (with their positions); a
decoder (``decoder_width`` 128, ``decoder_depth`` 8 as in MAE, learned positions instead of MAE's fixed sin-cos) gets
the encoded visible tokens plus a shared mask token at every hidden position and predicts the pixels of every
patch. The loss is the mean squared error on the masked patches only, against the patch pixels in [0, 1] or,
with ``norm_pix_loss``, against each patch normalised by its own mean and std. Options for frames whose
objects are tiny (Pong): ``foreground_weight`` up-weights the pixels that differ from the median train frame,
and ``visible_loss_weight`` also scores the visible patches (the encoder must then keep their content).
``mask_frames=newest`` is a temporal variant for frame stacks: every patch reaches the encoder, but in the
hidden patches the newest frame is blanked (the older frames stay), and the loss scores the newest frame of
the hidden patches only, so the encoder must carry where the moving objects were and how they move.
Reconstructions of val frames (original | masked input | reconstruction with the visible patches pasted back)
are saved as PNG and logged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rlkit.errors import RLKitError
from rlkit.registry import PRETRAINERS
from rlkit.vision.encoders import make_encoder
from rlkit.vision.pretrain import PretrainConfig, Pretrainer
from rlkit.vision.vit import Block, ViT, patchify, unpatchify


def random_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep_idx (B, K), mask (B, N) with 1 = hidden, restore (B, N)) from per-patch noise (B, N): the K
    patches with the lowest noise stay visible, K = int(N * (1 - mask_ratio))."""
    b, n = noise.shape
    keep = int(n * (1 - mask_ratio))
    if keep < 1:
        raise RLKitError(f"mask_ratio={mask_ratio} hides every one of the {n} patches; use a smaller ratio.")
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = torch.ones(b, n, device=noise.device)
    mask[:, :keep] = 0
    return shuffle[:, :keep], torch.gather(mask, 1, restore), restore


def masked_patch_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pixel_weight: torch.Tensor | None = None,
    visible_weight: float = 0.0,
) -> torch.Tensor:
    """Mean squared error over the patches: per-patch MSE (B, N), each hidden patch weighted 1 and each
    visible one ``visible_weight`` (0: hidden patches only, MAE). ``pixel_weight`` (B, N, P) weights the
    squared error of each pixel inside a patch (None: all 1)."""
    err = (pred - target).pow(2)
    per_patch = (err * pixel_weight).mean(-1) if pixel_weight is not None else err.mean(-1)
    weight = mask + visible_weight * (1 - mask)
    return (per_patch * weight).sum() / weight.sum()


def background_frame(frames: np.ndarray) -> np.ndarray:
    """Per-pixel median (C, H, W) of a stack of frames (N, C, H, W): the static background."""
    return np.median(frames, axis=0)


class MAEDecoder(nn.Module):
    """Encoded visible tokens -> pixel predictions for all N patches."""

    def __init__(self, encoder: ViT, width: int, depth: int, heads: int, visible_pos: bool = True) -> None:
        super().__init__()
        self.visible_pos = visible_pos
        self.prefix = encoder.num_prefix_tokens
        self.embed = nn.Linear(encoder.width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, encoder.num_patches, width))
        self.blocks = nn.ModuleList(Block(width, heads, 4.0) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, encoder.patch_size**2 * encoder.in_channels)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        prefix, visible = x[:, : self.prefix], x[:, self.prefix :]
        b, n = restore.shape
        hidden = self.mask_token.expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, hidden], dim=1)  # in shuffled order: visible first
        full = torch.gather(full, 1, restore.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        if self.visible_pos:
            full = full + self.pos_embed
        else:  # positions on the mask tokens only: the visible tokens must carry the encoder's own
            hidden_at = (restore >= visible.shape[1]).unsqueeze(-1).to(full.dtype)  # (B, N, 1), 1 = hidden
            full = full + self.pos_embed * hidden_at
        x = torch.cat([prefix, full], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))[:, self.prefix :]


@dataclasses.dataclass
class MAEConfig(PretrainConfig):
    encoder: str = "vit"
    """a ViT (encoder_kwargs: patch_size, width, depth, heads)"""
    lr: float = 1.5e-4
    """AdamW learning rate (MAE: 1.5e-4 x batch/256 base rate)"""
    weight_decay: float = 0.05
    """AdamW weight decay (MAE)"""
    mask_ratio: float = 0.75
    """fraction of patches hidden from the encoder"""
    norm_pix_loss: bool = False
    """targets = each patch normalised by its mean and std (MAE's better-features option)"""
    foreground_weight: float = 0.0
    """extra loss weight of foreground pixels, those differing by more than ``foreground_threshold`` from the
    per-pixel median of train frames (Pong: paddles, ball, digits); each pixel's squared error is weighted
    1 + foreground_weight * [foreground]; 0 turns it off"""
    foreground_threshold: float = 0.02
    """|pixel - median frame| (in [0, 1]) above which a pixel is foreground"""
    background_frames: int = 2048
    """train frames (evenly spaced) whose per-pixel median is the background"""
    visible_loss_weight: float = 0.0
    """loss weight of the visible patches relative to the hidden ones (0: hidden patches only, MAE)"""
    decoder_visible_pos: bool = True
    """add the decoder's positional embeddings to the visible tokens too (MAE); false: to the mask tokens only,
    so the encoder's tokens must carry their own position (on Pong it did not change the val probe)"""
    mask_frames: Literal["all", "newest"] = "all"
    """all: a hidden patch is hidden in every frame of the stack and dropped from the encoder (MAE); newest:
    only its newest frame is blanked (set to 0), every patch is encoded, and the loss scores the newest frame
    of the hidden patches (predict where the moving objects are now from where they were)"""
    decoder_width: int = 128
    decoder_depth: int = 8
    """decoder blocks (MAE's default, 8). A deep decoder takes over the pixel detail, so the encoder's features
    stay more abstract (MAE, Table 1a); on Pong depth 8 beat a random init on the probe where depth 2 tied it
    (docs/vision.md, round 5)"""
    decoder_heads: int = 4


@PRETRAINERS.register("mae")
class MAEPretrainer(Pretrainer):
    """ViT encoder + light decoder; loss on masked patches only."""

    Config = MAEConfig
    name = "mae"

    def build(self) -> None:
        cfg = self.config
        self.vit = make_encoder(cfg.encoder, self.observation_space, **cfg.encoder_kwargs)
        if not isinstance(self.vit, ViT):
            raise RLKitError(f"mae needs a ViT encoder (vit), not {cfg.encoder!r}; pass --encoder vit.")
        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise RLKitError(f"mask_ratio must be in [0, 1), got {cfg.mask_ratio}.")
        if cfg.mask_frames == "newest" and self.vit.in_channels < 2:
            raise RLKitError("mask_frames=newest needs frame stacks (2 or more channels); use mask_frames=all.")
        if cfg.foreground_weight < 0 or cfg.visible_loss_weight < 0:
            raise RLKitError("foreground_weight and visible_loss_weight must be >= 0.")
        self.background: torch.Tensor | None = None
        if cfg.foreground_weight > 0:
            n = min(cfg.background_frames, len(self.data))
            frames = self.data.get_batch(np.linspace(0, len(self.data) - 1, n).astype(np.int64))
            x = self.vit.preprocess(torch.from_numpy(frames)).numpy()
            background = torch.from_numpy(background_frame(x))[None]
            self.background = patchify(background, self.vit.patch_size).to(self.device)
        self.decoder = MAEDecoder(self.vit, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads,
                                  cfg.decoder_visible_pos)
        self.model = nn.ModuleDict({"encoder": self.vit, "decoder": self.decoder})
        self.modules = {"model": self.model}
        params = self.model.parameters()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
        self.optimizers = {"model": optimizer}

    def extras(self, step: int, batch_size: int, rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        return {"noise": torch.rand(batch_size, self.vit.num_patches, generator=gen)}

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Patch pixels (B, N, p*p*C) of scaled frames, normalised per patch with ``norm_pix_loss``."""
        target = patchify(x, self.vit.patch_size)
        if self.config.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def pixel_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-pixel loss weights (B, N, P) of scaled frames: 1 + foreground_weight on foreground pixels."""
        if self.background is None:
            return None
        fg = (patchify(x, self.vit.patch_size) - self.background).abs() > self.config.foreground_threshold
        return 1.0 + self.config.foreground_weight * fg.float()

    def loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The configured patch loss of predictions ``pred`` for scaled frames ``x`` (with ``mask_frames=newest``
        only the newest frame's pixels count: patch vectors are laid out pixel-major, channel last)."""
        target, weight = self.targets(x), self.pixel_weight(x)
        if self.config.mask_frames == "newest":
            newest = slice(self.vit.in_channels - 1, None, self.vit.in_channels)
            pred, target = pred[..., newest], target[..., newest]
            weight = weight[..., newest] if weight is not None else None
        return masked_patch_loss(pred, target, mask, weight, self.config.visible_loss_weight)

    def blank_newest(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled frames ``x`` with the newest frame set to 0 inside the hidden patches (mask (B, N), 1 = hidden)."""
        p, (gh, gw) = self.vit.patch_size, self.vit.grid
        hidden = mask.view(-1, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2).bool()
        out = x.clone()
        out[:, -1] = x[:, -1].masked_fill(hidden, 0.0)
        return out

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pred (B, N, p*p*C), mask (B, N), encoded tokens) for scaled frames ``x``."""
        keep, mask, restore = random_masking(noise.to(x.device), self.config.mask_ratio)
        if self.config.mask_frames == "newest":  # every patch is encoded, in order; hidden ones lack the newest frame
            tokens = self.vit.tokens(self.blank_newest(x, mask))
            order = torch.arange(self.vit.num_patches, device=x.device).expand(len(x), -1)
            return self.decoder(tokens, order), mask, tokens
        tokens = self.vit.tokens(x, keep)
        return self.decoder(tokens, restore), mask, tokens

    def update(self, obs: torch.Tensor, labels: torch.Tensor, extras: dict[str, Any]) -> dict[str, float]:
        x = self.vit.preprocess(obs).contiguous()
        pred, mask, _ = self.forward(x, extras["noise"])
        loss = self.loss(x, pred, mask)
        optimizer = self.optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_gradients(self.model)
        optimizer.step()
        return {"mae": loss.item()}

    @torch.no_grad()
    def evaluate(self, run: Any, final: bool) -> dict[str, float]:
        dataset = self.val if self.val is not None else self.data
        indices = self.eval_indices(dataset, final)
        gen = torch.Generator().manual_seed(12345)
        self.model.eval()
        total = 0.0
        for start in range(0, len(indices), 256):
            obs, _ = dataset.batch(indices[start : start + 256])
            x = self.vit.preprocess(obs.to(self.device)).contiguous()
            pred, mask, _ = self.forward(x, torch.rand(len(x), self.vit.num_patches, generator=gen))
            total += float(self.loss(x, pred, mask)) * len(x)
        loss = total / max(len(indices), 1)
        self.save_reconstructions(run, dataset, indices[:: max(1, len(indices) // 8)][:8])
        self.model.train()
        run.print(f"step {self.step}: MAE loss on masked val patches {loss:.5f}")
        return {"eval/mae_loss": loss}

    @torch.no_grad()
    def save_reconstructions(self, run: Any, dataset: Any, indices: np.ndarray) -> None:
        """Rows of (original | masked input | reconstruction) of the newest frame of each stack."""
        from rlkit.vision.gan import image_grid

        obs, _ = dataset.batch(indices)
        x = self.vit.preprocess(obs.to(self.device)).contiguous()
        noise = torch.rand(len(x), self.vit.num_patches, generator=torch.Generator().manual_seed(7))
        pred, mask, _ = self.forward(x, noise)
        patches = patchify(x, self.vit.patch_size)
        if self.config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
            mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        grid, channels = self.vit.grid, self.vit.in_channels
        hidden = mask.unsqueeze(-1).bool()
        masked = unpatchify(patches.masked_fill(hidden, 0.5), self.vit.patch_size, channels, grid)
        recon = unpatchify(torch.where(hidden, pred.clamp(0, 1), patches), self.vit.patch_size, channels, grid)
        rows = torch.stack([x[:, -1], masked[:, -1], recon[:, -1]], dim=1).reshape(-1, *x.shape[-2:])
        image = image_grid(rows.cpu() * 2 - 1, columns=3)
        if getattr(run, "writer", None) is not None:
            run.writer.add_image("reconstructions", image[None], self.step)
        if run.dir is not None:
            import imageio.v3 as iio

            out = Path(run.dir) / "reconstructions"
            out.mkdir(exist_ok=True)
            iio.imwrite(out / f"step_{self.step:07d}.png", image)

    def encoder(self) -> nn.Module:
        return self.vit
