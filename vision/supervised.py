"""Supervised pretraining: predict the ground-truth labels (RAM bytes) of each frame from pixels.

Classification over the 256 byte values of every label (BatchNorm + one linear head on the encoder's
features) or regression of value/255. Frames can be augmented with random shifts (``shift`` > 0: pad by
``shift`` pixels, replicate edges, random crop: DrQ's augmentation), off by default because positions are the
labels. Evaluation reports per-label accuracy and macro F1 (classification) or R2 (regression) and their mean over
the labels that vary (AtariARI's low-entropy filter, as in ``rlkit probe``); the final evaluation also saves a
confusion matrix per classified label (.npy + PNG).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.registry import PRETRAINERS
from rlkit.vision.data import FrameDataset
from rlkit.vision.encoders import make_encoder
from rlkit.vision.metrics import (
    ENTROPY_THRESHOLD,
    confusion_matrix,
    f1_scores,
    informative_labels,
    r2_score,
    save_confusion_png,
)
from rlkit.vision.pretrain import PretrainConfig, Pretrainer, recalibrated_batch_norms

CLASSES = 256


def random_shift(x: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image of ``x`` (N, C, H, W float) by ``shifts[i] = (dy, dx)`` in [0, 2*pad] (replicate pad)."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the *global* batch of all data-parallel processes (statistics summed with the
    autograd-aware all-reduce, as SyncBatchNorm does on GPUs), so W processes normalise exactly as one process
    with the whole batch; one process, or eval mode, is plain BatchNorm1d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce

        n = x.shape[0] * dist.get_world_size()
        with warnings.catch_warnings():  # deprecated for _functional_collectives, which has no autograd here
            warnings.simplefilter("ignore")
            mean = all_reduce(x.sum(0)) / n
            var = all_reduce((x - mean).pow(2).sum(0)) / n
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / (1 + int(self.num_batches_tracked))
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
            self.num_batches_tracked += 1
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


@dataclasses.dataclass
class SupervisedConfig(PretrainConfig):
    target: Literal["classify", "regress"] = "classify"
    """classify: cross-entropy over 256 byte values per label; regress: MSE on value/255"""
    shift: int = 0
    """random-shift augmentation in pixels (0: off; the default, as shifting a frame by k pixels moves the
    true position labels by about 2k units: on Pong, 200 steps reach mean val F1 0.60 unshifted, 0.20 with 4)"""
    head_norm: bool = True
    """BatchNorm on the features before the linear head (Pong frames differ in a few pixels, so a fresh
    encoder's features barely vary across frames and, unnormalised, the head learns only the label marginals)"""
    entropy_threshold: float = ENTROPY_THRESHOLD
    """labels whose value entropy over all frames of the dataset is below this (nats) are left out of the mean F1 /
    R2 (AtariARI's low-entropy filter, as in `rlkit probe`; 0 keeps every label)"""


@PRETRAINERS.register("supervised")
class SupervisedPretrainer(Pretrainer):
    """Encoder + one linear head predicting every label."""

    Config = SupervisedConfig
    name = "supervised"
    needs_labels = True

    def build(self) -> None:
        cfg = self.config
        self.label_names = self.data.label_names
        every_frame = FrameDataset(self.data.dir, None)
        self.mean_labels, self.label_entropy = informative_labels(
            self.label_names, every_frame.get_batch(np.arange(len(every_frame)), "labels"), cfg.entropy_threshold,
            source=str(self.data.dir))
        encoder = make_encoder(cfg.encoder, self.observation_space, **cfg.encoder_kwargs)
        outputs = len(self.label_names) * (CLASSES if cfg.target == "classify" else 1)
        norm = GlobalBatchNorm1d(encoder.features_dim, eps=1e-6) if cfg.head_norm else nn.Identity()
        head = nn.Sequential(norm, nn.Linear(encoder.features_dim, outputs))
        self.model = nn.ModuleDict({"encoder": encoder, "head": head})
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=cfg.lr)}

    def extras(self, step: int, batch_size: int, rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        return {"shifts": torch.from_numpy(rng.integers(0, 2 * self.config.shift + 1, size=(batch_size, 2)))}

    def predict(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits (N, L, 256) or regressed values (N, L) in units of value/255."""
        out = self.model["head"](self.model["encoder"](obs))
        return out.view(len(obs), len(self.label_names), -1) if self.config.target == "classify" else out

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.target == "classify":
            return F.cross_entropy(out.reshape(-1, CLASSES), labels.reshape(-1))
        return F.mse_loss(out, labels.float() / 255.0)

    def update(self, obs: torch.Tensor, labels: torch.Tensor, extras: dict[str, Any]) -> dict[str, float]:
        x = random_shift(obs.float(), extras["shifts"], self.config.shift)
        loss = self.loss(self.predict(x), labels)
        optimizer = self.optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_gradients(self.model)
        optimizer.step()
        return {"supervised": loss.item()}

    @torch.no_grad()
    def calibrate_head_norm(self, frames: int = 2048) -> None:
        """Recompute the head BatchNorm's statistics with the current encoder on train frames (precise BN:
        the running averages lag an encoder that is still moving)."""
        self.model.eval()
        with recalibrated_batch_norms(self.model["head"]) as norms:
            if not norms:  # head_norm=false
                return
            indices = np.linspace(0, len(self.data) - 1, min(frames, len(self.data))).astype(np.int64)
            for start in range(0, len(indices), 256):
                obs, _ = self.data.batch(indices[start : start + 256])
                self.model["head"][0](self.model["encoder"](obs.to(self.device)))

    @torch.no_grad()
    def predictions(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        dataset = self.val if self.val is not None else self.data
        self.calibrate_head_norm()
        self.model.eval()
        preds, trues, total = [], [], 0.0
        for start in range(0, len(indices), 256):
            obs, labels = dataset.batch(indices[start : start + 256])
            out = self.predict(obs.to(self.device))
            total += float(self.loss(out, labels.to(self.device))) * len(obs)
            pred = out.argmax(-1) if self.config.target == "classify" else (out * 255).round().clamp(0, 255)
            preds.append(pred.cpu().numpy())
            trues.append(labels.numpy())
        self.model.train()
        return np.concatenate(preds), np.concatenate(trues), total / max(len(indices), 1)

    def evaluate(self, run: Any, final: bool) -> dict[str, float]:
        dataset = self.val if self.val is not None else self.data
        split = "val" if self.val is not None else "train (no val split)"
        pred, true, loss = self.predictions(self.eval_indices(dataset, final))
        metrics: dict[str, float] = {"eval/loss": loss}
        classify = self.config.target == "classify"
        lines = [f"{'label':16s} {'acc':>6s} {'F1':>6s}" if classify else f"{'label':16s} {'R2':>6s}"]
        out_dir = run.dir / "confusion" if final and run.dir is not None else None
        for i, name in enumerate(self.label_names):
            if self.config.target == "classify":
                scores = f1_scores(true[:, i], pred[:, i])
                metrics[f"eval/{name}/accuracy"] = scores["accuracy"]
                metrics[f"eval/{name}/f1_macro"] = scores["f1_macro"]
                lines.append(f"{name:16s} {scores['accuracy']:6.3f} {scores['f1_macro']:6.3f}")
                if out_dir is not None:
                    out_dir.mkdir(exist_ok=True)
                    matrix = confusion_matrix(true[:, i], pred[:, i])
                    np.save(out_dir / f"{name}.npy", matrix)
                    save_confusion_png(matrix, out_dir / f"{name}.png", f"{name} ({split})")
            else:
                metrics[f"eval/{name}/r2"] = r2_score(true[:, i], pred[:, i])
                lines.append(f"{name:16s} {metrics[f'eval/{name}/r2']:6.3f}")
            if name not in self.mean_labels:
                lines[-1] += f"  (value entropy {self.label_entropy[name]:.3f} nats: not in the mean)"
        key = "f1_macro" if self.config.target == "classify" else "r2"
        metrics[f"eval/mean_{key}"] = float(np.mean([metrics[f"eval/{n}/{key}"] for n in self.mean_labels]))
        if final:
            run.print(f"final evaluation on {split} ({len(true)} frames), loss {loss:.4f}:")
            for line in lines:
                run.print("  " + line)
            run.print(f"  {'mean':16s} {metrics[f'eval/mean_{key}']:6.3f}")
            if out_dir is not None:
                run.print(f"confusion matrices: {out_dir}/<label>.npy and .png")
        else:
            run.print(f"step {self.step}: eval loss {loss:.4f}, mean {key} {metrics[f'eval/mean_{key}']:.3f}")
        return metrics

    def encoder(self) -> nn.Module:
        return self.model["encoder"]
