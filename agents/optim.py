"""Optimizer choice shared by every gradient-based agent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

OptimizerName = Literal["adam", "adamw", "rmsprop", "adagrad", "sgd"]


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam, AdamW, RMSprop (alpha 0.99, as in A2C), Adagrad, or SGD with momentum."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay or 0.01)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def encoder_param_groups(
    module: torch.nn.Module,
    encoders: Sequence[torch.nn.Module],
    lr: float,
    encoder_lr_scale: float = 1.0,
    freeze: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer param groups for ``module`` whose ``encoders`` are frozen (left out), trained at
    ``lr * encoder_lr_scale`` (a second group, tagged ``lr_scale`` so schedules keep the ratio), or, at scale 1,
    trained with everything else in one group (the layout of checkpoints written before this option)."""
    encoder_ids = {id(p) for encoder in encoders for p in encoder.parameters()}
    head = [p for p in module.parameters() if id(p) not in encoder_ids]
    encoder_params = [p for p in module.parameters() if id(p) in encoder_ids]
    if freeze:
        return [{"params": head, "lr": lr}]
    if encoder_lr_scale == 1.0:
        return [{"params": head + encoder_params, "lr": lr}]
    return [{"params": head, "lr": lr}, {"params": encoder_params, "lr": lr * encoder_lr_scale,
                                         "lr_scale": encoder_lr_scale}]
