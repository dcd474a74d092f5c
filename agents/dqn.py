"""DQN family: double DQN, dueling head, n-step returns, prioritized replay, Huber loss, hard/soft targets.

References: Mnih et al. 2015 (DQN), van Hasselt et al. 2016 (double), Wang et al. 2016 (dueling),
Schaul et al. 2016 (prioritized replay), Hessel et al. 2018 (n-step in Rainbow).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.agents.base import Agent, EncoderConfig, training_mode
from rlkit.agents.optim import OptimizerConfig, apply_lr_schedule, optimizer_from_config
from rlkit.agents.replay import FrameReplayBuffer
from rlkit.agents.schedules import linear_schedule
from rlkit.checkpoint import (
    load_optimizer_tensors,
    optimizer_tensors,
    read_safetensors_header,
    save_arrays,
)
from rlkit.errors import RLKitError
from rlkit.loop import LoopMonitor
from rlkit.registry import AGENTS
from rlkit.vision.encoders import default_encoder


@dataclasses.dataclass
class DQNConfig(EncoderConfig, OptimizerConfig):
    """DQN settings. Defaults follow the SB3 / Nature DQN; presets adapt them per env family."""

    encoder: str = "auto"
    """Registered encoder (`rlkit encoders`); auto: nature_cnn for images, mlp for vectors."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    double_dqn: bool = True
    """Select the next action with the online net, evaluate it with the target net."""
    n_step: int = 1
    """Steps of reward summed before bootstrapping (n-step returns)."""
    gamma: float = 0.99
    """Discount factor."""
    buffer_size: int = 100_000
    """Replay capacity in transitions (each Atari frame stored once)."""
    learning_starts: int = 10_000
    """Env steps of experience collected before the first update."""
    batch_size: int = 32
    """Transitions per gradient step."""
    lr: float = 1e-4
    """Learning rate (at the start of lr_schedule)."""
    adam_eps: float = 1e-8
    """Optimizer epsilon (adam, adamw, rmsprop, adagrad)."""
    train_freq: int = 4
    """Env steps (summed over envs) between gradient updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 1_000
    """Env steps between target-network updates."""
    tau: float = 1.0
    """Target update rate: 1.0 copies the online net, < 1 is a Polyak average."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip (0: off)."""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss."""
    exploration_start: float = 1.0
    """Initial epsilon."""
    exploration_end: float = 0.01
    """Final epsilon."""
    exploration_steps: int = 100_000
    """Env steps over which epsilon decays linearly."""
    eval_epsilon: float = 0.0
    """Epsilon during evaluation (0: greedy; ALE v5 sticky actions still randomise)."""
    prioritized: bool = False
    """Proportional prioritized replay."""
    per_alpha: float = 0.6
    """Priority exponent."""
    per_beta_start: float = 0.4
    """Importance-weight exponent at the start, annealed to 1 over training."""
    per_eps: float = 1e-6
    """Added to |TD error| before prioritizing."""
    save_buffer: bool = False
    """Save the replay buffer with checkpoints (large for Atari: about 7 KB per transition)."""
    cuda_graph: bool = True
    """On a CUDA device, replay the whole update (forward, backward, clip, Adam) as one captured CUDA graph
    (with a constant learning rate and augment=none; otherwise the update runs eagerly)."""


class QNetwork(nn.Module):
    """Encoder + linear Q head (or dueling value/advantage heads)."""

    def __init__(self, encoder: nn.Module, n_actions: int, dueling: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.dueling = dueling
        features = encoder.features_dim
        self.head = nn.Linear(features, n_actions)
        self.value = nn.Linear(features, 1) if dueling else None

    def forward(self, observations: torch.Tensor, preprocessed: bool = False) -> torch.Tensor:
        features = self.encoder(observations, preprocessed=preprocessed)
        advantages = self.head(features)
        if self.value is None:
            return advantages
        return self.value(features) + advantages - advantages.mean(dim=1, keepdim=True)


def td_targets(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None,
) -> torch.Tensor:
    """n-step TD targets: ``R + discount * Q_target(s', a*)``; a* from the online net when double DQN
    (``next_q_online`` given), else the target net's own argmax."""
    chooser = next_q_online if next_q_online is not None else next_q_target
    best = chooser.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RLKitError(f"unknown device {name!r}; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RLKitError("device=cuda but no CUDA GPU is available; use device=cpu or auto.")
    return device


class UpdateGraph:
    """The DQN update captured once as a CUDA graph and replayed on each batch.

    An eager update launches ~150 small kernels (three forward passes, backward, clip, Adam) and is bound by
    launch overhead on a GPU; a replay launches them as one graph. The batch is copied into static input
    tensors; networks and optimizer state are updated in place, so target syncs and checkpoint loads
    (``copy_`` into the same tensors) stay visible to the graph.
    """

    WARMUP = 3  # eager updates on a side stream before capture, as CUDA graph capture requires

    def __init__(self, agent: DQN, batch: tuple[torch.Tensor, ...]) -> None:
        self.agent = agent
        self.inputs = tuple(torch.empty_like(t, device=agent.device) for t in batch)
        self.copy_in(batch)
        agent.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = agent.update(self.inputs)

    def copy_in(self, batch: tuple[torch.Tensor, ...]) -> None:
        for static, value in zip(self.inputs, batch):
            static.copy_(value, non_blocking=True)

    def replay(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.copy_in(batch)
        self.graph.replay()
        return self.outputs

    @staticmethod
    def warmup_update(agent: DQN, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outputs = agent.update(tuple(t.to(agent.device) for t in batch))
        torch.cuda.current_stream().wait_stream(stream)
        return outputs


@AGENTS.register("dqn")
class DQN(Agent):
    """Deep Q-learning agent: ``act``, the training loop ``learn``, and checkpoint state."""

    Config = DQNConfig
    name = "dqn"
    weight_roots = frozenset({"q_net", "target_net"})

    def __init__(
        self,
        config: DQNConfig,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
    ) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise RLKitError(
                f"dqn needs a Discrete action space, got {action_space}; use ppo or a continuous-control agent."
            )
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.n_actions = int(action_space.n)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.check_augment()
        default = default_encoder(observation_space)
        self.q_net = QNetwork(self.build_encoder(default), self.n_actions, config.dueling)
        self.q_net.to(self.device)
        self.target_net = QNetwork(self.build_encoder(default), self.n_actions, config.dueling)
        self.target_net.to(self.device)
        self.target_net.load_state_dict(self.q_net.state_dict())
        self.target_net.requires_grad_(False)
        self.q_net.eval()  # train mode only inside update()
        self.target_net.eval()
        self.apply_precision([self.q_net.encoder, self.target_net.encoder])
        groups = self.encoder_param_groups(self.q_net, [self.q_net.encoder])
        self.optimizer = optimizer_from_config(config, groups, eps=config.adam_eps)
        # A captured update bakes in the learning rate and needs the optimizer's step counter on the device.
        # Augmentation draws its shifts on the host at each update, which a replayed graph would freeze.
        graphable = (config.lr_schedule == "constant" and config.optimizer in ("adam", "adamw", "rmsprop", "sgd")
                     and config.augment == "none")
        self.use_cuda_graph = config.cuda_graph and self.device.type == "cuda" and graphable
        if self.use_cuda_graph:
            for group in self.optimizer.param_groups:
                if "capturable" in group:  # Adam, AdamW, RMSprop: keep the step counter on the device
                    group["capturable"] = True
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution algorithms once
        self._graph: UpdateGraph | None = None
        self._eager_updates = 0
        self.rng = np.random.default_rng(config.seed)
        # Counters that a resume restores.
        self.reset_counters()
        self.next_train_step = 0
        self.next_target_step = 0
        self.learning_starts_at = config.learning_starts
        self.buffer: FrameReplayBuffer | None = None
        self._replay_rng_state: dict | None = None
        self.buffer_file: Path | None = None  # a replay file to restore when learn() builds the buffer
        self.stale_buffer_note: str | None = None  # why a saved replay file was not used on resume

    def encoders(self) -> list[nn.Module]:
        return [self.q_net.encoder, self.target_net.encoder]

    # ---- acting --------------------------------------------------------------------------------------
    def epsilon(self) -> float:
        cfg = self.config
        return linear_schedule(cfg.exploration_start, cfg.exploration_end, cfg.exploration_steps, self.global_step)

    @torch.no_grad()
    def q_values(self, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(observations, device=self.device)
        return self.q_net(obs).cpu().numpy()

    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        epsilon: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Actions for a batch of observations: greedy, or epsilon-greedy with ``epsilon`` (default: the
        training schedule's value when not deterministic), drawing from ``rng`` (default: the agent's)."""
        if epsilon is None:
            epsilon = 0.0 if deterministic else self.epsilon()
        count = len(observations)
        if epsilon <= 0:
            return self.q_values(observations).argmax(axis=1).astype(np.int64)
        rng = self.rng if rng is None else rng
        explore = rng.random(count) < epsilon
        actions = rng.integers(0, self.n_actions, count).astype(np.int64)
        # The network runs only for envs that act greedily (none while epsilon is 1).
        if not explore.all():
            greedy = ~explore
            actions[greedy] = self.q_values(observations[greedy]).argmax(axis=1)
        return actions

    # ---- learning ------------------------------------------------------------------------------------
    def make_buffer(self, num_envs: int, stacked: bool = False) -> FrameReplayBuffer:
        """Replay for ``num_envs`` streams; ``stacked`` observations (first axis a frame stack, newest
        last, rolling by one frame per step) are stored one frame per step."""
        cfg = self.config
        space = self.observation_space
        stack = space.shape[0] if stacked else 1
        smallest = num_envs * (stack + cfg.n_step)
        if cfg.buffer_size < smallest:
            raise RLKitError(
                f"buffer_size={cfg.buffer_size} cannot hold a frame stack ({stack}) and an n-step window "
                f"({cfg.n_step}) for each of the {num_envs} envs; use --set buffer_size={smallest} or more."
            )
        # The arrays are allocated zeroed, and the OS backs such pages only once they are written: a run of
        # total_steps env steps touches at most that many transitions, so only those must fit in memory.
        stored = min(cfg.buffer_size, max(cfg.total_steps, 1))
        needed = FrameReplayBuffer.bytes_needed(stored, space.shape, space.dtype, stacked)
        available = psutil.virtual_memory().available
        if needed > 0.9 * available:
            raise RLKitError(
                f"replay buffer_size={cfg.buffer_size} needs {needed / 2**30:.2f} GiB for the {stored} transitions "
                f"this run stores but only {available / 2**30:.2f} GiB is available; lower it, e.g. --set "
                f"buffer_size={int(stored * 0.8 * available / needed)}."
            )
        return FrameReplayBuffer(
            cfg.buffer_size,
            num_envs,
            space.shape,
            space.dtype,
            stacked=stacked,
            n_step=cfg.n_step,
            gamma=cfg.gamma,
            prioritized=cfg.prioritized,
            alpha=cfg.per_alpha,
            seed=cfg.seed + 1,
        )

    def loss_terms(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        returns: torch.Tensor,
        next_observations: torch.Tensor,
        discounts: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Q of the taken actions, TD errors) of a batch; the loss is importance-weighted."""
        cfg = self.config
        observations, next_observations = self.augment(observations), self.augment(next_observations)
        with torch.no_grad():
            if cfg.double_dqn:
                # Both networks read s' through the same input pipeline (cast, layout, scaling): run it once.
                encoder = self.q_net.encoder
                shared = encoder.preprocess(next_observations, encoder.input_dtype)
                next_q_target = self.target_net(shared, preprocessed=True)
                next_q_online = self.q_net(shared, preprocessed=True)
            else:
                next_q_target, next_q_online = self.target_net(next_observations), None
            targets = td_targets(returns, discounts, next_q_target, next_q_online)
        q = self.q_net(observations).gather(1, actions.long().unsqueeze(1)).squeeze(1)
        td_error = q - targets
        if cfg.loss == "huber":
            per_sample = F.smooth_l1_loss(q, targets, reduction="none")
        else:
            per_sample = 0.5 * td_error.pow(2)
        return (weights * per_sample).mean(), q, td_error

    def update(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch`` (the arguments of ``loss_terms``); returns detached
        (loss, mean Q, TD errors)."""
        with training_mode(self.q_net):
            loss, q, td_error = self.loss_terms(*batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.q_net.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
        return loss.detach(), q.detach().mean(), td_error.detach()

    def train_step(self, buffer: FrameReplayBuffer) -> dict[str, torch.Tensor]:
        """One gradient step on a replay batch; returns loss statistics as (device) scalars, which the loop
        reads only when it logs, so a GPU update never waits for the host."""
        cfg = self.config
        beta = linear_schedule(cfg.per_beta_start, 1.0, cfg.total_steps, self.global_step)
        if self.use_cuda_graph:
            batch = buffer.sample(cfg.batch_size, beta=beta, device="cpu")
            tensors = (batch.observations, batch.actions, batch.returns, batch.next_observations,
                       batch.discounts, batch.weights)
            if self._graph is None and self._eager_updates >= UpdateGraph.WARMUP:
                self._graph = UpdateGraph(self, tensors)
            if self._graph is not None:
                loss, mean_q, td_error = self._graph.replay(tensors)
            else:
                # The first updates run eagerly on a side stream, as graph capture requires.
                loss, mean_q, td_error = UpdateGraph.warmup_update(self, tensors)
                self._eager_updates += 1
        else:
            batch = buffer.sample(cfg.batch_size, beta=beta, device=self.device)
            loss, mean_q, td_error = self.update(
                (batch.observations, batch.actions, batch.returns, batch.next_observations,
                 batch.discounts, batch.weights)
            )
        self.updates += 1
        if cfg.prioritized:
            buffer.update_priorities(batch.indices, td_error.cpu().numpy(), cfg.per_eps)
        return {"td_loss": loss, "q_values": mean_q}

    def update_target(self) -> None:
        tau = self.config.tau
        with torch.no_grad():
            if tau >= 1.0:
                self.target_net.load_state_dict(self.q_net.state_dict())
            else:
                for target, online in zip(self.target_net.parameters(), self.q_net.parameters()):
                    target.lerp_(online, tau)
                # buffers (BatchNorm running statistics, spectral-norm vectors) are not averaged: the target
                # runs in eval mode and never updates its own, so it takes the online network's
                for target, online in zip(self.target_net.buffers(), self.q_net.buffers()):
                    target.copy_(online)

    def learn(self, run: Any) -> None:
        """The training loop: act, step, store, update, log, evaluate, checkpoint (until done or stopped)."""
        cfg = self.config
        envs = self.make_train_envs()
        if envs.single_observation_space.shape != self.observation_space.shape:
            raise RLKitError(
                f"env {cfg.env_id} gives observations {envs.single_observation_space.shape}, the agent expects "
                f"{self.observation_space.shape}; check env_kwargs."
            )
        buffer = self.make_buffer(cfg.num_envs, stacked=getattr(envs, "frames_stacked", False))
        resumed = self.global_step > 0
        if self.buffer_file is not None:
            buffer.load_state_file(self.buffer_file)
            self.buffer_file = None
            run.print(f"restored replay buffer: {len(buffer)} transitions")
        elif resumed:
            self.learning_starts_at = self.global_step + cfg.learning_starts
            why = self.stale_buffer_note or "replay buffer was not saved (save_buffer=false)"
            run.print(f"{why}: re-warming it for {cfg.learning_starts} steps before updates resume")
        if getattr(self, "_replay_rng_state", None) is not None:
            buffer.rng.bit_generator.state = self._replay_rng_state
        self.buffer = buffer
        obs, _ = envs.reset(seed=self.reset_seed())
        if len(buffer) == 0 or not resumed:
            buffer.start(obs)
        else:
            buffer.truncate_streams()
            buffer.add(
                np.zeros(cfg.num_envs, np.int64),
                np.zeros(cfg.num_envs, np.float32),
                np.zeros(cfg.num_envs, bool),
                np.zeros(cfg.num_envs, bool),
                obs,
                reset_step=np.ones(cfg.num_envs, bool),
            )
        reset_next = np.zeros(cfg.num_envs, dtype=bool)
        monitor = LoopMonitor(self, run)
        losses: dict[str, torch.Tensor] = {}
        try:
            while self.global_step < cfg.total_steps and not run.stop_requested:
                epsilon = self.epsilon()
                actions = self.act(obs, epsilon=epsilon)
                next_obs, rewards, terminated, truncated, info = envs.step(actions)
                buffer.add(actions, rewards, terminated, truncated, next_obs, reset_step=reset_next)
                reset_next = terminated | truncated
                obs = next_obs
                self.global_step += cfg.num_envs
                monitor.episodes(info)

                if self.global_step >= self.learning_starts_at and buffer.can_sample():
                    apply_lr_schedule(self.optimizer, cfg, self.global_step)
                    while self.next_train_step <= self.global_step:
                        for _ in range(cfg.gradient_steps):
                            losses = self.train_step(buffer)
                        self.next_train_step += cfg.train_freq
                    while self.next_target_step <= self.global_step:
                        self.update_target()
                        self.next_target_step += cfg.target_update_interval
                else:
                    self.next_train_step = self.global_step
                    self.next_target_step = self.global_step

                scalars = {"charts/epsilon": epsilon, "charts/learning_rate": self.optimizer.param_groups[0]["lr"]}
                if monitor.tick({**scalars, **{f"losses/{k}": v for k, v in losses.items()}}):
                    break
        finally:
            envs.close()
            # Ctrl-C, SIGTERM, an error or the end: the last state is always on disk.
            self.save(run.checkpoint_dir / "last.safetensors", with_buffer=True)
        monitor.finish()

    # ---- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (networks, optimizer, torch RNG) and JSON metadata (counters, RNG, config)."""
        tensors = {f"q_net.{k}": v for k, v in self.q_net.state_dict().items()}
        tensors.update({f"target_net.{k}": v for k, v in self.target_net.state_dict().items()})
        optim_tensors, optim_meta = optimizer_tensors(self.optimizer)
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "algo": "dqn",
            "config": dataclasses.asdict(self.config),
            "encoder": self.encoder_name,
            "observation_shape": list(self.observation_space.shape),
            "observation_dtype": str(self.observation_space.dtype),
            "n_actions": self.n_actions,
            "counters": {
                **self.counters(),
                "next_train_step": self.next_train_step,
                "next_target_step": self.next_target_step,
                "learning_starts_at": self.learning_starts_at,
            },
            "optimizer": optim_meta,
            "rng": {"explore": self.rng.bit_generator.state},
        }
        if self.buffer is not None:
            meta["rng"]["replay"] = self.buffer.rng.bit_generator.state
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.check_algorithm(meta)
        if list(meta["observation_shape"]) != list(self.observation_space.shape) or meta["n_actions"] != self.n_actions:
            raise RLKitError(
                f"checkpoint expects observations {meta['observation_shape']} and {meta['n_actions']} actions, "
                f"this env has {list(self.observation_space.shape)} and {self.n_actions}; use the checkpoint's env."
            )
        self.q_net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("q_net.")})
        self.target_net.load_state_dict({k[11:]: v for k, v in tensors.items() if k.startswith("target_net.")})
        load_optimizer_tensors(self.optimizer, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        counters = meta["counters"]
        self.load_counters(counters)
        self.next_train_step = counters["next_train_step"]
        self.next_target_step = counters["next_target_step"]
        self.learning_starts_at = counters["learning_starts_at"]
        self.rng.bit_generator.state = meta["rng"]["explore"]
        self._replay_rng_state = meta["rng"].get("replay")

    def save(self, path: Path, with_buffer: bool = False) -> None:
        super().save(path)
        if with_buffer and self.config.save_buffer and self.buffer is not None:
            save_arrays(path.parent / "replay.safetensors", self.buffer.state_arrays(),
                        metadata={"global_step": str(self.global_step)})

    def restore_buffer(self, checkpoint_dir: Path) -> bool:
        """Load ``replay.safetensors`` beside the checkpoint if it was saved at the checkpoint's step; True when
        restored. A replay file of another step (a kill between the two writes, or a resume that ran with
        save_buffer=false) is left unused, and the buffer re-warms."""
        path = checkpoint_dir / "replay.safetensors"
        if not (self.config.save_buffer and path.is_file()):
            return False
        header = read_safetensors_header(path, "replay file", "resume with save_buffer=false",
                                         "resume with save_buffer=false")
        saved_at = header.get("global_step")
        if saved_at != str(self.global_step):
            self.stale_buffer_note = (f"{path.name} is from step {saved_at or 'unknown'}, the checkpoint from step "
                                      f"{self.global_step}, so it was not used")
            return False
        self.buffer_file = path
        return True
