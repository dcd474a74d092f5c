"""Replay memory that stores every Atari frame once, with n-step returns and optional prioritized replay.

Each environment writes a *stream* of frames. Starting an episode writes the whole initial stack
(``stack`` frames); every step then appends only the newest frame of the next observation. A transition
lives at the slot of its observation's newest frame ``u``: its observation is frames ``u-stack+1..u``,
its next observation frames ``u-stack+2..u+1``. Episodes are contiguous in a stream, so no frame is
stored twice (vs 8x for stacked obs/next_obs pairs) and stacks never mix episodes.

Vector observations use the same class with ``stack=1``: each slot holds one whole observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from rlkit.errors import RLKitError

NOTHING_TO_SAMPLE = ("the replay buffer holds no complete transition to sample yet; raise buffer_size or "
                     "learning_starts so it holds whole frame stacks and n-step windows")


@dataclass
class ReplayBatch:
    """A sampled batch. ``discounts`` = gamma**k for a bootstrap k steps ahead, 0 after a termination."""

    observations: torch.Tensor
    actions: torch.Tensor
    returns: torch.Tensor
    next_observations: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: np.ndarray


class SumTree:
    """Binary sum tree over ``size`` leaves with vectorised updates and prefix-sum search."""

    def __init__(self, size: int) -> None:
        self.leaves = 1 << max(1, math.ceil(math.log2(max(size, 2))))
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)
        self.positive = 0
        """number of leaves with a value > 0 (kept up to date by ``update`` and ``load``)"""

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``indices`` to ``values`` (where an index repeats, its last value wins) and the sums above."""
        nodes = np.asarray(indices, dtype=np.int64) + self.leaves
        if len(nodes) == 0:
            return
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), nodes.shape)
        nodes, last = np.unique(nodes[::-1], return_index=True)  # the last occurrence of each index
        values = values[::-1][last]
        self.positive += int((values > 0).sum()) - int((self.tree[nodes] > 0).sum())
        self.tree[nodes] = values
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def load(self, tree: np.ndarray) -> None:
        """Replace the whole tree (leaves and sums) by a saved copy of ``tree``."""
        self.tree[...] = tree
        self.positive = int((self.tree[self.leaves :] > 0).sum())

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(indices, dtype=np.int64) + self.leaves]

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative range contains each prefix sum. The descent never enters a subtree of
        zero priority and keeps each prefix below its subtree's sum, so rounding in the stored sums cannot land
        it on an empty leaf (which would give an infinite importance weight)."""
        prefix = np.array(prefix, dtype=np.float64)
        nodes = np.ones(len(prefix), dtype=np.int64)
        while nodes[0] < self.leaves:
            left = 2 * nodes
            left_sum, right_sum = self.tree[left], self.tree[left + 1]
            go_right = (prefix >= left_sum) & (right_sum > 0)
            prefix = np.where(go_right, np.minimum(prefix - left_sum, np.nextafter(right_sum, 0)),
                              np.minimum(prefix, np.nextafter(left_sum, 0)))
            nodes = np.where(go_right, left + 1, left)
        return nodes - self.leaves


class FrameReplayBuffer:
    """Frame-deduplicating replay for ``num_envs`` streams, ``capacity`` transitions in total.

    Args:
        capacity: transitions kept (frames kept ~ capacity; oldest overwritten first).
        num_envs: parallel environments writing streams.
        obs_shape: one observation's shape, e.g. ``(4, 84, 84)``.
        obs_dtype: numpy dtype of observations.
        stacked: the first obs axis is a frame stack whose newest frame is last (Atari).
        n_step, gamma: n-step returns are computed when sampling.
        prioritized, alpha: proportional prioritized replay (Schaul et al. 2016).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | type = np.uint8,
        stacked: bool = True,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        seed: int = 0,
    ) -> None:
        self.num_envs = num_envs
        self.stack = obs_shape[0] if stacked else 1
        self.frame_shape = tuple(obs_shape[1:]) if stacked else tuple(obs_shape)
        self.stacked = stacked
        self.n_step, self.gamma = n_step, gamma
        self.slots = math.ceil(capacity / num_envs) + self.stack + n_step
        self.frames = np.zeros((num_envs, self.slots, *self.frame_shape), dtype=obs_dtype)
        self.actions = np.zeros((num_envs, self.slots), dtype=np.int64)
        self.rewards = np.zeros((num_envs, self.slots), dtype=np.float32)
        self.terminated = np.zeros((num_envs, self.slots), dtype=bool)
        self.episode_end = np.zeros((num_envs, self.slots), dtype=bool)
        self.valid = np.zeros((num_envs, self.slots), dtype=bool)
        self.head = np.full(num_envs, -1, dtype=np.int64)  # absolute slot of each stream's newest frame
        self.rng = np.random.default_rng(seed)
        self.prioritized, self.alpha = prioritized, alpha
        self.tree = SumTree(num_envs * self.slots) if prioritized else None
        self.max_priority = 1.0
        self._env_index = np.arange(num_envs)

    @staticmethod
    def bytes_needed(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | type, stacked: bool) -> int:
        """Memory of a buffer with these settings (frames dominate), for checks before allocating."""
        frame = obs_shape[1:] if stacked else obs_shape
        per_slot = int(np.prod(frame)) * np.dtype(obs_dtype).itemsize + 8 + 4 + 3
        return capacity * per_slot

    @property
    def nbytes(self) -> int:
        arrays = (self.frames, self.actions, self.rewards, self.terminated, self.episode_end, self.valid)
        return sum(a.nbytes for a in arrays) + (self.tree.tree.nbytes if self.tree is not None else 0)

    def __len__(self) -> int:
        """Transitions that can be sampled now: stored, whose stack is whole and whose n-step window is in."""
        low, sizes = self._candidate_ranges()
        return sum(int(self.valid[e, (low[e] + np.arange(sizes[e])) % self.slots].sum())
                   for e in np.flatnonzero(sizes))

    def _candidate_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per stream, the first absolute slot that may hold a sampleable transition (its stack's oldest frame
        not yet overwritten) and how many slots follow up to the newest one whose n-step window is complete."""
        low = np.maximum(self.head - self.slots + self.stack, 0)
        return low, np.maximum(self.head - self.n_step - low + 1, 0)

    # ---- writing -------------------------------------------------------------------------------------
    def _advance(self, envs: np.ndarray, frames: np.ndarray) -> None:
        """Append one frame to the streams ``envs``."""
        head = self.head[envs] + 1
        slot = head % self.slots
        self.frames[envs, slot] = frames
        self.valid[envs, slot] = False
        self.episode_end[envs, slot] = False
        self.terminated[envs, slot] = False
        self.head[envs] = head
        if self.tree is not None:
            base = envs * self.slots
            # The overwritten slot and the oldest slot whose stack just lost a frame leave the tree.
            self.tree.update(base + slot, np.zeros(len(envs)))
            lost = head - self.slots + self.stack - 1
            keep = lost >= 0
            self.tree.update(base[keep] + lost[keep] % self.slots, np.zeros(int(keep.sum())))
            # The transition whose n-step window just completed enters with maximal priority.
            ready = head - self.n_step
            ok = (ready >= 0) & (ready >= head - self.slots + self.stack)
            ok &= self.valid[envs, ready % self.slots]
            if ok.any():
                self.tree.update(base[ok] + ready[ok] % self.slots, np.full(int(ok.sum()), self.max_priority))

    def start(self, observations: np.ndarray, envs: np.ndarray | None = None) -> None:
        """Begin new episodes with their first (stacked) observations."""
        envs = self._env_index if envs is None else np.asarray(envs)
        observations = np.asarray(observations)
        if not self.stacked:
            self._advance(envs, observations)
            return
        for k in range(self.stack):
            self._advance(envs, observations[:, k])

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: np.ndarray,
        reset_step: np.ndarray | None = None,
    ) -> None:
        """Record one vector step. ``reset_step[i]`` marks envs that were autoreset this step (next-step
        autoreset): their step is no transition and ``next_observations[i]`` starts a new episode."""
        reset_step = np.zeros(self.num_envs, dtype=bool) if reset_step is None else np.asarray(reset_step)
        live = np.flatnonzero(~reset_step)
        if len(live):
            slot = self.head[live] % self.slots
            self.actions[live, slot] = actions[live]
            self.rewards[live, slot] = rewards[live]
            self.terminated[live, slot] = terminated[live]
            self.episode_end[live, slot] = terminated[live] | truncated[live]
            self.valid[live, slot] = True
            newest = next_observations[live, -1] if self.stacked else next_observations[live]
            self._advance(live, newest)
        restarted = np.flatnonzero(reset_step)
        if len(restarted):
            self.start(next_observations[restarted], restarted)

    def truncate_streams(self) -> None:
        """End every stream's running episode as truncated (used when envs restart on resume)."""
        last = self.head - 1
        envs = np.flatnonzero(last >= 0)
        slots = last[envs] % self.slots
        self.episode_end[envs, slots] |= self.valid[envs, slots]

    # ---- reading -------------------------------------------------------------------------------------
    def _stack(self, envs: np.ndarray, newest: np.ndarray) -> np.ndarray:
        if not self.stacked:
            return self.frames[envs, newest % self.slots]
        offsets = np.arange(-self.stack + 1, 1)
        return self.frames[envs[:, None], (newest[:, None] + offsets) % self.slots]

    def observation(self, env: int, slot: int) -> np.ndarray:
        """The observation of the transition at absolute ``slot`` of stream ``env``."""
        return self._stack(np.array([env]), np.array([slot]))[0]

    def _sample_uniform(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over every stored transition: a draw over the concatenated candidate ranges of all streams
        (before the buffer wraps, streams hold different numbers of slots), rejecting the episode-start slots
        that hold no transition."""
        low, sizes = self._candidate_ranges()
        ends = np.cumsum(sizes)
        if ends[-1] == 0:
            raise RLKitError(NOTHING_TO_SAMPLE)
        envs = np.empty(batch_size, dtype=np.int64)
        slots = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        for _ in range(1000):
            draw = self.rng.integers(0, ends[-1], len(todo))
            e = np.searchsorted(ends, draw, side="right")
            u = low[e] + draw - (ends[e] - sizes[e])
            usable = self.valid[e, u % self.slots]
            envs[todo[usable]], slots[todo[usable]] = e[usable], u[usable]
            todo = todo[~usable]
            if len(todo) == 0:
                return envs, slots
        raise RLKitError(NOTHING_TO_SAMPLE)

    def can_sample(self) -> bool:
        """Whether ``sample`` can draw a batch now (at least one sampleable transition)."""
        if self.tree is not None:
            return self.tree.total > 0
        low, sizes = self._candidate_ranges()
        # the newest candidate of each stream is valid unless its stream has just restarted an episode
        newest = self.valid[np.arange(self.num_envs), (low + sizes - 1) % self.slots] & (sizes > 0)
        return bool(newest.any()) or len(self) > 0

    def sample(self, batch_size: int, beta: float = 0.4, device: str | torch.device = "cpu") -> ReplayBatch:
        """Sample a batch (proportional to priority when prioritized, else uniform)."""
        if self.tree is not None:
            total = self.tree.total
            if total <= 0:
                raise RLKitError(NOTHING_TO_SAMPLE)
            bounds = np.linspace(0.0, total, batch_size + 1)
            prefix = bounds[:-1] + self.rng.random(batch_size) * (bounds[1:] - bounds[:-1])
            prefix = np.minimum(prefix, np.nextafter(total, 0))
            leaves = np.minimum(self.tree.find(prefix), self.num_envs * self.slots - 1)
            probs = self.tree.get(leaves) / total
            weights = (self.tree.positive * probs) ** (-beta)
            weights = weights / weights.max()
            envs, rel = leaves // self.slots, leaves % self.slots
            slots = self.head[envs] - ((self.head[envs] - rel) % self.slots)
        else:
            envs, slots = self._sample_uniform(batch_size)
            weights = np.ones(batch_size)
            leaves = envs * self.slots + slots % self.slots
        returns, boot_slots, discounts = self._n_step(envs, slots)
        as_tensor = torch.as_tensor
        return ReplayBatch(
            observations=as_tensor(self._stack(envs, slots), device=device),
            actions=as_tensor(self.actions[envs, slots % self.slots], device=device),
            returns=as_tensor(returns, device=device),
            next_observations=as_tensor(self._stack(envs, boot_slots), device=device),
            discounts=as_tensor(discounts, device=device),
            weights=as_tensor(weights.astype(np.float32), device=device),
            indices=leaves,
        )

    def _n_step(self, envs: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n-step discounted return, bootstrap slot and bootstrap discount for each sampled transition."""
        returns = np.zeros(len(envs), dtype=np.float32)
        alive = np.ones(len(envs), dtype=bool)
        steps = np.zeros(len(envs), dtype=np.int64)
        terminal = np.zeros(len(envs), dtype=bool)
        for k in range(self.n_step):
            s = (slots + k) % self.slots
            returns += np.where(alive, (self.gamma**k) * self.rewards[envs, s], 0.0).astype(np.float32)
            steps += alive
            ended = alive & self.episode_end[envs, s]
            terminal |= ended & self.terminated[envs, s]
            alive &= ~ended
        discounts = np.where(terminal, 0.0, self.gamma**steps).astype(np.float32)
        return returns, slots + steps, discounts

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray, eps: float = 1e-6) -> None:
        """Set priorities to ``(|td| + eps) ** alpha`` for sampled leaves still in the buffer."""
        if self.tree is None:
            return
        priorities = (np.abs(td_errors) + eps) ** self.alpha
        alive = self.tree.get(indices) > 0  # skip leaves overwritten since sampling
        if alive.any():
            self.tree.update(indices[alive], priorities[alive])
            self.max_priority = max(self.max_priority, float(priorities[alive].max()))

    # ---- checkpointing -------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "frames": self.frames,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "episode_end": self.episode_end,
            "valid": self.valid,
            "head": self.head,
            "max_priority": np.array([self.max_priority]),
            "n_step": np.array([self.n_step]),
        }
        if self.tree is not None:
            arrays["tree"] = self.tree.tree
        return arrays

    def load_state_file(self, path: str | Path, chunk_slots: int = 1 << 14) -> None:
        """Restore a file written from ``state_arrays`` after checking it fits this buffer's settings. Arrays
        are copied a slice at a time straight into this buffer (a 1M Atari replay is 7 GB: no second copy in
        memory), and all-zero slices are skipped so never-written pages stay unallocated."""
        fix = "resume with the run's buffer_size, num_envs and n_step, or with --set save_buffer=false"
        try:
            with safe_open(str(path), framework="numpy") as handle:
                saved = {name: handle.get_slice(name) for name in handle.keys()}
                names = ("frames", "actions", "rewards", "terminated", "episode_end", "valid", "head")
                for name in (*names, "max_priority"):
                    if name not in saved:
                        raise RLKitError(f"the saved replay buffer {path} has no {name}; {fix}.")
                for name in names:
                    found, expected = tuple(saved[name].get_shape()), getattr(self, name).shape
                    if found != expected:
                        raise RLKitError(f"the saved replay buffer's {name} has shape {found}, this config "
                                         f"needs {expected}; {fix}.")
                if "n_step" in saved and int(saved["n_step"][:][0]) != self.n_step:
                    raise RLKitError(f"the saved replay buffer was written with n_step={int(saved['n_step'][:][0])},"
                                     f" this config has n_step={self.n_step}; {fix}.")
                if (self.tree is not None) != ("tree" in saved):
                    written = "with" if "tree" in saved else "without"
                    raise RLKitError(
                        f"the saved replay buffer was written {written} prioritized replay; resume with the run's "
                        "prioritized setting, or with --set save_buffer=false."
                    )
                for name in names:
                    self._copy_saved(name, saved[name], chunk_slots)
                self.max_priority = float(saved["max_priority"][:][0])
                if self.tree is not None:
                    self.tree.load(saved["tree"][:])
        except (SafetensorError, OSError) as exc:
            raise RLKitError(f"replay file {path} is corrupt ({exc}); resume with --set save_buffer=false.") from None

    def _copy_saved(self, name: str, saved: Any, chunk_slots: int) -> None:
        """Copy one saved array into this buffer's array of the same name, stream by stream in slot chunks."""
        target = getattr(self, name)
        if target.ndim < 2:
            chunks = [(slice(None),)]
        else:
            chunks = [(e, slice(a, min(a + chunk_slots, target.shape[1]))) for e in range(target.shape[0])
                      for a in range(0, target.shape[1], chunk_slots)]
        for index in chunks:
            values = saved[index]
            if values.dtype != target.dtype:
                raise RLKitError(f"the saved replay buffer's {name} holds {values.dtype}, this config stores "
                                 f"{target.dtype}; resume with the run's env settings or --set save_buffer=false.")
            if values.any():
                target[index] = values
