"""Encoders: observation -> feature vector. Built from an observation space; expose ``features_dim``.

uint8 image observations are scaled to [0, 1] inside the encoder, so replay stays uint8.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.errors import RLKitError, suggest
from rlkit.registry import ENCODERS


def _is_image(space: gym.spaces.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3


def _require_image(name: str, space: gym.spaces.Space) -> tuple[int, int, int]:
    if not _is_image(space):
        raise RLKitError(
            f"encoder {name!r} needs (channels, height, width) image observations, got {space}; "
            "use encoder=mlp for vector observations."
        )
    return space.shape  # type: ignore[return-value]


class Encoder(nn.Module):
    """Base class: subclasses set ``features_dim`` and implement ``encode`` on float inputs.

    ``spec`` (set by ``make_encoder``) records the registered name, options and observation space, so an
    encoder can be saved with a card (``rlkit.vision.io``) and rebuilt without code.
    """

    features_dim: int
    scale_uint8: bool = False
    channels_last: bool = False
    example_input: str = "image"  # what `rlkit encoders` measures it on: "image" (4x84x84 uint8) or "vector"
    spec: dict[str, Any] | None = None
    compute_dtype: torch.dtype | None = None
    """None: float32 throughout. torch.bfloat16: ``encode`` runs under autocast (convolutions and matmuls in
    bfloat16, weights and gradients kept in float32) and the features come back as float32."""
    frozen: bool = False
    """Set by ``--freeze``: the encoder stays in eval mode even inside an agent's train-mode updates, so its
    BatchNorm running statistics and spectral-norm vectors stay those of the pretrained file."""

    def train(self, mode: bool = True) -> Encoder:
        """``nn.Module.train``, except that a frozen encoder always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def preprocess(self, observations: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float observations (of ``dtype``), uint8 images scaled to [0, 1]."""
        if self.channels_last and observations.dim() == 4:
            # Re-layout while still 1 byte per value; the cast keeps the layout, the scaling is in place.
            observations = observations.contiguous(memory_format=torch.channels_last)
        x = observations.to(dtype)
        if self.scale_uint8:
            x = x.mul_(1.0 / 255.0) if x.data_ptr() != observations.data_ptr() else x / 255.0
        return x

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype ``preprocess`` produces for ``forward``: bfloat16 straight away (one pass, half the bytes)
        when the encoder computes in it, else float32."""
        return self.compute_dtype or torch.float32

    def forward(self, observations: torch.Tensor, preprocessed: bool = False) -> torch.Tensor:
        """Features of ``observations``; ``preprocessed``: they already went through ``preprocess(obs,
        input_dtype)`` (lets several networks with the same input pipeline share that pass)."""
        x = observations if preprocessed else self.preprocess(observations, self.input_dtype)
        if self.compute_dtype is None:
            return self.encode(x)
        with torch.autocast(x.device.type, dtype=self.compute_dtype, cache_enabled=False):
            return self.encode(x).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@ENCODERS.register("nature_cnn")
class NatureCNN(Encoder):
    """Mnih et al. 2015: conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, linear 512 (3136 flat at 84x84)."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        channels: tuple[int, int, int] = (32, 64, 64),
        features_dim: int = 512,
    ) -> None:
        super().__init__()
        in_channels, height, width = _require_image(type(self).__name__, observation_space)
        self.scale_uint8 = observation_space.dtype == np.uint8
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, height, width)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())
        self.features_dim = features_dim
        # NHWC convolutions are 1.4x faster for a DQN train step on CPU (oneDNN) and suit GPUs too.
        self.convs.to(memory_format=torch.channels_last)
        self.channels_last = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x.contiguous(memory_format=torch.channels_last)))


@ENCODERS.register("nature_cnn_small")
class SmallNatureCNN(NatureCNN):
    """NatureCNN at half width (16-32-32, linear 256): 3.0x less arithmetic (6.3 vs 18.7 MFLOP), for CPU training."""

    def __init__(self, observation_space: gym.spaces.Space) -> None:
        super().__init__(observation_space, channels=(16, 32, 32), features_dim=256)


class ImpalaResidual(nn.Module):
    """IMPALA residual block: x + conv(relu(conv(relu(x)))), 3x3 convs keeping the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


@ENCODERS.register("impala")
class ImpalaCNN(Encoder):
    """Espeholt et al. 2018: per stage conv 3x3, max-pool 3x3/2, ``depth`` residual blocks (channels
    16-32-32), then ReLU, flatten, linear 256, ReLU (84x84 -> 11x11x32 = 3,872 flat)."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        channels: Sequence[int] = (16, 32, 32),
        depth: int = 2,
        features_dim: int = 256,
    ) -> None:
        super().__init__()
        in_channels, height, width = _require_image("impala", observation_space)
        self.scale_uint8 = observation_space.dtype == np.uint8
        layers: list[nn.Module] = []
        for out_channels in channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                *(ImpalaResidual(out_channels) for _ in range(depth)),
            ]
            in_channels = out_channels
        layers += [nn.ReLU(), nn.Flatten()]
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, observation_space.shape[0], height, width)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise RLKitError(f"norm={kind!r} is not valid; choose one of: group, batch, none.")


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-norm-relu-conv3x3-norm + (projected) skip, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=norm == "none")
        self.norm1 = _norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "none")
        self.norm2 = _norm(norm, out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=norm == "none"), _norm(norm, out_channels)
            )
        # Zero-init the last norm (or conv) so each block starts as the identity (Goyal et al. 2017).
        last = self.norm2 if norm != "none" else self.conv2
        nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(out + self.skip(x))


@ENCODERS.register("resnet18")
class ResNet18(Encoder):
    """ResNet-18 for 84x84 frames: a 3x3 stem (stride 2, no 7x7 conv or max-pool), BasicBlocks [2, 2, 2, 2]
    at widths 64-128-256-512 x ``width_multiplier`` (default 0.5: 32-64-128-256, about 2.9M parameters,
    sized for RL rather than ImageNet), strides 1-2-2-2, GroupNorm (batch-size independent: acting on one
    frame and target networks behave like training), global average pooling, linear ``features_dim``, ReLU."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        widths: Sequence[int] = (64, 128, 256, 512),
        width_multiplier: float = 0.5,
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem_stride: int = 2,
        norm: str = "group",
        features_dim: int = 256,
    ) -> None:
        super().__init__()
        in_channels, _, _ = _require_image("resnet18", observation_space)
        self.scale_uint8 = observation_space.dtype == np.uint8
        widths = [max(8, int(round(w * width_multiplier))) for w in widths]
        if len(blocks) != len(widths):
            raise RLKitError(f"resnet18 blocks={list(blocks)} and widths={widths} need the same length.")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=norm == "none"),
            _norm(norm, widths[0]),
            nn.ReLU(),
        ]
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(channels, width, stride, norm))
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(channels, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@ENCODERS.register("mlp")
class MLP(Encoder):
    """Fully connected ReLU layers (default 256-256) on flattened vector observations."""

    example_input = "vector"

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        hidden: Sequence[int] = (256, 256),
        activation: str | type[nn.Module] = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Box):
            raise RLKitError(
                f"encoder 'mlp' needs Box observations, got {observation_space}; "
                "Discrete observations need a tabular agent."
            )
        self.scale_uint8 = observation_space.dtype == np.uint8
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise RLKitError(f"activation {activation!r} is not one of: {', '.join(ACTIVATIONS)}.")
            activation = ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        size = int(np.prod(observation_space.shape))
        for width in hidden:
            layers += [nn.Linear(size, width), activation()]
            size = width
        self.net = nn.Sequential(*layers)
        self.features_dim = size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("mlp_tanh")
class TanhMLP(MLP):
    """Two tanh layers of 64 units: the usual actor / critic network of PPO and A2C on vector observations."""

    def __init__(self, observation_space: gym.spaces.Space) -> None:
        super().__init__(observation_space, hidden=(64, 64), activation="tanh")


@ENCODERS.register("mlp200")
class PixelMLP(MLP):
    """One ReLU layer of 200 units: Karpathy's Pong-from-Pixels policy network (with the output layer)."""

    example_input = "image"

    def __init__(self, observation_space: gym.spaces.Space) -> None:
        super().__init__(observation_space, hidden=(200,))


def encoder_options(name: str) -> list[str]:
    """Keyword options of registered encoder ``name`` (what ``encoder_kwargs`` may set)."""
    params = inspect.signature(ENCODERS.get(name).__init__).parameters
    return [p for p in params if p not in ("self", "observation_space")]


WIDTH_OPTIONS = frozenset({"hidden", "channels", "widths", "width", "heads", "features_dim"})
"""Encoder options that give layer widths (a number or a list of numbers): each must be at least 1."""


def make_encoder(name: str, observation_space: gym.spaces.Space, **kwargs: Any) -> Encoder:
    """Build registered encoder ``name`` for ``observation_space`` with options ``kwargs`` (checked by name)."""
    cls = ENCODERS.get(name)
    options = encoder_options(name)
    for key in kwargs:
        if key not in options:
            raise RLKitError(
                f"encoder {name!r} has no option {key!r}; its options: {', '.join(options) or 'none'}."
                + suggest(key, options)
            )
    for key in WIDTH_OPTIONS.intersection(kwargs):
        widths = kwargs[key] if isinstance(kwargs[key], (list, tuple)) else [kwargs[key]]
        bad = [w for w in widths if isinstance(w, (int, float)) and not isinstance(w, bool) and not w >= 1]
        if bad:
            raise RLKitError(f"encoder {name!r} option {key}={kwargs[key]!r} has a width of {bad[0]!r}; layer "
                             "widths must be >= 1 (fix encoder_kwargs).")
    try:
        encoder = cls(observation_space, **kwargs)
    except (TypeError, ValueError) as exc:
        raise RLKitError(f"encoder {name!r} cannot be built with {kwargs} ({exc}); fix encoder_kwargs.") from None
    encoder.spec = {
        "encoder": name,
        "encoder_kwargs": dict(kwargs),
        "observation_shape": list(observation_space.shape or ()),
        "observation_dtype": str(observation_space.dtype),
    }
    return encoder


def default_encoder(observation_space: gym.spaces.Space) -> str:
    """nature_cnn for images, mlp otherwise."""
    return "nature_cnn" if _is_image(observation_space) else "mlp"


def forward_flops(module: nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass (torch's FlopCounterMode; CPU attention counted like the fused kernels)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(query, key, value)

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = cpu_sdpa
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(inputs)
    return int(counter.get_total_flops())
