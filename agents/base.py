"""What every agent shares: progress counters and checkpoint files. One level of inheritance; each agent
still owns its whole training loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from rlkit.checkpoint import load_optimizer_tensors, optimizer_tensors, save_checkpoint
from rlkit.errors import RLKitError


class Agent:
    """Base of every agent: ``name`` is the algorithm a checkpoint records."""

    name: str = "agent"
    recurrent: bool = False
    """True for agents whose ``act`` takes and returns a per-env state (see ``rlkit.evaluation.AgentActor``)."""

    def make_train_envs(self) -> Any:
        """The run's training envs (train mode, seeded from the config)."""
        from rlkit.envs import make_vec_env

        cfg = self.config
        return make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, mode="train", env_kwargs=cfg.env_kwargs)

    def reset_seed(self) -> int:
        """Seed of the first env reset: the run's seed, or on a resume one derived from the step reached, so a
        resumed run does not replay the episodes it started with."""
        seed = self.config.seed
        return seed if self.global_step == 0 else seed + 7919 * (1 + self.global_step)

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
        self.load_counters(meta["counters"])
        self.rng.bit_generator.state = meta["rng"]["numpy"]

    def state_dict(self) -> tuple[dict, dict]:  # pragma: no cover - every agent defines it
        raise NotImplementedError

    def save(self, path: Path, with_buffer: bool = False) -> None:
        """Write the agent's checkpoint atomically (``with_buffer`` matters only for replay agents)."""
        tensors, meta = self.state_dict()
        save_checkpoint(path, tensors, meta)

    def restore_buffer(self, checkpoint_dir: Path) -> bool:
        """Load saved experience beside a checkpoint; on-policy and tabular agents have none."""
        return False
