"""Bookkeeping every training loop shares, so each agent's loop shows only its own algorithm.

``LoopMonitor`` counts finished episodes, writes training scalars and the progress display every
``log_every`` env steps, evaluates every ``eval_every`` (stopping early at ``stop_at_return``), records
videos every ``video_every`` and writes periodic checkpoints every ``checkpoint_every``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from rlkit.envs import episode_stats
from rlkit.evaluation import evaluate_during_training
from rlkit.video import record_training_video


class LoopMonitor:
    """Call ``episodes(info)`` after each env step and ``tick(scalars)`` after each iteration."""

    def __init__(self, agent: Any, run: Any) -> None:
        self.agent, self.run = agent, run
        cfg = agent.config
        step = agent.global_step
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.progress = run.progress(cfg.total_steps, step)
        self.last_log_step, self.last_log_time = step, time.time()
        self.next_log = self._next(cfg.log_every)
        self.next_eval = self._next(cfg.eval_every)
        self.next_video = self._next(cfg.video_every)
        self.next_checkpoint = self._next(cfg.checkpoint_every)
        self.stopped_early = False
        self.evaluated_at = -1

    def _next(self, every: int) -> int:
        """The first multiple of ``every`` after the current step (0: never): a tick that jumps past several
        multiples (a rollout longer than ``every``) does the thing once, and the schedule does not fall behind."""
        return (self.agent.global_step // every + 1) * every if every > 0 else 0

    def episodes(self, info: dict) -> None:
        """Log every episode that finished in this step's ``info``."""
        for _, ret, length in episode_stats(info):
            self.agent.episodes += 1
            self.recent_returns.append(ret)
            self.run.log_scalars(
                {"charts/episodic_return": ret, "charts/episodic_length": length}, self.agent.global_step
            )

    def tick(self, scalars: dict[str, Any]) -> bool:
        """Do whatever is due at the agent's current step; ``scalars`` are the agent's own training scalars
        (losses, epsilon, ...; floats or one-element tensors, read only when a log line is due). Returns True
        when training should stop."""
        agent, run, cfg = self.agent, self.run, self.agent.config
        step = agent.global_step
        if step >= self.next_log:
            scalars = {k: float(v) for k, v in scalars.items()}
            now = time.time()
            sps = (step - self.last_log_step) / max(now - self.last_log_time, 1e-9)
            self.last_log_step, self.last_log_time = step, now
            values = {"charts/sps": sps, **scalars}
            run.log_scalars(values, step)
            self.next_log = self._next(cfg.log_every)
            charts = {k: v for k, v in scalars.items() if k.startswith("charts/")}
            stats = {k.split("/")[-1]: f"{v:.3g}" for k, v in charts.items()}
            if self.recent_returns:
                stats["ret"] = f"{np.mean(self.recent_returns):.1f}"
            if agent.best_eval > -float("inf"):
                stats["best_eval"] = f"{agent.best_eval:.1f}"
            self.progress.update(step, stats)
        if run.stop_requested:  # Ctrl-C / SIGTERM: save (the caller does) before a grace period runs out
            return True
        if self.next_eval and step >= self.next_eval:
            self.next_eval = self._next(cfg.eval_every)
            mean = self.evaluate()
            if run.stop_requested:
                return True
            if cfg.stop_at_return is not None and mean >= cfg.stop_at_return:
                run.print(f"eval mean return {mean:.2f} >= stop_at_return {cfg.stop_at_return}: stopping")
                self.stopped_early = True
                return True
        if self.next_video and step >= self.next_video:
            self.next_video = self._next(cfg.video_every)
            record_training_video(agent, run)
        if self.next_checkpoint and step >= self.next_checkpoint:
            self.next_checkpoint = self._next(cfg.checkpoint_every)
            agent.save(run.checkpoint_dir / f"step_{step:09d}.safetensors")
            agent.save(run.checkpoint_dir / "last.safetensors", with_buffer=True)
        return run.stop_requested

    def evaluate(self) -> float:
        self.evaluated_at = self.agent.global_step
        return evaluate_during_training(self.agent, self.run)

    def finish(self) -> None:
        """After the loop: say how to resume a stopped run, or evaluate the final policy (once) and record it."""
        agent, run = self.agent, self.run
        self.progress.close()
        if run.stop_requested:
            run.print(f"stopped at step {agent.global_step}; resume with: rlkit train --resume {run.dir}")
            return
        if self.evaluated_at != agent.global_step:
            self.evaluate()
        # last.safetensors must carry the final best_eval, or a resumed run would compare against a stale best.
        agent.save(run.checkpoint_dir / "last.safetensors")
