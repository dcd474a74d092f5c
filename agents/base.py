"""What every agent shares: progress counters and checkpoint files. One level of inheritance; each agent
still owns its whole training loop."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlkit.checkpoint import load_optimizer_tensors, optimizer_tensors, save_checkpoint
from rlkit.errors import RLKitError

RESET_SEED_LIMIT = 2**31 - 2**20
"""Resume reset seeds stay below this: ALE's vector env takes 32-bit seeds, one per env from the first."""
SPACE_KEYS = ("observation_shape", "action_space", "n_actions", "n_states")
"""Checkpoint metadata that describes the env's spaces (each agent records the ones it has)."""


@contextlib.contextmanager
def training_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """``modules`` in train mode inside the block (BatchNorm batch statistics, dropout, spectral-norm power
    iterations), in eval mode after it. Agents keep their networks in eval mode, so acting and evaluation see
    each observation alone, and enter train mode only for their gradient updates."""
    for module in modules:
        module.train()
    try:
        yield
    finally:
        for module in modules:
            module.eval()


def epsilon_greedy(
    greedy: np.ndarray, epsilon: float, n_actions: int, rng: np.random.Generator
) -> np.ndarray:
    """``greedy`` actions, each replaced with probability ``epsilon`` by a uniformly random one from ``rng``."""
    explore = rng.random(len(greedy)) < epsilon
    return np.where(explore, rng.integers(0, n_actions, len(greedy)), greedy)


@dataclasses.dataclass
class EncoderConfig:
    """Encoder fields shared by the agents that take any registered encoder (DQN, PPO, A2C)."""

    encoder: str = "auto"
    """Registered encoder (`rlkit encoders`); auto: the agent's default for the observations."""
    encoder_kwargs: dict = dataclasses.field(default_factory=dict)
    """Encoder options, e.g. --set encoder_kwargs.depth=2 (impala, vit), encoder_kwargs.patch_size=7 (vit)."""
    encoder_path: str | None = None
    """Pretrained encoder file to start from (CLI --encoder PATH); its card sets encoder and encoder_kwargs."""
    freeze_encoder: bool = False
    """Keep the encoder fixed: no gradients, not in the optimizer (CLI --freeze)."""
    encoder_lr_scale: float = 1.0
    """Encoder learning rate = lr x this, as a second optimizer param group (CLI --encoder-lr-scale)."""
    augment: Literal["none", "shift"] = "none"
    """Image augmentation in updates; shift: DrQ random shift (replicate-pad augment_pad, random crop back)."""
    augment_pad: int = 4
    """Maximum shift in pixels of augment=shift."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Encoder arithmetic: fp32, or bf16 autocast (weights, gradients and heads stay fp32; ~2x faster
    convolutions on CPUs with bfloat16 instructions, at bfloat16's 3 significant digits in the features);
    auto: bf16 on a CPU whose oneDNN has bfloat16 kernels (AVX512-BF16 / AMX), else fp32."""


def resolve_encoder_config(config: Any, observation_space: gym.spaces.Space) -> Any:
    """For a new run with ``encoder_path``: check the file against the env and return the config with the
    file's ``encoder`` and ``encoder_kwargs`` (so the run's config.yaml rebuilds the architecture without it)."""
    if getattr(config, "encoder_path", None) is None:
        return config
    from rlkit.vision.io import check_observations, read_card

    card = read_card(config.encoder_path)
    check_observations(card, observation_space, config.encoder_path)
    if config.encoder not in ("auto", card["encoder"]):
        raise RLKitError(
            f"encoder={config.encoder} but {config.encoder_path} holds a {card['encoder']} encoder; drop "
            "--set encoder=... (the file decides)."
        )
    if config.encoder_kwargs and config.encoder_kwargs != card["encoder_kwargs"]:
        raise RLKitError(
            f"encoder_kwargs={config.encoder_kwargs} differ from those of {config.encoder_path} "
            f"({card['encoder_kwargs']}); drop them (the file decides)."
        )
    return dataclasses.replace(config, encoder=card["encoder"], encoder_kwargs=dict(card["encoder_kwargs"]))


def cpu_has_bf16() -> bool:
    """Whether torch's oneDNN runs bfloat16 convolutions and matmuls natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Agent:
    """Base of every agent: ``name`` is the algorithm a checkpoint records."""

    name: str = "agent"
    recurrent: bool = False
    """True for agents whose ``act`` takes and returns a per-env state (see ``rlkit.evaluation.AgentActor``)."""
    samples_from_torch: bool = False
    """True for agents whose non-deterministic ``act`` samples with torch's global generator (not ``rng``)."""
    precision: str = "fp32"
    """The encoders' arithmetic after resolving ``precision=auto`` (``apply_precision``)."""
    weight_roots: frozenset[str] = frozenset({"net", "obs_rms", "return_rms"})
    """First components of the checkpoint tensor names that ``warm_start`` copies (the learned state)."""
    weight_meta_keys: tuple[str, ...] = ("normalizer_counts",)
    """Metadata that belongs with those tensors."""

    def make_train_envs(self) -> Any:
        """The run's training envs (train mode, seeded from the config)."""
        from rlkit.envs import make_vec_env

        cfg = self.config
        return make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, mode="train", env_kwargs=cfg.env_kwargs)

    def reset_seed(self) -> int:
        """Seed of the first env reset: the run's seed, or on a resume one derived from the step reached, so a
        resumed run does not replay the episodes it started with. Kept below 2**31 - 2**20 so that it and the
        per-env seeds after it (seed + i) fit the 32-bit seeds that ALE's C++ vector env takes."""
        seed = self.config.seed
        if self.global_step == 0:
            return seed
        return (seed + 7919 * (1 + self.global_step)) % RESET_SEED_LIMIT

    # ---- encoders: options, pretrained weights, freezing, learning-rate scale, augmentation ----------------
    def build_encoder(self, default: str) -> torch.nn.Module:
        """The configured encoder (``default`` when encoder=auto) with ``encoder_kwargs``; records the name."""
        from rlkit.vision.encoders import make_encoder

        cfg = self.config
        self.encoder_name = default if cfg.encoder == "auto" else cfg.encoder
        return make_encoder(self.encoder_name, self.observation_space, **cfg.encoder_kwargs)

    def encoders(self) -> list[torch.nn.Module]:
        """Every encoder the agent holds (target-network copies included); agents with encoders override it."""
        return []

    def encoder_param_groups(self, module: torch.nn.Module, trained: list[torch.nn.Module]) -> list[dict]:
        """Optimizer param groups of ``module`` given the encoders it trains; freezes them if configured."""
        from rlkit.agents.optim import encoder_param_groups

        cfg = self.config
        if cfg.encoder_lr_scale <= 0 and not cfg.freeze_encoder:
            raise RLKitError(f"encoder_lr_scale={cfg.encoder_lr_scale} must be positive; use --freeze for 0.")
        if cfg.freeze_encoder:
            for encoder in trained:
                encoder.requires_grad_(False)
                encoder.frozen = True
                encoder.eval()
        return encoder_param_groups(module, trained, cfg.lr, cfg.encoder_lr_scale, cfg.freeze_encoder)

    def apply_precision(self, encoders: list[torch.nn.Module]) -> None:
        """Set the configured arithmetic (``precision``) on the agent's encoders."""
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cpu" and cpu_has_bf16() else "fp32"
        self.precision = precision
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        for encoder in encoders:
            encoder.compute_dtype = dtype

    def check_augment(self) -> None:
        """A one-line error if augmentation is asked for on observations that are not images."""
        cfg = self.config
        if cfg.augment != "none" and len(self.observation_space.shape or ()) != 3:
            raise RLKitError(
                f"augment={cfg.augment} needs image observations, {cfg.env_id} gives {self.observation_space.shape}; "
                "use augment=none."
            )
        if cfg.augment_pad < 0:
            raise RLKitError(f"augment_pad={cfg.augment_pad} must be >= 0.")

    def augment(self, observations: torch.Tensor) -> torch.Tensor:
        """The configured augmentation of a batch of observations (identity for augment=none)."""
        if self.config.augment == "shift":
            from rlkit.vision.augment import random_shift

            return random_shift(observations, self.config.augment_pad)
        return observations

    def load_pretrained_encoder(self) -> bool:
        """Copy the weights of ``encoder_path`` into every encoder of a new agent; True when loaded.

        ``rlkit train`` calls it for new runs (not on resume: the checkpoint has the weights). The agent must
        have been built with the file's encoder and options (``resolve_encoder_config``)."""
        path = getattr(self.config, "encoder_path", None)
        if path is None:
            return False
        from rlkit.vision.io import check_observations, load_weights, read_card

        card = read_card(path)
        check_observations(card, self.observation_space, path)
        for encoder in self.encoders():
            spec = getattr(encoder, "spec", None) or {}
            if spec.get("encoder") != card["encoder"] or spec.get("encoder_kwargs") != card["encoder_kwargs"]:
                raise RLKitError(
                    f"{path} holds encoder {card['encoder']} {card['encoder_kwargs']}, the agent was built with "
                    f"{spec.get('encoder')} {spec.get('encoder_kwargs')}; build it from resolve_encoder_config(config)."
                )
            load_weights(encoder, path)
        return True

    def reset_counters(self) -> None:
        self.global_step = 0
        self.updates = 0
        self.episodes = 0
        self.best_eval = -float("inf")

    def counters(self) -> dict[str, Any]:
        """Progress a resume restores (JSON-serialisable)."""
        best = self.best_eval if self.best_eval != -float("inf") else None
        return {"global_step": self.global_step, "updates": self.updates, "episodes": self.episodes, "best_eval": best}

    def load_counters(self, counters: dict[str, Any]) -> None:
        self.global_step, self.updates = counters["global_step"], counters["updates"]
        self.episodes = counters["episodes"]
        self.best_eval = counters["best_eval"] if counters["best_eval"] is not None else -float("inf")

    def check_algorithm(self, meta: dict[str, Any]) -> None:
        """A one-line error unless the checkpoint was written by this algorithm."""
        if meta.get("algo") != self.name:
            raise RLKitError(
                f"checkpoint is for algorithm {meta.get('algo')!r}, not {self.name}; evaluate it or train "
                f"{meta.get('algo')} with it."
            )

    def network_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """Checkpoint tensors and metadata of an agent with one network and one optimizer."""
        tensors = {f"net.{k}": v for k, v in module.state_dict().items()}
        optim_tensors, optim_meta = optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        device = getattr(self, "device", None)
        if device is not None and device.type == "cuda":  # a policy samples its actions on the GPU's generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        meta = {
            "algo": self.name,
            "config": dataclasses.asdict(self.config),
            "observation_shape": list(self.observation_space.shape),
            "action_space": str(self.action_space),
            "counters": self.counters(),
            "optimizer": optim_meta,
            "rng": {"numpy": self.rng.bit_generator.state},
        }
        return tensors, meta

    def load_network_state(
        self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict
    ) -> None:
        """Inverse of ``network_state``, after checking the algorithm and the spaces."""
        self.check_algorithm(meta)
        if list(meta["observation_shape"]) != list(self.observation_space.shape) or meta["action_space"] != str(
            self.action_space
        ):
            raise RLKitError(
                f"checkpoint expects observations {meta['observation_shape']} and actions {meta['action_space']}; "
                f"this env has {list(self.observation_space.shape)} and {self.action_space}; use the checkpoint's env."
            )
        module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        load_optimizer_tensors(optimizer, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        device = getattr(self, "device", None)
        if "rng.cuda" in tensors and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        self.load_counters(meta["counters"])
        self.rng.bit_generator.state = meta["rng"]["numpy"]

    def warm_start(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        """Start a new run from a trained agent's weights (``rlkit train --init-from``).

        The networks (and observation/return normalisers) come from the checkpoint; the optimizer, the step
        counters, the schedules and the random generators stay those of this fresh agent, so the new run
        follows its own config and seed. Architectures and spaces must match: a one-line error otherwise."""
        self.check_algorithm(meta)
        fresh_tensors, fresh_meta = self.state_dict()
        for key in SPACE_KEYS:
            if fresh_meta.get(key) != meta.get(key):
                raise RLKitError(
                    f"{source} was trained with {key} {meta.get(key)}, this env has {fresh_meta.get(key)}; "
                    f"start from a checkpoint of an env with the same spaces."
                )
        ours = {k for k in fresh_tensors if k.split(".")[0] in self.weight_roots}
        theirs = {k for k in tensors if k.split(".")[0] in self.weight_roots}
        if ours != theirs:
            missing, extra = sorted(ours - theirs), sorted(theirs - ours)
            detail = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which this agent does not"
            raise RLKitError(
                f"{source} holds a different network ({detail}); train with its architecture (the same encoder, "
                f"encoder_kwargs and heads as its config)."
            )
        for key in sorted(ours):
            if tuple(tensors[key].shape) != tuple(fresh_tensors[key].shape):
                raise RLKitError(
                    f"{source} holds {key} of shape {tuple(tensors[key].shape)}, this agent's is "
                    f"{tuple(fresh_tensors[key].shape)}; train with the checkpoint's encoder and encoder_kwargs."
                )
        merged = {**fresh_tensors, **{k: tensors[k] for k in ours}}
        merged_meta = {**fresh_meta, **{k: meta[k] for k in self.weight_meta_keys if k in meta}}
        self.load_state_dict(merged, merged_meta)

    def state_dict(self) -> tuple[dict, dict]:  # pragma: no cover - every agent defines it
        raise NotImplementedError

    def save(self, path: Path, with_buffer: bool = False) -> None:
        """Write the agent's checkpoint atomically (``with_buffer`` matters only for replay agents)."""
        tensors, meta = self.state_dict()
        save_checkpoint(path, tensors, meta)

    def restore_buffer(self, checkpoint_dir: Path) -> bool:
        """Load saved experience beside a checkpoint; on-policy and tabular agents have none."""
        return False
