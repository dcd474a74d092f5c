"""Resuming runs: counters, schedules, optimizer and replay state continue; Ctrl-C saves; runs are deterministic."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from test_cli import assert_user_error

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.checkpoint import load_checkpoint, optimizer_tensors
from rlkit.cli import main

SMALL = ["--set", "learning_starts=500", "--set", "train_freq=4", "--set", "gradient_steps=1",
         "--set", "eval_every=0", "--set", "eval_episodes=1", "--set", "torch_threads=1"]


def train(*argv: str) -> None:
    assert main(["train", *argv]) == 0


def last_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_checkpoint(run_dir / "checkpoints" / "last.safetensors")


def adam_steps(tensors: dict[str, torch.Tensor], meta: dict) -> set[float]:
    steps = {float(v) for k, v in tensors.items() if k.startswith("optim.") and k.endswith(".step")}
    steps |= {float(s["step"]) for s in meta["optimizer"]["scalars"].values() if "step" in s}
    return steps


def epsilon_of(meta: dict) -> float:
    config = DQNConfig(**{**meta["config"], "device": "cpu"})
    agent = DQN(config, gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
    agent.global_step = meta["counters"]["global_step"]
    return agent.epsilon()


def evaluations(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval" / "evaluations.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    a, b = root / "a", root / "b"
    common = ["dqn", "--env", "CartPole-v1", *SMALL, "--set", "save_buffer=true"]
    train(*common, "--total-steps", "3000", "--run-dir", str(a))
    train(*common, "--total-steps", "1500", "--run-dir", str(b))
    assert (b / "checkpoints" / "replay.safetensors").is_file()
    train("--resume", str(b), "--total-steps", "3000")
    return a, b


def test_resume_continues_counters_and_schedules(resumed_pair):
    a, b = resumed_pair
    tensors_a, meta_a = last_checkpoint(a)
    tensors_b, meta_b = last_checkpoint(b)
    for meta in (meta_a, meta_b):
        counters = meta["counters"]
        assert counters["global_step"] == 3000
        # trains at step 500 (schedule anchored at 499), then 503, 507, ..., 2999: 1 + 625 updates
        assert counters["updates"] == 626
        assert counters["next_train_step"] == 3003
        # target copies every 10 steps from 499: next one due at 3009
        assert counters["next_target_step"] == 3009
        assert counters["learning_starts_at"] == 500
        # classic preset epsilon: 1.0 -> 0.04 over 8000 steps
        assert epsilon_of(meta) == pytest.approx(1.0 - 0.96 * 3000 / 8000)
    assert adam_steps(tensors_a, meta_a) == {626.0}
    assert adam_steps(tensors_b, meta_b) == {626.0}
    assert meta_b["config"]["total_steps"] == 3000


def test_resume_restores_replay_buffer(resumed_pair):
    _, b = resumed_pair
    log = (b / "stdout.log").read_text()
    assert "resuming" in log and "at step 1500" in log
    line = next(x for x in log.splitlines() if x.startswith("restored replay buffer"))
    transitions = int(line.split(":")[1].split()[0])
    assert 1000 < transitions <= 1500  # one transition per step except the autoreset steps
    assert "re-warming" not in log


def test_resume_keeps_best_evaluation(resumed_pair):
    _, b = resumed_pair
    records = evaluations(b)
    assert [r["step"] for r in records] == [1500, 3000]
    best = max(records, key=lambda r: r["mean"])
    _, meta = last_checkpoint(b)
    assert meta["counters"]["best_eval"] == pytest.approx(best["mean"])
    _, best_meta = load_checkpoint(b / "checkpoints" / "best.safetensors")
    # best.safetensors is the checkpoint of the best evaluation, not of a later, worse one
    assert best_meta["counters"]["global_step"] == best["step"]
    assert best_meta["counters"]["best_eval"] == pytest.approx(best["mean"])


def test_resume_keeps_a_best_saved_after_the_last_checkpoint(tmp_path):
    """A run killed after a new best (best.safetensors written) but before its next last.safetensors: the resume
    takes the best evaluation from best.safetensors too, so a worse policy never overwrites the best file."""
    from rlkit.checkpoint import save_checkpoint

    run = tmp_path / "kill"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--total-steps", "1500", "--run-dir", str(run))
    best = run / "checkpoints" / "best.safetensors"
    tensors, meta = load_checkpoint(best)
    meta["counters"]["best_eval"] = 10_000.0  # better than any CartPole evaluation, unknown to last.safetensors
    save_checkpoint(best, tensors, meta)
    train("--resume", str(run), "--total-steps", "3000")
    assert [r["step"] for r in evaluations(run)][-1] == 3000
    assert last_checkpoint(run)[1]["counters"]["best_eval"] == 10_000.0
    assert load_checkpoint(best)[1]["counters"]["global_step"] == meta["counters"]["global_step"]  # not replaced


def test_resume_without_saved_buffer_rewarms(tmp_path, capsys):
    run = tmp_path / "c"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--total-steps", "1500", "--run-dir", str(run))
    assert not (run / "checkpoints" / "replay.safetensors").exists()
    capsys.readouterr()
    train("--resume", str(run), "--total-steps", "2000")
    out = capsys.readouterr().out
    assert "replay buffer was not saved (save_buffer=false): re-warming it for 500 steps" in out
    tensors, meta = last_checkpoint(run)
    counters = meta["counters"]
    assert counters["global_step"] == 2000
    assert counters["learning_starts_at"] == 2000
    # 251 updates before the stop (500, 503, ..., 1499), then one at step 2000 once the buffer is re-warmed
    assert counters["updates"] == 252
    assert adam_steps(tensors, meta) == {252.0}


@contextlib.contextmanager
def _training_process(run: Path, *launcher: str) -> Iterator[subprocess.Popen]:
    """A long CartPole DQN run in a child process (``launcher``: Python's arguments that start the rlkit CLI),
    given once it has started training, and killed on the way out if it still runs."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, *launcher, "train", "dqn", "--env", "CartPole-v1", "--total-steps", "10000000",
               "--set", "torch_threads=1", "--set", "eval_every=0", "--run-dir", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    log = run / "stdout.log"
    try:
        while time.time() < deadline and not (log.is_file() and "dqn on CartPole-v1" in log.read_text()):
            if process.poll() is not None:
                raise AssertionError(process.communicate())
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigint_saves_and_exits_cleanly(tmp_path):
    run = tmp_path / "interrupted"
    with _training_process(run, "-m", "rlkit.cli") as process:
        time.sleep(3)  # let it train for a moment
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "received SIGINT" in out
    assert f"resume with: rlkit train --resume {run}" in out
    _, meta = last_checkpoint(run)
    step = meta["counters"]["global_step"]
    assert 0 < step < 10_000_000
    assert f"stopped at step {step}" in out


def test_a_second_signal_during_the_save_does_not_lose_the_checkpoint(tmp_path, capfd):
    """The first Ctrl-C is announced at the loop's next check, so users press again; only a third one aborts."""
    from rlkit.run import SignalStop

    stopper = SignalStop()
    stopper._on_signal(signal.SIGINT, None)
    assert stopper._stop
    stopper._on_signal(signal.SIGINT, None)  # no KeyboardInterrupt: the save goes on
    assert "a third Ctrl-C aborts without saving" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        stopper._on_signal(signal.SIGTERM, None)
    from rlkit.vision.pretrain import _Quiet

    quiet = _Quiet()  # a data-parallel rank other than 0 says nothing (rank 0 speaks and saves)
    quiet._on_signal(signal.SIGINT, None)
    quiet._on_signal(signal.SIGINT, None)
    assert quiet._stop and capfd.readouterr().err == ""

    run = tmp_path / "twice"
    marker = tmp_path / "saving"
    slow_save = (  # the checkpoint write takes 3 s, so the second SIGINT lands inside it
        "import sys, time, pathlib, rlkit.checkpoint as c\n"
        "write = c._atomic_write\n"
        "def slow(path, fn):\n"
        "    if str(path).endswith('.safetensors'):\n"
        f"        pathlib.Path({str(marker)!r}).touch(); time.sleep(3)\n"
        "    write(path, fn)\n"
        "c._atomic_write = slow\n"
        "from rlkit.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    with _training_process(run, "-c", slow_save) as process:
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        deadline = time.time() + 60
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # during the save
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "a third Ctrl-C aborts without saving" in err and "Traceback" not in err
    _, meta = last_checkpoint(run)
    assert f"stopped at step {meta['counters']['global_step']}" in out


def test_same_seed_same_weights(tmp_path):
    def final_weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        run = tmp_path / name
        train("dqn", "--env", "CartPole-v1", "--total-steps", "1500", "--seed", str(seed), "--set", "eval_episodes=1",
              "--set", "torch_threads=1", "--run-dir", str(run))
        tensors, meta = last_checkpoint(run)
        assert meta["counters"]["updates"] == 256  # classic preset: 128 gradient steps at 1000 and at 1256
        return {k: v for k, v in tensors.items() if k.startswith("q_net.")}

    first, second, other = final_weights("x", 3), final_weights("y", 3), final_weights("z", 4)
    assert first.keys() == second.keys() and len(first) == 6
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_resume_with_saved_buffer_of_another_size_is_a_user_error(tmp_path, capsys):
    run = tmp_path / "sized"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--set", "save_buffer=true", "--total-steps", "600",
          "--run-dir", str(run))
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--total-steps", "800", "--set", "buffer_size=500"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "save_buffer=false" in lines[0]
    # the refused resume left the run's own config: a plain resume (the run's buffer_size) restores its buffer
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["total_steps"] == 600
    assert main(["train", "--resume", str(run), "--total-steps", "700"]) == 0
    assert "restored replay buffer" in capsys.readouterr().out
    # the hint works: without the saved buffer the run resumes and re-warms
    assert main(["train", "--resume", str(run), "--total-steps", "800", "--set", "buffer_size=500",
                 "--set", "save_buffer=false"]) == 0
    _, meta = last_checkpoint(run)
    assert meta["counters"]["global_step"] == 800


def test_a_run_directory_whose_run_never_saved_can_be_used_again(tmp_path, capsys):
    run = tmp_path / "unsaved"
    # refused after the run directory was made (the replay does not fit in memory): nothing was saved
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--set", "buffer_size=100000000000",
                               "--total-steps", "100000000000", "--run-dir", str(run)], "lower it")
    assert (run / "config.yaml").is_file()
    assert_user_error(capsys, ["train", "--resume", str(run)], "start it again with the same command and --run-dir")
    train("dqn", "--env", "CartPole-v1", *SMALL, "--total-steps", "300", "--run-dir", str(run))  # the advice works
    assert last_checkpoint(run)[1]["counters"]["global_step"] == 300
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--run-dir", str(run)], "already holds a run")


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path, capsys):
    from rlkit.run import Run

    run = tmp_path / "busy"
    with Run(run, {"algo": "dqn"}):  # a run that has not saved yet, in this process standing in for another
        assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--total-steps", "300", "--run-dir",
                                   str(run)], "in use by another rlkit process")
    train("dqn", "--env", "CartPole-v1", *SMALL, "--total-steps", "300", "--run-dir", str(run))  # free again


def test_reset_seed_of_a_late_resume_fits_ale_vector_env():
    """A resume at step ~2M once derived seed 15.9e9, which ALE's C++ vector env (32-bit seeds) rejected."""
    from rlkit.agents.base import RESET_SEED_LIMIT
    from rlkit.envs import make_vec_env

    agent = DQN(DQNConfig(device="cpu"), gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
    assert agent.reset_seed() == agent.config.seed
    seeds = set()
    for step in (2_006_632, 10_000_000, 271_000_000, 2**40):
        agent.global_step = step
        seed = agent.reset_seed()
        assert 0 <= seed < RESET_SEED_LIMIT
        seeds.add(seed)
    assert len(seeds) == 4
    agent.global_step = 2_006_632
    envs = make_vec_env("ALE/Pong-v5", num_envs=2, seed=0)
    try:
        obs, _ = envs.reset(seed=agent.reset_seed())
        assert obs.shape[0] == 2
    finally:
        envs.close()


def test_resume_keeps_the_new_optimizer_settings_and_the_saved_moments():
    """A checkpoint's moments and step counts are restored, but eps / weight decay / capturable come from the
    resumed run's config and device: a GPU graph run (capturable Adam) resumes on a CPU, and --set takes effect."""
    space, actions = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)
    batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)), torch.randn(8), torch.randn(8, 4), torch.full((8,), 0.99),
             torch.ones(8))
    saved = DQN(DQNConfig(device="cpu"), space, actions)
    for _ in range(3):
        saved.update(batch)
    tensors, meta = saved.state_dict()
    meta["optimizer"]["param_groups"][0]["capturable"] = True  # as a CUDA-graph run records it
    resumed = DQN(DQNConfig(device="cpu", adam_eps=1e-3, weight_decay=0.1), space, actions)
    resumed.load_state_dict(tensors, meta)
    group = resumed.optimizer.param_groups[0]
    assert (group["eps"], group["weight_decay"], group["capturable"]) == (1e-3, 0.1, False)
    moments = {k: v for k, v in tensors.items() if k.startswith("optim.") and k.endswith(".exp_avg")}
    restored, _ = optimizer_tensors(resumed.optimizer)
    assert moments and all(torch.equal(restored[k], v) for k, v in moments.items())
    assert adam_steps(restored, {"optimizer": {"scalars": {}}}) == {3.0}
    resumed.update(batch)  # capturable=True from the checkpoint would fail here on CPU tensors
    assert adam_steps(optimizer_tensors(resumed.optimizer)[0], {"optimizer": {"scalars": {}}}) == {4.0}


def test_replay_file_of_another_step_is_not_restored(tmp_path, capsys):
    """A replay saved at step 600, then a resume without save_buffer to 1200: the old file must not be
    restored next to the step-1200 checkpoint; the buffer re-warms and says why."""
    run = tmp_path / "stale"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--set", "save_buffer=true", "--total-steps", "600",
          "--run-dir", str(run))
    train("--resume", str(run), "--set", "save_buffer=false", "--total-steps", "1200")
    capsys.readouterr()
    train("--resume", str(run), "--set", "save_buffer=true", "--total-steps", "1300")
    out = capsys.readouterr().out
    assert "replay.safetensors is from step 600, the checkpoint from step 1200" in out
    assert "re-warming" in out and "restored replay buffer" not in out
    tensors, meta = last_checkpoint(run)
    assert meta["counters"]["global_step"] == 1300
    # the file written at 1300 matches its checkpoint and is restored by the next resume
    train("--resume", str(run), "--total-steps", "1400")
    assert "restored replay buffer" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("lr_schedule=linear", "lr=1e-3"),
         "lr_schedule=linear spans total_steps, now 1200 (was 600): the learning rate moves from 0 to 0.0005"),
        (("prioritized=true", "per_beta_start=0.4"),
         "beta anneals to 1 over total_steps, now 1200 (was 600): it moves from 1 to 0.7 at this step"),
    ],
)
def test_extending_a_run_says_how_its_schedules_move(tmp_path, capsys, settings, message):
    run = tmp_path / "extended"
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    train("dqn", "--env", "CartPole-v1", *SMALL, *overrides, "--total-steps", "600", "--run-dir", str(run))
    capsys.readouterr()
    train("--resume", str(run), "--total-steps", "1200")
    assert message in capsys.readouterr().out


def test_extending_a_ppo_run_says_how_its_clip_range_moves(tmp_path, capsys):
    run = tmp_path / "clip"
    train("ppo", "--env", "CartPole-v1", "--set", "anneal_clip=true", "--set", "clip_range=0.2",
          "--set", "rollout_steps=64", "--set", "num_envs=4", "--set", "eval_episodes=1", "--total-steps", "512",
          "--run-dir", str(run))
    capsys.readouterr()
    train("--resume", str(run), "--total-steps", "1024")
    assert "anneal_clip spans total_steps, now 1024 (was 512): the clip range moves from 0 to 0.1" \
        in capsys.readouterr().out


def test_atomic_writes_keep_the_usual_file_permissions(tmp_path):
    """Temp file + rename must not leave results readable by the owner only (mkstemp's 0600)."""
    from rlkit.checkpoint import write_text_atomic

    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "eval.json", "{}")
        assert (tmp_path / "eval.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def test_resume_restores_target_network_rngs_and_prioritized_replay_exactly(tmp_path):
    """What ``rlkit train --resume`` loads is what was saved: the target network (which differs from the online
    one between copies), torch's and the exploration RNG states, the replay RNG, and every replay array
    including the priority tree."""
    from safetensors.numpy import load_file

    run = tmp_path / "per"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--set", "save_buffer=true", "--set", "prioritized=true",
          "--set", "target_update_interval=700", "--total-steps", "1000", "--run-dir", str(run))
    tensors, meta = last_checkpoint(run)
    config = DQNConfig(**{**meta["config"], "device": "cpu"})
    agent = DQN(config, gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
    torch.manual_seed(12345)
    agent.load_state_dict(tensors, meta)
    target = {f"target_net.{k}": v for k, v in agent.target_net.state_dict().items()}
    assert all(torch.equal(v, tensors[k]) for k, v in target.items())
    assert any(not torch.equal(v, tensors["q_net." + k[len("target_net."):]]) for k, v in target.items())
    assert torch.equal(torch.get_rng_state(), tensors["rng.torch"])
    assert agent.rng.bit_generator.state == meta["rng"]["explore"]
    assert agent._replay_rng_state == meta["rng"]["replay"]
    assert agent.restore_buffer(run / "checkpoints")
    buffer = agent.make_buffer(config.num_envs)
    buffer.load_state_file(agent.buffer_file)
    saved = load_file(str(run / "checkpoints" / "replay.safetensors"))
    restored = buffer.state_arrays()
    assert set(restored) == set(saved) and "tree" in saved
    for name, values in restored.items():
        np.testing.assert_array_equal(values, saved[name], err_msg=name)
    assert buffer.tree.total > 0 and len(buffer) > 400


def test_resume_with_a_replay_file_of_another_n_step_is_a_user_error(tmp_path, capsys):
    """n_step + 1 with buffer_size - num_envs keeps every saved array's shape: the recorded n_step catches it."""
    run = tmp_path / "nstep"
    train("dqn", "--env", "CartPole-v1", *SMALL, "--set", "save_buffer=true", "--set", "n_step=1",
          "--set", "buffer_size=1000", "--total-steps", "600", "--run-dir", str(run))
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--total-steps", "800", "--set", "n_step=2",
                 "--set", "buffer_size=999"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "written with n_step=1, this config has n_step=2" in err


def test_binary_checkpoints_keep_the_usual_file_permissions(tmp_path):
    """safetensors replaces the temp file it is given, so the permissions are set after it wrote."""
    from rlkit.checkpoint import save_arrays, save_checkpoint

    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, {"algo": "dqn"})
        save_arrays(tmp_path / "a.safetensors", {"x": np.zeros(3)})
        for name in ("c.safetensors", "a.safetensors"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(umask)
