"""Benchmark rlkit PPO against Stable-Baselines3 PPO on ALE/Pong-v5 (CPU), with identical settings.

Settings on both sides: CleanRL ppo_atari / RL Zoo Atari PPO (rlkit preset ``ppo-atari``): 8 envs x 128
steps, 4 epochs, 4 minibatches of 256, NatureCNN shared by actor and critic, Adam lr 2.5e-4 (eps 1e-5,
linear decay over the 10M-step budget), clip 0.1 (value loss clipped too), entropy 0.01, value 0.5,
grad-norm 0.5, gamma 0.99, GAE lambda 0.95, advantages normalised per minibatch. Frames: grayscale 84x84,
frame skip 4 with max-pool, 4-frame stack, up to 30 no-ops, FIRE on reset, sticky actions 0.25, life loss
ends an episode, rewards clipped to their sign.

* rlkit runs its real training loop, ``PPO.learn(run)``, with a ``Run`` in a temporary directory; the clock
  is read where the loop checks ``run.stop_requested`` (once per rollout) and the run is stopped the way
  Ctrl-C stops it, right after the timed window. Envs: ale-py's C++ ``AtariVectorEnv``. By default
  (``--env-groups 0``, rlkit's auto) a CPU rollout plays the 8 games as 2 vector envs of 4 and acts for one
  while the other's games run; ``env`` is then the time the learner waits for games, not all of their play.
* SB3 runs ``PPO("CnnPolicy", ...).learn(10_000_000)`` on its standard Atari pipeline: ``make_atari_env(
  "ALE/Pong-v5", n_envs=8, env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25})`` (AtariWrapper:
  noop 30, skip 4 + max-pool, life loss terminal, fire reset, 84x84 gray, reward clip; v5's own frameskip
  set to 1 because AtariWrapper skips) + ``VecFrameStack(4)``; a callback reads the clock at rollout starts.

Each library runs in its own subprocess (peak RSS = the child's ``ru_maxrss``), with the same torch thread
count. After ``--warmup`` untimed rollouts, ``--rollouts`` rollouts (collection + update) are timed: the
same number of env steps and gradient steps on both sides. Phases are timed with thin wrappers around the
libraries' own calls: env stepping, acting (policy forward during collection) and the update.

rlkit's child tunes glibc's malloc as the rlkit CLI does (``rlkit/allocator.py``: freed tensor memory stays in
the heap, so minibatches do not page-fault); SB3's child runs with the defaults. ``--sb3-allocator`` adds a
third child, SB3 with the same malloc settings, to show how much of the ratio they explain.

On a shared machine the load changes between children; ``--repeats N`` runs the two children alternately
N times each and reports the run with the median steps/s of each library, plus every pair's ratio.

Run (from the repository root)::

    python scripts/bench_ppo.py               # 2 warm-up + 6 timed rollouts (6 x 1024 env steps) each
    python scripts/bench_ppo.py --threads 1 --repeats 3
    python scripts/bench_ppo.py --quick       # smoke check: 1 + 1 rollouts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_children

ENV_ID = "ALE/Pong-v5"
TOTAL_STEPS = 10_000_000
NUM_ENVS, ROLLOUT, EPOCHS, MINIBATCHES = 8, 128, 4, 4
PHASES = ("env", "act", "update")


class PhaseTimer:
    """Wall time per phase inside the timed window; ``exclusive`` phases pause the others' counting."""

    def __init__(self) -> None:
        self.active = False
        self.inside: str | None = None
        self.totals: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.t0: float | None = None
        self.t1: float | None = None
        self.cpu0 = self.cpu1 = 0.0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active or self.inside is not None:
                return fn(*args, **kwargs)
            self.inside, start = name, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - start
                self.inside = None

        return timed

    def tick(self, step: int, start_mark: int, end_mark: int) -> bool:
        """Start or stop the clock at ``step``; True once the window is over."""
        if self.t0 is None and step >= start_mark:
            self.t0, self.cpu0, self.active = time.perf_counter(), time.process_time(), True
        if self.t0 is not None and self.t1 is None and step >= end_mark:
            self.t1, self.cpu1, self.active = time.perf_counter(), time.process_time(), False
        return self.t1 is not None

    def summary(self, steps: int) -> dict[str, Any]:
        assert self.t0 is not None and self.t1 is not None, "the timed window never completed"
        wall = self.t1 - self.t0
        return {"wall_s": wall, "steps": steps, "sps": steps / wall, "cpu_cores_busy": (self.cpu1 - self.cpu0) / wall,
                "phases_s": dict(self.totals), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def window(args: argparse.Namespace) -> tuple[int, int]:
    batch = NUM_ENVS * ROLLOUT
    return args.warmup * batch, (args.warmup + args.rollouts) * batch


# ---- child: rlkit --------------------------------------------------------------------------------------
def bench_rlkit(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlkit.allocator import tune_allocator

    tune_allocator()  # as the rlkit CLI does for every command
    torch.set_num_threads(args.threads)
    from rlkit.agents.policy_gradient import PPO, PPOConfig
    from rlkit.config import build_config, load_preset
    from rlkit.envs import make_vec_env
    from rlkit.run import Run

    start_mark, end_mark = window(args)
    values = load_preset("ppo", "atari")
    values.update(env_id=ENV_ID, total_steps=TOTAL_STEPS, seed=args.seed, device="cpu", torch_threads=args.threads,
                  eval_every=0, checkpoint_every=0, log_every=10**9, precision=args.precision,
                  env_groups=args.env_groups)
    config = build_config(PPOConfig, values, source="benchmark config")
    probe = make_vec_env(ENV_ID, 1, mode="train", env_kwargs=config.env_kwargs)
    observation_space, action_space, env_settings = (probe.single_observation_space, probe.single_action_space,
                                                     dict(probe.settings_dict))
    probe.close()
    agent = PPO(config, observation_space, action_space)
    timer = PhaseTimer()

    class TimedRun(Run):
        """A real Run whose stop flag doubles as the clock: the loop reads it once per rollout."""

        _stop = False

        @property
        def stop_requested(self) -> bool:  # type: ignore[override]
            return self._stop or timer.tick(agent.global_step, start_mark, end_mark)

        @stop_requested.setter
        def stop_requested(self, value: bool) -> None:
            self._stop = value

    # Acting = the policy's forward passes during collection; those inside the update count as update.
    for name in ("distribution", "value", "distribution_and_value", "sample_with_value"):
        if hasattr(agent.net, name):  # older rlkit versions lack the last two
            setattr(agent.net, name, timer.wrap("act", getattr(agent.net, name)))
    agent.optimise = timer.wrap("update", agent.optimise)  # type: ignore[method-assign]
    original_make_train_envs = agent.make_train_envs

    def timed(envs: Any) -> Any:
        # ALE envs are stepped by send / recv (the games run in between; step calls both), others by step.
        for name in ("send", "recv") if hasattr(envs, "send") else ("step",):
            setattr(envs, name, timer.wrap("env", getattr(envs, name)))
        return envs

    agent.make_train_envs = lambda: timed(original_make_train_envs())  # type: ignore[method-assign]
    original_make_env_groups = agent.make_env_groups
    agent.make_env_groups = lambda: [timed(envs) for envs in original_make_env_groups()]  # type: ignore
    with tempfile.TemporaryDirectory() as tmp:
        record = {"algo": "ppo", "config": dataclasses.asdict(config), "env_settings": env_settings}
        with TimedRun(Path(tmp) / "run", record) as run:
            agent.learn(run)
    result = timer.summary(end_mark - start_mark)
    result.update(torch_threads=torch.get_num_threads(), global_step=agent.global_step, updates=agent.updates,
                  env_settings=env_settings, env_groups=agent.env_group_count())
    return result


# ---- child: SB3 ----------------------------------------------------------------------------------------
def bench_sb3(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.only == "sb3-allocator":  # SB3 with rlkit's malloc settings: how much of the gap they explain
        from rlkit.allocator import tune_allocator

        tune_allocator()
    torch.set_num_threads(args.threads)
    import ale_py
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    start_mark, end_mark = window(args)
    env = make_atari_env(ENV_ID, n_envs=NUM_ENVS, seed=args.seed,
                         env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25})
    env = VecFrameStack(env, n_stack=4)
    # vf_coef 0.25: SB3's value loss is the mean squared error, rlkit's (vf_coef 0.5) is half of it
    model = PPO("CnnPolicy", env, n_steps=ROLLOUT, n_epochs=EPOCHS, batch_size=NUM_ENVS * ROLLOUT // MINIBATCHES,
                learning_rate=lambda remaining: 2.5e-4 * remaining, clip_range=0.1, clip_range_vf=0.1,
                ent_coef=0.01, vf_coef=0.25,
                max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, device="cpu", seed=args.seed, verbose=0)
    timer = PhaseTimer()

    class Clock(BaseCallback):
        def _on_rollout_start(self) -> None:
            timer.tick(self.num_timesteps, start_mark, end_mark)

        def _on_step(self) -> bool:
            return timer.t1 is None

    model.policy.forward = timer.wrap("act", model.policy.forward)  # type: ignore[method-assign]
    model.train = timer.wrap("update", model.train)  # type: ignore[method-assign]
    vec_env = model.get_env()
    assert vec_env is not None
    vec_env.step = timer.wrap("env", vec_env.step)  # type: ignore[method-assign]
    model.learn(total_timesteps=TOTAL_STEPS, callback=Clock())
    result = timer.summary(end_mark - start_mark)
    result.update(torch_threads=torch.get_num_threads(), version=stable_baselines3.__version__,
                  num_timesteps=int(model.num_timesteps))
    env.close()
    return result


# ---- parent --------------------------------------------------------------------------------------------
def run_child(which: str, args: argparse.Namespace) -> dict[str, Any]:
    """One child of this script (``--only which``) with the parent's settings."""
    return bench_children.run_child(
        str(Path(__file__).resolve()), which,
        ["--rollouts", str(args.rollouts), "--warmup", str(args.warmup), "--threads", str(args.threads),
         "--seed", str(args.seed), "--precision", args.precision, "--env-groups", str(args.env_groups)],
        verbose=args.verbose,
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def report(args: argparse.Namespace, rl: dict[str, Any], sb: dict[str, Any], load: tuple[float, ...]) -> None:
    cores = os.cpu_count() or 1
    start, end = window(args)
    ratio = rl["sps"] / sb["sps"]
    print()
    print(f"PPO on {ENV_ID}, CPU: {cpu_model()}, {cores} cores, torch threads {rl['torch_threads']} (rlkit) / "
          f"{sb['torch_threads']} (SB3); rlkit precision {args.precision} (SB3: fp32), "
          f"env groups {rl.get('env_groups', 1)}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + ("  (other load present: figures are distorted)" if load[0] > 0.3 * cores else ""))
    print(f"{NUM_ENVS} envs x {ROLLOUT} steps, {EPOCHS} epochs x {MINIBATCHES} minibatches of "
          f"{NUM_ENVS * ROLLOUT // MINIBATCHES}; untimed to step {start}, timed steps {start}..{end} "
          f"({args.rollouts} rollouts + updates); SB3 {sb['version']}: make_atari_env + VecFrameStack(4)")
    print()
    print(f"  {'':26s}{'rlkit':>12s}{'SB3':>12s}")
    print(f"  {'env steps/s (learning)':26s}{rl['sps']:12.1f}{sb['sps']:12.1f}")
    print(f"  {'timed wall time (s)':26s}{rl['wall_s']:12.2f}{sb['wall_s']:12.2f}")
    print(f"  {'CPU cores busy':26s}{rl['cpu_cores_busy']:12.2f}{sb['cpu_cores_busy']:12.2f}")
    print(f"  {'peak RSS (MiB)':26s}{rl['peak_rss'] / 2**20:12.0f}{sb['peak_rss'] / 2**20:12.0f}")
    for phase in PHASES:
        label = f"{phase} (s, share)"
        cells = [f"{r['phases_s'][phase]:6.2f} {r['phases_s'][phase] / r['wall_s']:4.0%}" for r in (rl, sb)]
        print(f"  {label:26s}{cells[0]:>12s}{cells[1]:>12s}")
    other = [1 - sum(r["phases_s"].values()) / r["wall_s"] for r in (rl, sb)]
    print(f"  {'other (GAE, buffers, loop)':26s}{other[0]:12.0%}{other[1]:12.0%}")
    print(f"  speed ratio rlkit/SB3: {ratio:.2f}x ({'meets' if ratio >= 1.5 else 'below'} the 1.5x target)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=6, help="timed rollouts of 1024 env steps (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rollouts first (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads for both libraries (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="rlkit's encoder arithmetic (config precision; SB3 has only fp32). Default fp32")
    parser.add_argument("--env-groups", type=int, default=0,
                        help="rlkit env_groups (default 0: auto, 2 on a CPU; 1: one vector env, no overlap)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two children N times (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 warm-up + 1 timed rollout")
    parser.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show the children's output")
    parser.add_argument("--sb3-allocator", action="store_true",
                        help="also run SB3 with rlkit's malloc settings (rlkit/allocator.py) and print that ratio")
    parser.add_argument("--only", choices=("rlkit", "sb3", "sb3-allocator"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.only is None:
        args.rollouts, args.warmup = 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = {"rlkit": bench_rlkit, "sb3": bench_sb3}
    if args.sb3_allocator or args.only == "sb3-allocator":
        children["sb3-allocator"] = bench_sb3
    if args.only is not None:
        bench_children.print_result(children[args.only](args))
        return 0
    load = os.getloadavg()
    runs = bench_children.alternate(list(children), args.repeats, lambda name: run_child(name, args))
    median = bench_children.median_runs(runs)
    report(args, median["rlkit"], median["sb3"], load)
    if "sb3-allocator" in median:
        tuned = median["sb3-allocator"]
        update = tuned["phases_s"]["update"]
        print(f"  SB3 with rlkit's malloc settings: {tuned['sps']:.1f} env steps/s (update {update:.2f} s); "
              f"rlkit / it: {median['rlkit']['sps'] / tuned['sps']:.2f}x")
    if args.repeats > 1:
        pairs, median_ratio = bench_children.pair_ratios(runs["rlkit"], runs["sb3"])
        print(f"  table: the median-speed run of each of {args.repeats}; every pair (rlkit/SB3 steps/s, run one after "
              f"the other): {pairs}; median ratio {median_ratio:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
