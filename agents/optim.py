"""Optimizer choice and learning-rate schedule shared by every gradient-based agent.

``OptimizerConfig`` adds the fields to an agent's config; ``make_optimizer`` builds the optimizer and
``apply_lr_schedule`` sets its learning rate from the env step reached. The learning rate is a pure function
of ``global_step``, so a resumed run recomputes it and needs no saved schedule state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import torch

from rlkit.agents.schedules import LRSchedule, lr_factor
from rlkit.config import TrainConfig
from rlkit.errors import RLKitError

OptimizerName = Literal["adam", "adamw", "rmsprop", "adagrad", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)


@dataclasses.dataclass
class OptimizerConfig(TrainConfig):
    """TrainConfig plus the optimizer and learning-rate schedule fields of every gradient-based agent."""

    optimizer: OptimizerName = "adam"
    """adam, adamw, rmsprop (alpha 0.99), adagrad or sgd (with momentum)."""
    weight_decay: float | None = None
    """Weight decay (AdamW: decoupled); None: 0.01 for adamw (torch's default), 0 otherwise."""
    momentum: float = 0.9
    """SGD momentum."""
    lr_schedule: LRSchedule = "constant"
    """Learning rate over env steps: constant, linear (to 0 at total_steps), cosine (to 0), step decay."""
    lr_step_every: int = 0
    """Step schedule: env steps between decays (0: a quarter of total_steps)."""
    lr_step_gamma: float = 0.5
    """Step schedule: factor applied at each decay."""


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    eps: float = 1e-8,
    weight_decay: float | None = None,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam, AdamW, RMSprop (alpha 0.99, as in A2C), Adagrad, or SGD with momentum. Adam and AdamW on CPU
    parameters use torch's fused kernel (one pass over each tensor instead of one per operation: the DQN
    update of a NatureCNN took 15-16 ms instead of 20-23 ms on 2 cores)."""
    decay = (0.01 if name == "adamw" else 0.0) if weight_decay is None else weight_decay
    params = list(params)
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = bool(tensors) and all(p.device.type == "cpu" for p in tensors)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=decay, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=decay, fused=fused or None)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps, weight_decay=decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    raise RLKitError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}.")


def optimizer_from_config(config: Any, params: Iterable[torch.nn.Parameter], eps: float) -> torch.optim.Optimizer:
    """The optimizer an ``OptimizerConfig`` names, at its initial learning rate."""
    return make_optimizer(config.optimizer, params, config.lr, eps, config.weight_decay, config.momentum)


def scheduled_lr(config: Any, step: int) -> float:
    """Learning rate of an ``OptimizerConfig`` at env step ``step``."""
    step_every = config.lr_step_every or max(1, config.total_steps // 4)
    factor = lr_factor(config.lr_schedule, step, config.total_steps, step_every, config.lr_step_gamma)
    return config.lr * factor


def apply_lr_schedule(optimizer: torch.optim.Optimizer, config: Any, step: int) -> float:
    """Set every param group's learning rate to the schedule's value at ``step``; returns it."""
    lr = scheduled_lr(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # an encoder group keeps its ratio (encoder_lr_scale)
    return lr


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
