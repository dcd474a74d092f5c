"""Benchmark rlkit DQN against Stable-Baselines3 DQN on ALE/Pong-v5 (CPU), with identical settings.

What is measured (everything printed is measured in this run; nothing is hard-coded):

1. **Env steps/s with learning** for rlkit and SB3, one after the other, each in its own subprocess
   (this script re-invokes itself with ``--only rlkit`` / ``--only sb3`` and reads one JSON line back),
   so that peak memory (``ru_maxrss`` of the child) does not mix. Both use the SB3 RL Zoo Atari DQN
   settings (rlkit preset ``dqn-atari``): replay 100k, Adam lr 1e-4, batch 32, train_freq 4,
   gradient_steps 1, target update every 1000 steps, NatureCNN, vanilla (non-double) DQN, Huber loss,
   grad-norm clip 10, frame stack 4, one env, sticky actions 0.25, epsilon 1 -> 0.01 over 1M steps
   (10% of the zoo's 10M). Only ``learning_starts`` is lowered (``--learning-starts``) so that learning
   begins early; after it, ``--warmup`` steps are run untimed, then ``--steps`` steps are timed.

   * rlkit runs its real training loop, ``DQN.learn(run)``, with an ``rlkit.run.Run`` in a temporary
     directory. The clock is read where the loop checks ``run.stop_requested`` (once per iteration),
     and the run is stopped the same way Ctrl-C stops it, right after the timed window (so the final
     evaluation is skipped).
   * SB3 runs ``DQN("CnnPolicy", env, ...).learn(10_000_000, callback=...)`` (the zoo's budget, so the
     exploration schedule matches), on the standard SB3 Atari pipeline: ``make_atari_env("ALE/Pong-v5",
     env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25})`` (``AtariWrapper``: noop reset 30,
     4-frame skip with max-pool, life loss = terminal, fire reset, 84x84 grayscale, reward clipping; v5's
     own frameskip is set to 1 because ``AtariWrapper`` skips frames itself) + ``VecFrameStack(4)``,
     ``optimize_memory_usage=False`` (what the RL Zoo Atari DQN config uses). A callback reads the clock
     and stops training after the timed window.

   Both windows contain the same number of env steps and gradient steps. Inside the window each phase
   (acting, env stepping, replay add, replay sampling, gradient step) is timed with thin wrappers around
   the library's own methods (a few microseconds per call).

2. **Where the time goes on CPU**: (a) each learner's achieved GFLOP/s, i.e. the FLOPs of one real train
   step counted by ``torch.utils.flop_counter.FlopCounterMode`` (an analytic NatureCNN count is printed as a
   cross-check) divided by the mean measured gradient-step time (train step minus replay sampling);
   (b) the machine's fp32 matmul peak (best of several 2048x2048 ``torch.mm``, same thread count);
   (c) the fraction of the timed wall time spent in each phase.

3. **Env-only throughput**: rlkit's pipeline (``rlkit.envs.make_vec_env("ALE/Pong-v5", num_envs=N,
   mode="train")`` stepping random actions) versus raw ALE: ``ale_py.ALEInterface`` with the Pong ROM,
   sticky actions 0.25, one agent step = 4 ``act()`` calls with ``getScreenGrayscale`` on the last two
   frames, no resize / stacking; and the same raw loop doing by hand the preprocessing every DQN Atari pipeline
   needs (max-pool of the two screens, ``cv2.resize(INTER_AREA)`` to 84x84 as SB3's ``WarpFrame``, a 4-frame
   stack shifted in place), so that rlkit's cost is shown against both. Like for like on the same cores: rlkit
   with 1 env (played in the calling process, ``backend=auto``) versus one raw ALE process; rlkit with 8 envs
   (``make_vec_env`` uses ``min(num_envs, cores)`` ALE threads) versus that many raw ALE processes stepping in
   parallel (aggregate steps/s). The machine's speed drifts by 10% and more over a minute on a shared VM,
   so the measurements run in ``--env-repeats`` rounds (default 3, the order reversed every other round), each
   rlkit figure right beside the raw loops it is compared with; the report gives the median of each figure and
   the median of the rounds' rlkit / raw ratios, with every round's ratio.

Run (from the repository root)::

    python scripts/bench_dqn.py                 # full benchmark: --steps 3000 after 1000 + 200 steps
    python scripts/bench_dqn.py --quick         # smoke check: a few hundred steps each
    python scripts/bench_dqn.py --repeats 3     # rlkit, SB3, rlkit, SB3, ...: median of each and every ratio
    python scripts/bench_dqn.py --threads 8 --steps 5000 --json bench.json

rlkit's child tunes glibc's malloc as the rlkit CLI does for every command (``rlkit/allocator.py``); SB3's
child runs with the defaults. ``--sb3-allocator`` adds a third child, SB3 with the same malloc settings, to
show how much of the ratio they explain.

Other load on the machine distorts every figure; the load average at the start is printed. ``--repeats N``
runs the training children alternately N times each and reports the run with the median steps/s of each
library in full, plus every pair's ratio and the median ratio.
SB3's ``AtariWrapper`` needs OpenCV (``pip install opencv-python-headless``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_children
import numpy as np

ENV_ID = "ALE/Pong-v5"
ROM = "pong"
ZOO_TOTAL_STEPS = 10_000_000
TRAIN_FREQ = 4
FRAME_SKIP = 4
STICKY = 0.25
MATMUL_N = 2048
VEC_ENVS = 8
PHASES = ("act", "env", "replay_add", "replay_sample", "grad_step")


# ---- shared helpers ------------------------------------------------------------------------------------
class PhaseTimer:
    """Accumulates wall time per phase while ``active`` (i.e. inside the timed window)."""

    def __init__(self) -> None:
        self.active = False
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.t0: float | None = None
        self.t1: float | None = None
        self.cpu0 = 0.0
        self.cpu1 = 0.0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
                self.counts[name] = self.counts.get(name, 0) + 1

        return timed

    def start(self) -> None:
        self.t0, self.cpu0, self.active = time.perf_counter(), time.process_time(), True

    def stop(self) -> None:
        self.t1, self.cpu1, self.active = time.perf_counter(), time.process_time(), False

    def summary(self, steps: int, train_name: str, sample_name: str) -> dict[str, Any]:
        """Wall time, steps/s, CPU cores busy, per-phase seconds (gradient step = train - sample)."""
        assert self.t0 is not None and self.t1 is not None, "the timed window never completed"
        wall = self.t1 - self.t0
        phases = {name: self.totals.get(name, 0.0) for name in ("act", "env", "replay_add")}
        phases["replay_sample"] = self.totals.get(sample_name, 0.0)
        phases["grad_step"] = self.totals.get(train_name, 0.0) - phases["replay_sample"]
        updates = self.counts.get(train_name, 0)
        return {
            "wall_s": wall,
            "steps": steps,
            "sps": steps / wall,
            "cpu_cores_busy": (self.cpu1 - self.cpu0) / wall,
            "phases_s": phases,
            "updates": updates,
            "grad_step_s": phases["grad_step"] / max(updates, 1),
        }


def window(args: argparse.Namespace) -> tuple[int, int]:
    """Env steps at which the timed window starts and ends (multiples of train_freq)."""
    start = args.learning_starts + args.warmup
    start = -(-start // TRAIN_FREQ) * TRAIN_FREQ
    steps = -(-args.steps // TRAIN_FREQ) * TRAIN_FREQ
    return start, start + steps


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def count_flops(step: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


# ---- child: rlkit --------------------------------------------------------------------------------------
def bench_rlkit(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlkit.allocator import tune_allocator

    tune_allocator()  # as the rlkit CLI does for every command
    torch.set_num_threads(args.threads)
    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.agents.replay import FrameReplayBuffer
    from rlkit.config import build_config, load_preset
    from rlkit.envs import make_vec_env
    from rlkit.run import Run

    start_mark, end_mark = window(args)
    values = load_preset("dqn", "atari")
    values.update(
        env_id=ENV_ID,
        learning_starts=args.learning_starts,
        total_steps=end_mark + 1,  # the run is stopped at end_mark, before the final evaluation
        seed=args.seed,
        device="cpu",
        torch_threads=args.threads,
    )
    values["env_kwargs"] = {**(values.get("env_kwargs") or {}), "backend": args.atari_backend}
    config = build_config(DQNConfig, values, source="benchmark config")
    probe = make_vec_env(ENV_ID, 1, mode="train", env_kwargs=config.env_kwargs)
    observation_space, action_space = probe.single_observation_space, probe.single_action_space
    env_settings = dict(probe.settings_dict)
    probe.close()
    agent = DQN(config, observation_space, action_space)
    timer = PhaseTimer()

    class TimedRun(Run):
        """A real Run whose stop flag doubles as the clock: the loop reads it once per iteration."""

        _stop = False

        @property
        def stop_requested(self) -> bool:  # type: ignore[override]
            step = agent.global_step
            if timer.t0 is None and step >= start_mark:
                timer.start()
            if timer.t1 is None and step >= end_mark:
                timer.stop()
            return self._stop or timer.t1 is not None

        @stop_requested.setter
        def stop_requested(self, value: bool) -> None:
            self._stop = value

    # Thin timers around the loop's own calls (instance attributes shadow the methods).
    agent.act = timer.wrap("act", agent.act)  # type: ignore[method-assign]
    agent.train_step = timer.wrap("train", agent.train_step)  # type: ignore[method-assign]
    original_make_buffer = agent.make_buffer

    def make_buffer(num_envs: int, stacked: bool = False) -> FrameReplayBuffer:
        buffer = original_make_buffer(num_envs, stacked)
        buffer.add = timer.wrap("replay_add", buffer.add)  # type: ignore[method-assign]
        buffer.sample = timer.wrap("sample", buffer.sample)  # type: ignore[method-assign]
        return buffer

    agent.make_buffer = make_buffer  # type: ignore[method-assign]
    original_make_train_envs = agent.make_train_envs

    def timed_make_train_envs() -> Any:
        envs = original_make_train_envs()
        envs.step = timer.wrap("env", envs.step)
        return envs

    agent.make_train_envs = timed_make_train_envs  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        record = {"algo": "dqn", "config": dataclasses.asdict(config), "env_settings": env_settings}
        with TimedRun(Path(tmp) / "run", record) as run:
            agent.learn(run)
    result = timer.summary(end_mark - start_mark, "train", "sample")
    buffer = agent.buffer
    assert buffer is not None
    result.update(
        flops_per_update=count_flops(lambda: agent.train_step(buffer)),
        peak_rss=peak_rss_bytes(),
        buffer_bytes_full=int(buffer.nbytes),
        torch_threads=torch.get_num_threads(),
        n_actions=int(action_space.n),
        obs_shape=list(observation_space.shape),
        global_step=agent.global_step,
        settings={
            k: getattr(config, k)
            for k in ("buffer_size", "lr", "batch_size", "train_freq", "gradient_steps", "target_update_interval",
                      "double_dqn", "dueling", "n_step", "encoder", "learning_starts", "exploration_steps")
        },
        env_settings=env_settings,
    )
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
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    start_mark, end_mark = window(args)
    env = make_atari_env(
        ENV_ID,
        n_envs=1,
        seed=args.seed,
        # AtariWrapper does the 4-frame skip + max-pool itself; v5's default frameskip=4 would make it 16.
        env_kwargs={"frameskip": 1, "repeat_action_probability": STICKY},
    )
    env = VecFrameStack(env, n_stack=4)
    model = DQN(
        "CnnPolicy",
        env,
        buffer_size=100_000,
        learning_rate=1e-4,
        batch_size=32,
        learning_starts=args.learning_starts,
        target_update_interval=1000,
        train_freq=TRAIN_FREQ,
        gradient_steps=1,
        exploration_fraction=0.1,
        exploration_final_eps=0.01,
        optimize_memory_usage=False,
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    timer = PhaseTimer()

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if timer.t0 is None and self.num_timesteps >= start_mark:
                timer.start()
            if timer.t1 is None and self.num_timesteps >= end_mark:
                timer.stop()
                return False
            return True

    model.predict = timer.wrap("act", model.predict)  # type: ignore[method-assign]
    model.train = timer.wrap("train", model.train)  # type: ignore[method-assign]
    vec_env = model.get_env()
    assert vec_env is not None
    vec_env.step = timer.wrap("env", vec_env.step)  # type: ignore[method-assign]
    replay = model.replay_buffer
    assert replay is not None
    replay.add = timer.wrap("replay_add", replay.add)  # type: ignore[method-assign]
    replay.sample = timer.wrap("sample", replay.sample)  # type: ignore[method-assign]
    model.learn(total_timesteps=ZOO_TOTAL_STEPS, callback=Clock())
    result = timer.summary(end_mark - start_mark, "train", "sample")
    arrays = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
    buffer_bytes = sum(getattr(replay, name).nbytes for name in arrays if getattr(replay, name, None) is not None)
    import stable_baselines3

    result.update(
        flops_per_update=count_flops(lambda: model.train(gradient_steps=1, batch_size=32)),
        peak_rss=peak_rss_bytes(),
        buffer_bytes_full=int(buffer_bytes),
        torch_threads=torch.get_num_threads(),
        num_timesteps=int(model.num_timesteps),
        exploration_rate=float(model.exploration_rate),
        version=stable_baselines3.__version__,
        optimize_memory_usage=bool(replay.optimize_memory_usage),
        obs_shape=list(model.observation_space.shape),
        double_dqn=False,
    )
    env.close()
    return result


# ---- child: machine (matmul peak, env-only throughput) ------------------------------------------------
def raw_ale_worker(steps: int, warmup: int, seed: int, preprocess: bool, barrier: Any, queue: Any) -> None:
    """Step raw ALE Pong: agent step = 4 act() calls, grayscale screens of the last two frames. With
    ``preprocess`` the loop also does, by hand, the work every DQN Atari pipeline must do: max-pool of the two
    screens, 84x84 ``cv2.resize(INTER_AREA)`` (SB3's ``WarpFrame``), and a 4-frame stack shifted in place."""
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", STICKY)
    ale.loadROM(roms.get_rom_path(ROM))
    actions = ale.getMinimalActionSet()
    height, width = ale.getScreenDims()
    screens = np.empty((2, height, width), dtype=np.uint8)
    pooled = np.empty((height, width), dtype=np.uint8)
    stack = np.zeros((4, 84, 84), dtype=np.uint8)
    choice = np.random.default_rng(seed).integers(0, len(actions), warmup + steps)
    if preprocess:
        import cv2

    def play(indices: np.ndarray) -> None:
        for index in indices:
            action = actions[index]
            for frame in range(FRAME_SKIP):
                ale.act(action)
                if frame >= FRAME_SKIP - 2:
                    ale.getScreenGrayscale(screens[frame - FRAME_SKIP + 2])
            if preprocess:
                np.maximum(screens[0], screens[1], out=pooled)
                stack[:-1] = stack[1:]
                cv2.resize(pooled, (84, 84), dst=stack[-1], interpolation=cv2.INTER_AREA)
            if ale.game_over():
                ale.reset_game()

    play(choice[:warmup])
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    play(choice[warmup:])
    queue.put((time.perf_counter() - start, time.process_time() - cpu))


def raw_ale_sps(processes: int, steps: int, warmup: int, seed: int, preprocess: bool = False) -> dict[str, float]:
    """Aggregate agent steps/s (and CPU cores busy) of ``processes`` raw ALE processes stepping at once."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=raw_ale_worker, args=(steps, warmup, seed + i, preprocess, barrier, queue))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    times = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    wall = max(t[0] for t in times)
    return {"sps": processes * steps / wall, "cpu_cores_busy": sum(t[1] for t in times) / wall}


def rlkit_env_sps(num_envs: int, env_steps: int, warmup: int, seed: int) -> dict[str, float]:
    from rlkit.envs import make_vec_env

    envs = make_vec_env(ENV_ID, num_envs=num_envs, seed=seed, mode="train")
    n_actions = int(envs.single_action_space.n)
    vector_steps = max(env_steps // num_envs, 1)
    warm = max(warmup // num_envs, 1)
    actions = np.random.default_rng(seed).integers(0, n_actions, (warm + vector_steps, num_envs))
    envs.reset(seed=seed)
    for row in actions[:warm]:
        envs.step(row)
    start, cpu = time.perf_counter(), time.process_time()
    for row in actions[warm:]:
        envs.step(row)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    backend = getattr(envs, "backend", "?")
    envs.close()
    return {"sps": vector_steps * num_envs / wall, "cpu_cores_busy": cpu / wall, "backend": backend}


def ale_vector_sps(num_envs: int, threads: int, env_steps: int, warmup: int, seed: int, preprocess: bool) -> float:
    """ale-py's own AtariVectorEnv without rlkit's layer: with the standard preprocessing (what rlkit runs) or
    with none (full 210x160 frames, no max-pool, no stack), to separate rlkit's cost from ale-py's."""
    from ale_py.vector_env import AtariVectorEnv

    extra = {} if preprocess else {"img_height": 210, "img_width": 160, "stack_num": 1, "maxpool": False}
    envs = AtariVectorEnv("pong", num_envs, num_threads=threads, repeat_action_probability=STICKY,
                          reward_clipping=False, **extra)
    vector_steps, warm = max(env_steps // num_envs, 1), max(warmup // num_envs, 1)
    actions = np.random.default_rng(seed).integers(0, 6, (warm + vector_steps, num_envs))
    envs.reset(seed=seed)
    for row in actions[:warm]:
        envs.step(row)
    start = time.perf_counter()
    for row in actions[warm:]:
        envs.step(row)
    wall = time.perf_counter() - start
    envs.close()
    return vector_steps * num_envs / wall


def matmul_peak(threads: int, reps: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(MATMUL_N, MATMUL_N)
    b = torch.randn(MATMUL_N, MATMUL_N)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_N**3 / best / 1e9


def env_only_round(args: argparse.Namespace, reverse: bool) -> dict[str, Any]:
    """Every env-only measurement once. Each rlkit figure is taken right beside the raw loops it is compared
    with (``reverse`` flips the order, so that a slow drift of the machine's speed favours neither side)."""
    cores = os.cpu_count() or 1
    vec_threads = min(VEC_ENVS, cores)  # rlkit.envs.make_vec_env runs ALE on min(num_envs, cores) threads
    steps, seed = args.env_steps, args.seed
    warmup = max(steps // 10, 50)
    jobs: list[tuple[str, Callable[[], Any]]] = [
        ("raw_1", lambda: raw_ale_sps(1, steps, warmup, seed)),
        ("raw_pre_1", lambda: raw_ale_sps(1, steps, warmup, seed, preprocess=True)),
        ("rlkit_1", lambda: rlkit_env_sps(1, steps, warmup, seed)),
        ("raw_k", lambda: raw_ale_sps(vec_threads, steps, warmup, seed)),
        ("raw_pre_k", lambda: raw_ale_sps(vec_threads, steps, warmup, seed, preprocess=True)),
        ("rlkit_k", lambda: rlkit_env_sps(VEC_ENVS, steps * vec_threads, warmup, seed)),
        ("ale_vec_1", lambda: ale_vector_sps(1, 1, steps, warmup, seed, True)),
        ("ale_vec_1_bare", lambda: ale_vector_sps(1, 1, steps, warmup, seed, False)),
        ("ale_vec_k", lambda: ale_vector_sps(VEC_ENVS, vec_threads, steps * vec_threads, warmup, seed, True)),
        ("ale_vec_k_bare", lambda: ale_vector_sps(VEC_ENVS, vec_threads, steps * vec_threads, warmup, seed, False)),
    ]
    return {name: job() for name, job in (reversed(jobs) if reverse else jobs)}


def median_of(values: list[Any]) -> Any:
    """Median of floats, or field by field of dicts (non-numeric fields from the first)."""
    if isinstance(values[0], dict):
        return {key: median_of([v[key] for v in values]) if isinstance(values[0][key], (int, float)) else values[0][key]
                for key in values[0]}
    return statistics.median(values)


def bench_machine(args: argparse.Namespace) -> dict[str, Any]:
    """``--env-repeats`` rounds of the env-only measurements: the median of each figure, with every round kept
    (the report divides rlkit by raw within each round, both sides measured within seconds of each other)."""
    rounds = [env_only_round(args, reverse=bool(r % 2)) for r in range(args.env_repeats)]
    result: dict[str, Any] = {name: median_of([r[name] for r in rounds]) for name in rounds[0]}
    result["raw_k_processes"] = min(VEC_ENVS, os.cpu_count() or 1)
    result["rlkit_k_envs"] = VEC_ENVS
    result["rlkit_k_threads"] = result["raw_k_processes"]
    result["rounds"] = rounds
    result["matmul_gflops"] = matmul_peak(args.threads, args.matmul_reps)
    return result


# ---- parent: orchestration and report ------------------------------------------------------------------
def run_child(which: str, args: argparse.Namespace) -> dict[str, Any]:
    """One child of this script (``--only which``) with the parent's settings."""
    return bench_children.run_child(
        str(Path(__file__).resolve()), which,
        ["--steps", str(args.steps), "--learning-starts", str(args.learning_starts), "--warmup", str(args.warmup),
         "--threads", str(args.threads), "--env-steps", str(args.env_steps), "--env-repeats", str(args.env_repeats),
         "--matmul-reps", str(args.matmul_reps),
         "--seed", str(args.seed), "--atari-backend", args.atari_backend],
        verbose=args.verbose,
    )


def nature_cnn_train_flops(obs_shape: list[int], n_actions: int, batch: int) -> int:
    """Analytic FLOPs of one vanilla-DQN train step on NatureCNN + linear Q head: target forward on the
    next observations, online forward, backward = 2x forward except the first conv (no input gradient)."""
    channels, size, _ = obs_shape
    macs, first = 0, 0
    for out_channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        size = (size - kernel) // stride + 1
        layer = size * size * out_channels * kernel * kernel * channels
        first = first or layer
        macs += layer
        channels = out_channels
    macs += channels * size * size * 512 + 512 * n_actions
    return 2 * batch * (macs + macs + 2 * macs - first)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def report(args: argparse.Namespace, rl: dict[str, Any], sb: dict[str, Any], machine: dict[str, Any],
           load: tuple[float, float, float]) -> None:
    cores = os.cpu_count() or 1
    ratio = rl["sps"] / sb["sps"]
    start, end = window(args)
    print()
    print(f"DQN on {ENV_ID}, CPU: {cpu_model()}, {cores} cores, "
          f"torch threads {rl['torch_threads']} (rlkit) / {sb['torch_threads']} (SB3)")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + ("  (other load present: figures are distorted)" if load[0] > 0.3 * cores else ""))
    print(f"learning_starts {args.learning_starts}, untimed warmup to step {start}, timed steps {start}..{end} "
          f"({end - start} env steps, {rl['updates']} / {sb['updates']} gradient steps rlkit / SB3)")
    print(f"SB3 {sb['version']}: make_atari_env + VecFrameStack(4), optimize_memory_usage="
          f"{sb['optimize_memory_usage']}; rlkit preset dqn-atari, encoder {rl['settings']['encoder']}, "
          f"double_dqn={rl['settings']['double_dqn']}, Atari backend {rl['env_settings'].get('backend', '?')}")
    print()
    print("1) Training throughput (env steps/s with learning) and memory")
    header = f"  {'':24s}{'rlkit':>14s}{'SB3':>14s}"
    print(header)
    print(f"  {'env steps/s':24s}{rl['sps']:14.1f}{sb['sps']:14.1f}")
    print(f"  {'timed wall time (s)':24s}{rl['wall_s']:14.2f}{sb['wall_s']:14.2f}")
    print(f"  {'CPU cores busy':24s}{rl['cpu_cores_busy']:14.2f}{sb['cpu_cores_busy']:14.2f}")
    print(f"  {'peak RSS':24s}{fmt_bytes(rl['peak_rss']):>14s}{fmt_bytes(sb['peak_rss']):>14s}")
    print(f"  {'replay at full 100k':24s}{fmt_bytes(rl['buffer_bytes_full']):>14s}"
          f"{fmt_bytes(sb['buffer_bytes_full']):>14s}")
    verdict = "meets" if ratio >= 1.5 else "below"
    print(f"  speed ratio rlkit/SB3: {ratio:.2f}x ({verdict} the 1.5x target)")
    print("  (peak RSS covers this short run only: replay pages are committed as they fill, so a full run "
          "adds up to the replay size)")
    print()
    print("2) Where the time goes (fraction of the timed wall time)")
    print(f"  {'phase':24s}{'rlkit':>14s}{'SB3':>14s}")
    for phase in PHASES:
        print(f"  {phase:24s}{rl['phases_s'][phase] / rl['wall_s']:14.1%}{sb['phases_s'][phase] / sb['wall_s']:14.1%}")
    other_rl = 1 - sum(rl["phases_s"].values()) / rl["wall_s"]
    other_sb = 1 - sum(sb["phases_s"].values()) / sb["wall_s"]
    print(f"  {'other (loop, target, log)':24s}{other_rl:14.1%}{other_sb:14.1%}")
    print(f"  {'grad step (ms)':24s}{1e3 * rl['grad_step_s']:14.2f}{1e3 * sb['grad_step_s']:14.2f}")
    print(f"  {'FLOPs per grad step (G)':24s}{rl['flops_per_update'] / 1e9:14.3f}{sb['flops_per_update'] / 1e9:14.3f}")
    gf_rl = rl["flops_per_update"] / rl["grad_step_s"] / 1e9
    gf_sb = sb["flops_per_update"] / sb["grad_step_s"] / 1e9
    peak = machine["matmul_gflops"]
    print(f"  {'learner GFLOP/s':24s}{gf_rl:14.1f}{gf_sb:14.1f}")
    print(f"  {'  % of matmul peak':24s}{gf_rl / peak:14.1%}{gf_sb / peak:14.1%}")
    analytic = nature_cnn_train_flops(rl["obs_shape"], rl["n_actions"], rl["settings"]["batch_size"])
    print(f"  fp32 matmul peak ({MATMUL_N}x{MATMUL_N} torch.mm, {args.threads} threads, best of "
          f"{args.matmul_reps}): {peak:.1f} GFLOP/s")
    print(f"  FLOPs counted by FlopCounterMode on one real train step (analytic NatureCNN count: "
          f"{analytic / 1e9:.3f} GFLOP = target fwd + online fwd + backward at 2x fwd (1x for conv1), "
          f"batch {rl['settings']['batch_size']})")


def report_env_only(machine: dict[str, Any]) -> None:
    """Section 3: rlkit's env pipeline against raw ALE stepping, with and without the same preprocessing."""
    print("3) Env-only throughput, random actions (agent steps/s; 1 agent step = 4 emulator frames)")
    k = machine["raw_k_processes"]
    name_k = f"{machine['rlkit_k_envs']} envs"
    print(f"  {'':60s}{'steps/s':>10s}{'cores busy':>12s}{'rlkit / it':>12s}")
    rounds = len(machine["rounds"])
    verdicts = []
    for key, cores, label in (("1", 1, "1 env"), ("k", k, name_k)):
        rl = machine[f"rlkit_{key}"]
        played = "in this process" if rl.get("backend") == "in_process" else f"{cores} ALE thread(s)"
        label = f"{label} ({played})"
        bare, pre = machine[f"raw_{key}"], machine[f"raw_pre_{key}"]
        same, none = machine[f"ale_vec_{key}"], machine[f"ale_vec_{key}_bare"]
        where = "1 process" if cores == 1 else f"{cores} processes in parallel"
        print(f"  {'rlkit make_vec_env, ' + label:60s}{rl['sps']:10.0f}{rl['cpu_cores_busy']:12.2f}")
        rows = (
            (f"raw ALE, {where}, no preprocessing", bare["sps"], bare["cpu_cores_busy"]),
            (f"raw ALE, {where}, same preprocessing by hand", pre["sps"], pre["cpu_cores_busy"]),
            (f"ale-py AtariVectorEnv, {label.split(' (')[0]}, same preprocessing", same, None),
            (f"ale-py AtariVectorEnv, {label.split(' (')[0]}, no preprocessing", none, None),
        )
        for name, sps, busy in rows:
            busy_text = f"{busy:12.2f}" if busy is not None else f"{'':12s}"
            print(f"    {name:58s}{sps:10.0f}{busy_text}{rl['sps'] / sps:12.1%}")
        per_round = [[r[f"rlkit_{key}"]["sps"] / r[f"{raw}_{key}"]["sps"] for r in machine["rounds"]]
                     for raw in ("raw", "raw_pre")]
        verdicts.append((cores, *per_round))
    print(f"  steps/s: median of {rounds} round(s); 'rlkit / it' divides those medians.")
    print("  raw ALE = ale_py.ALEInterface, Pong ROM, sticky 0.25, 4 act() per step + getScreenGrayscale on the "
          "last 2 frames; 'same preprocessing by hand' adds np.maximum of the two, cv2.resize INTER_AREA to 84x84 "
          "and a 4-frame stack shift.")
    print("  rlkit also does noop/fire reset, reward clipping, life-loss handling and episode statistics; its "
          "default backend plays 1 env in this process (rlkit.envs.ale_pool) and more on ale-py's C++ threads.")

    def described(ratios: list[float]) -> str:
        median = statistics.median(ratios)
        spread = f" (rounds: {', '.join(f'{r:.1%}' for r in ratios)})" if len(ratios) > 1 else ""
        return f"{median:.1%}{spread} ({'met' if median >= 0.9 else 'not met'})"

    print("  Target >= 90%, median over rounds of rlkit / raw measured in the same round:")
    for cores, vs_bare, vs_pre in verdicts:
        print(f"    {cores} core(s): vs raw stepping without preprocessing {described(vs_bare)}; "
              f"vs raw stepping with the same preprocessing {described(vs_pre)}.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed env steps with learning (default 3000)")
    parser.add_argument("--learning-starts", type=int, default=1000, help="env steps before learning (default 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps after learning starts (default 200)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads for both libraries (default: all cores)")
    parser.add_argument("--env-steps", type=int, default=10_000,
                        help="agent steps per env-only measurement and process (default 10000)")
    parser.add_argument("--env-repeats", type=int, default=3,
                        help="rounds of the env-only measurements, order reversed every other round; the medians "
                             "and each round's rlkit / raw ratio are reported (default 3)")
    parser.add_argument("--matmul-reps", type=int, default=10, help="timed 2048x2048 matmuls (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atari-backend", choices=("auto", "in_process", "ale_vector"), default="auto",
                        help="who plays rlkit's training env (AtariSettings.backend; default auto: in this process)")
    parser.add_argument("--quick", action="store_true", help="smoke check: a few hundred steps each")
    parser.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show the children's output")
    parser.add_argument("--env-only", action="store_true",
                        help="only the env-only throughput and matmul peak (section 3; no training)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate the rlkit and SB3 training children N times (default 1)")
    parser.add_argument("--sb3-allocator", action="store_true",
                        help="also run SB3 with rlkit's malloc settings (rlkit/allocator.py) and print that ratio")
    parser.add_argument("--only", choices=("rlkit", "sb3", "sb3-allocator", "machine"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.only is None:
        args.steps, args.learning_starts, args.warmup = 300, 200, 40
        args.env_steps, args.matmul_reps, args.env_repeats = 500, 3, 1
    if args.repeats < 1 or args.env_repeats < 1:
        parser.error(f"--repeats {args.repeats} / --env-repeats {args.env_repeats}: give 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = {"rlkit": bench_rlkit, "sb3": bench_sb3, "sb3-allocator": bench_sb3, "machine": bench_machine}
    if args.only is not None:
        bench_children.print_result(children[args.only](args))
        return 0
    load = os.getloadavg()
    if args.env_only:
        print(f"load average at start: {load[0]:.2f}")
        machine = run_child("machine", args)
        report_env_only(machine)
        write_json(args, {"machine": machine})
        return 0
    trainers = ["rlkit", "sb3"] + (["sb3-allocator"] if args.sb3_allocator else [])
    runs = bench_children.alternate(trainers, args.repeats, lambda name: run_child(name, args))
    machine = run_child("machine", args)
    median = bench_children.median_runs(runs)
    report(args, median["rlkit"], median["sb3"], machine, load)
    if args.sb3_allocator:
        tuned = median["sb3-allocator"]
        print(f"  SB3 with rlkit's malloc settings: {tuned['sps']:.1f} env steps/s (grad step "
              f"{1e3 * tuned['grad_step_s']:.2f} ms); rlkit / it: {median['rlkit']['sps'] / tuned['sps']:.2f}x")
    if args.repeats > 1:
        pairs, median_ratio = bench_children.pair_ratios(runs["rlkit"], runs["sb3"])
        print(f"  sections 1-2 show the median-speed run of each library out of {args.repeats}; every pair "
              f"(rlkit/SB3 env steps/s, run one after the other): {pairs}; median ratio {median_ratio:.2f}x")
    print()
    report_env_only(machine)
    write_json(args, {**runs, "machine": machine})
    return 0


def write_json(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """With ``--json``, write the arguments and every measurement there."""
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
