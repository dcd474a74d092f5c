"""Evaluation tools: statistics against hand-checked values, video files, eval.json, groups, SB3 models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import yaml
from test_cli import assert_user_error

from rlkit.cli import main
from rlkit.stats import human_normalized, iqm, stratified_bootstrap_ci, summarize


def test_iqm_hand_checked():
    # sorted: 1 2 3 4 5 6 10 100 -> drop two from each end -> mean(3, 4, 5, 6) = 4.5
    assert iqm([10, 1, 2, 3, 100, 4, 5, 6]) == pytest.approx(4.5)
    # n=5: floor(5/4)=1 dropped from each end -> mean(2, 3, 40) = 15
    assert iqm([1, 2, 3, 40, 500]) == pytest.approx(15.0)
    assert iqm([7.0]) == 7.0


def test_summary_table_values():
    s = summarize([1, 2, 3, 4], [10, 20, 30, 40])
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["iqm"] == 2.5
    assert s["min"] == 1 and s["max"] == 4 and s["mean_length"] == 25
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4]))


def test_human_normalized_reference_scores():
    assert human_normalized("ALE/Pong-v5", 14.6) == pytest.approx(1.0)
    assert human_normalized("ALE/Pong-v5", -20.7) == pytest.approx(0.0)
    assert human_normalized("ALE/Breakout-v5", 30.5) == pytest.approx(1.0)
    assert human_normalized("CartPole-v1", 500) is None


def test_stratified_bootstrap_resamples_within_tasks():
    # Task A always scores 0 and task B always 1: resampling within tasks keeps the mean at exactly 0.5,
    # while resampling across the pooled scores would not.
    scores = np.array([[0.0, 1.0]] * 5)
    point, low, high = stratified_bootstrap_ci(scores, np.mean, reps=500)
    assert point == low == high == 0.5


def test_bootstrap_ci_matches_normal_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, 400)
    point, low, high = stratified_bootstrap_ci([x], np.mean, reps=4000, seed=2)
    half_width = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert low < x.mean() < high


@pytest.fixture(scope="module")
def trained_cartpole(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "cp"
    code = main(
        ["train", "dqn", "--env", "CartPole-v1", "--total-steps", "2000", "--run-dir", str(run),
         "--set", "torch_threads=1", "--set", "eval_episodes=2", "--set", "learning_starts=500"]
    )
    assert code == 0
    return run


def test_eval_json_schema_and_video_frames(trained_cartpole, capsys):
    out_dir = trained_cartpole / "eval-test"
    code = main(["eval", str(trained_cartpole), "--episodes", "3", "--video", "--video-episodes", "2",
                 "--seed", "5", "--out", str(out_dir)])
    assert code == 0
    record = json.loads((out_dir / "eval.json").read_text())
    for key in ("env_id", "algo", "checkpoint", "step", "seed", "epsilon", "episodes", "mean", "std", "median",
                "iqm", "min", "max", "mean_length", "returns", "lengths", "config"):
        assert key in record, key
    assert record["episodes"] == 3 and len(record["returns"]) == 3 and len(record["lengths"]) == 3
    assert record["mean"] == pytest.approx(np.mean(record["returns"]))
    videos = sorted(out_dir.glob("*.mp4"))
    assert [v.name.split("__")[-1] for v in videos] == ["ep0.mp4", "ep1.mp4"]
    for video in videos:
        reader = imageio.get_reader(str(video))
        meta = reader.get_meta_data()
        assert meta["codec"] == "h264" and "yuv420p" in meta["pix_fmt"]
        frames = [frame for frame in reader]
        assert frames[0].ndim == 3 and frames[0].shape[2] == 3
        assert len(frames) >= 2
    # Playing the same seed again reproduces the first video's length: episode length + 1 frames.
    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.checkpoint import load_checkpoint
    from rlkit.config import build_config
    from rlkit.envs import make_vec_env

    tensors, meta = load_checkpoint(trained_cartpole / "checkpoints" / "best.safetensors")
    config = build_config(DQNConfig, meta["config"])
    env = make_vec_env("CartPole-v1", 1, mode="eval")
    agent = DQN(config, env.single_observation_space, env.single_action_space)
    agent.load_state_dict(tensors, meta)
    obs, _ = env.reset(seed=5)
    length = 0
    while True:
        obs, _, terminated, truncated, _ = env.step(agent.act(obs))
        length += 1
        if terminated[0] or truncated[0]:
            break
    env.close()
    assert len([f for f in imageio.get_reader(str(videos[0]))]) == length + 1


def test_eval_of_a_checkpoint_outside_a_run_writes_beside_it(trained_cartpole, tmp_path):
    import shutil

    models = tmp_path / "a" / "models"
    models.mkdir(parents=True)
    shutil.copy(trained_cartpole / "checkpoints" / "last.safetensors", models / "cartpole.safetensors")
    assert main(["eval", str(models / "cartpole.safetensors"), "--episodes", "1"]) == 0
    assert (models / "cartpole_eval" / "eval.json").is_file()
    assert not (tmp_path / "a" / "eval").exists()  # not in the grandparent, as if it were a run
    backup = tmp_path / "backup" / "checkpoints"  # named like a run's folder, but no run around it
    backup.mkdir(parents=True)
    shutil.copy(models / "cartpole.safetensors", backup / "cartpole.safetensors")
    assert main(["eval", str(backup / "cartpole.safetensors"), "--episodes", "1"]) == 0
    assert (backup / "cartpole_eval" / "eval.json").is_file() and not (tmp_path / "backup" / "eval").exists()


def test_videos_are_never_overwritten(trained_cartpole):
    out_dir = trained_cartpole / "eval-twice"
    for _ in range(2):
        assert main(["eval", str(trained_cartpole), "--episodes", "1", "--video", "--out", str(out_dir)]) == 0
    assert len(list(out_dir.glob("*.mp4"))) == 2


def test_gif_option(trained_cartpole):
    out_dir = trained_cartpole / "eval-gif"
    assert main(["eval", str(trained_cartpole), "--episodes", "1", "--video", "--gif", "--out", str(out_dir)]) == 0
    (gif,) = out_dir.glob("*.gif")
    assert len(imageio.mimread(str(gif))) >= 2


def test_eval_bad_input(capsys, trained_cartpole, tmp_path):
    assert_user_error(capsys, ["eval", str(trained_cartpole), "--episodes", "0"], "--episodes")
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    assert_user_error(capsys, ["eval", str(tmp_path / "empty-run")], "no checkpoint")
    assert_user_error(capsys, ["eval", str(trained_cartpole), "--env", "Acrobot-v1"], "CartPole-v1", "Acrobot-v1")
    assert_user_error(capsys, ["eval", str(trained_cartpole), "--checkpoint", "12345"], "step_000012345")


def test_two_seeds_make_two_runs_and_one_comparison(tmp_path, capsys):
    group = tmp_path / "group"
    code = main(["train", "dqn", "--env", "CartPole-v1", "--seeds", "0,1", "--workers", "2", "--total-steps", "1000",
                 "--run-dir", str(group), "--set", "eval_episodes=2", "--set", "learning_starts=300"])
    assert code == 0
    # Two processes at once share the cores instead of each taking all of them.
    command = yaml.safe_load((group / "group.yaml").read_text())["command"]
    assert f"torch_threads={max(1, (os.cpu_count() or 1) // 2)}" in command
    runs = sorted(p.name for p in group.iterdir() if (p / "config.yaml").is_file())
    assert runs == ["seed_0", "seed_1"]
    capsys.readouterr()
    assert main(["compare", str(group)]) == 0
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith(str(group)[-40:])]
    assert len(row) == 1 and row[0].split()[1] == "2"
    assert main(["plot", str(group), "-o", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_bad_seeds(capsys):
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--seeds", "0,x"], "--seeds")
    assert_user_error(capsys, ["train", "dqn", "--env", "CartPole-v1", "--seeds", "1,1"], "distinct")


@pytest.mark.parametrize("algo", ["DQN", "PPO"])
def test_sb3_models_act_like_sb3(tmp_path, algo):
    import gymnasium as gym
    import stable_baselines3 as sb3

    import rlkit.envs  # noqa: F401  (registers rlkit/FakeImage-v0)
    from rlkit.sb3 import SB3Agent

    for env_id, policy in (("CartPole-v1", "MlpPolicy"), ("rlkit/FakeImage-v0", "CnnPolicy")):
        kwargs = {"buffer_size": 100} if algo == "DQN" else {"n_steps": 64, "batch_size": 64}
        model = getattr(sb3, algo)(policy, gym.make(env_id), seed=0, **kwargs)
        path = tmp_path / f"{algo}-{policy}.zip"
        model.save(path)
        agent = SB3Agent(path)
        obs = np.stack([model.observation_space.sample() for _ in range(32)])
        expected, _ = model.predict(obs, deterministic=True)
        np.testing.assert_array_equal(agent.act(obs), expected)


def test_sb3_eval_cli_and_bad_input(tmp_path, capsys):
    import gymnasium as gym
    from stable_baselines3 import PPO, SAC

    path = tmp_path / "ppo.zip"
    PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64).save(path)
    assert main(["eval", "--sb3", str(path), "--env", "CartPole-v1", "--episodes", "2"]) == 0
    assert json.loads((tmp_path / "ppo_eval" / "eval.json").read_text())["algo"] == "sb3-ppo"
    capsys.readouterr()
    sac = tmp_path / "sac.zip"
    SAC("MlpPolicy", gym.make("Pendulum-v1"), buffer_size=100).save(sac)
    assert_user_error(capsys, ["eval", "--sb3", str(sac), "--env", "Pendulum-v1"], "sac", "supports DQN, PPO")
    assert_user_error(capsys, ["eval", "--sb3", str(path)], "--env")
    assert_user_error(capsys, ["eval", "--sb3", str(path), "--env", "Acrobot-v1"], "expects observations")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert_user_error(capsys, ["eval", "--sb3", str(tmp_path / "junk.zip"), "--env", "CartPole-v1"], "not a readable")


def test_group_training_runs_as_separate_processes_module_entry():
    # `python -m rlkit.cli` is the entry each seed's process uses.
    out = subprocess.run([sys.executable, "-m", "rlkit.cli", "presets"], capture_output=True, text=True, check=True)
    assert "atari-cpu" in out.stdout


def _pong_dqn(seed: int = 0):
    import gymnasium as gym

    from rlkit.agents.dqn import DQN, DQNConfig

    config = DQNConfig(env_id="ALE/Pong-v5", encoder="nature_cnn_small", device="cpu", seed=seed)
    return DQN(config, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))


def test_concurrent_per_game_atari_evaluation_plays_the_same_episodes(monkeypatch):
    import torch

    import rlkit.evaluation as evaluation

    calls = []
    play_games = evaluation._play_games
    monkeypatch.setattr(evaluation, "_play_games", lambda *args: calls.append(len(args[3])) or play_games(*args))
    agent = _pong_dqn()
    threads, interval = torch.get_num_threads(), sys.getswitchinterval()
    # 5 episodes on 3 games: games 0 and 1 play two episodes each (the second after ALE's next-step reset).
    concurrent = evaluation.evaluate(evaluation.AgentActor(agent), "ALE/Pong-v5", 5, seed=7, num_envs=3, workers=2)
    assert sorted(calls) == [1, 2]  # two groups of games, each in its own thread
    assert (torch.get_num_threads(), sys.getswitchinterval()) == (threads, interval)  # restored
    one_vector_env = evaluation.evaluate(
        evaluation.AgentActor(agent), "ALE/Pong-v5", 5, seed=7, num_envs=3, workers=1
    )
    assert len(calls) == 2  # one vector env, no per-game path
    assert concurrent.returns == one_vector_env.returns
    assert concurrent.lengths == one_vector_env.lengths
    assert len(set(concurrent.lengths)) > 1 and all(length > 100 for length in concurrent.lengths)


class _NoopAgent:
    """Never presses FIRE itself (as a greedy agent trained with the env pressing FIRE after a lost life), or,
    with epsilon, acts uniformly at random from the generator it is given (or its own)."""

    recurrent = False

    def __init__(self, actions: int = 4) -> None:
        self.rng = np.random.default_rng(0)
        self.actions = actions
        self.calls: list[dict] = []

    def act(self, obs, deterministic=True, epsilon=None, rng=None):
        self.calls.append({"deterministic": deterministic, "epsilon": epsilon})
        rng = rng or self.rng
        explore = rng.random(len(obs)) < (epsilon or 0.0)
        return np.where(explore, rng.integers(0, self.actions, len(obs)), 0)


def test_per_game_atari_evaluation_presses_fire_after_a_lost_life_as_one_vector_env_does():
    from rlkit.evaluation import AgentActor, evaluate

    capped = {"max_episode_frames": 4000}  # 1,000 agent steps: a stalled game ends there
    per_game = evaluate(AgentActor(_NoopAgent()), "ALE/Breakout-v5", 2, seed=5, num_envs=2, workers=2,
                        env_kwargs=capped)
    one_vector_env = evaluate(AgentActor(_NoopAgent()), "ALE/Breakout-v5", 2, seed=5, num_envs=2, workers=1,
                              env_kwargs=capped)
    assert per_game.lengths == one_vector_env.lengths and per_game.returns == one_vector_env.returns
    # game 1 loses its 5 lives in 118 steps because the env serves each new ball; game 0's first serve
    # stalls (sticky actions at the reset's FIRE), so it runs into the cap on both paths
    assert per_game.lengths == [1000, 118]


def test_atari_evaluation_and_video_fold_the_largest_seed():
    from types import SimpleNamespace

    from rlkit.evaluation import AgentActor, evaluate
    from rlkit.video import play_episode

    seed, capped = 2**31 - 1, {"max_episode_frames": 2000}
    per_game = evaluate(AgentActor(_NoopAgent()), "ALE/Pong-v5", 2, seed=seed, num_envs=2, workers=2,
                        env_kwargs=capped)
    one_vector_env = evaluate(AgentActor(_NoopAgent()), "ALE/Pong-v5", 2, seed=seed, num_envs=2, workers=1,
                              env_kwargs=capped)
    assert per_game.lengths == one_vector_env.lengths and per_game.returns == one_vector_env.returns
    config = SimpleNamespace(env_id="ALE/Pong-v5", env_kwargs=capped)
    assert len(play_episode(lambda obs: np.zeros(len(obs), np.int64), config, seed=seed)) == 501


def test_atari_video_plays_the_fire_the_env_presses_after_a_lost_life():
    from types import SimpleNamespace

    from rlkit.video import play_episode

    # Breakout seed 6 with a policy that never fires: the env serves each ball after a lost life; the colour
    # twin must play that FIRE too (it used to play the agent's NOOP, diverge and raise)
    config = SimpleNamespace(env_id="ALE/Breakout-v5", env_kwargs={})
    assert len(play_episode(lambda obs: np.zeros(len(obs), np.int64), config, seed=6, max_steps=3000)) == 119


def test_random_atari_evaluation_does_not_depend_on_the_core_count(monkeypatch):
    import rlkit.evaluation as evaluation

    results = []
    for cores in (1, 2, 4):
        monkeypatch.setattr(evaluation.os, "cpu_count", lambda cores=cores: cores)
        result = evaluation.evaluate(evaluation.AgentActor(_NoopAgent(), epsilon=1.0), "ALE/Pong-v5", 4, seed=3,
                                     num_envs=4, env_kwargs={"max_episode_frames": 2000})
        results.append((result.returns, result.lengths))
    assert results[0] == results[1] == results[2]
    assert len(set(results[0][0])) > 1  # the games' random play differs


def test_video_plays_the_evaluated_policy(tmp_path):
    from types import SimpleNamespace

    from rlkit.video import record_video

    config = SimpleNamespace(env_id="CartPole-v1", env_kwargs={})
    agent = _NoopAgent(actions=2)
    record_video(agent, config, tmp_path, seed=0, epsilon=0.3, deterministic=False, episodes=2)
    assert agent.calls and {(c["deterministic"], c["epsilon"]) for c in agent.calls} == {(False, 0.3)}
    lengths = []
    for earlier_draws in (0, 1000):  # the agent's own stream moved by what it played before
        agent = _NoopAgent(actions=2)
        agent.rng.random(earlier_draws)
        record_video(agent, config, tmp_path, seed=0, epsilon=0.5, deterministic=False, episodes=1)
        lengths.append(len(agent.calls))
    assert lengths[0] == lengths[1]  # the episode's exploration is seeded by the episode


def test_agent_actor_split_keeps_results_independent_of_threads():
    import gymnasium as gym

    from rlkit.agents.policy_gradient import PPO, PPOConfig
    from rlkit.agents.recurrent_ppo import RecurrentPPO, RecurrentPPOConfig
    from rlkit.evaluation import AgentActor

    obs = np.zeros((16, 4, 84, 84), np.uint8)
    draws = []
    for _ in range(2):  # two identically seeded agents split the same way draw the same exploration
        actors = AgentActor(_pong_dqn(seed=3), epsilon=0.5).split(2)
        draws.append([actor(obs, None) for actor in actors])
    assert [a.act_kwargs["rng"] is b.act_kwargs["rng"] for a, b in zip(actors, actors[1:])] == [False]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0][0], draws[0][1])  # each group its own generator
    box = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    ppo = PPO(PPOConfig(env_id="CartPole-v1", device="cpu"), box, gym.spaces.Discrete(2))
    assert AgentActor(ppo, deterministic=False).split(2) is None  # samples with torch's global generator
    assert len(AgentActor(ppo, deterministic=True).split(2)) == 2
    recurrent = RecurrentPPO(
        RecurrentPPOConfig(env_id="rlkit/MaskedCartPole-v0", device="cpu", lstm_hidden=8),
        gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), gym.spaces.Discrete(2),
    )
    assert AgentActor(recurrent).split(2) is None  # one state for every env


class _RecordingPolicy:
    """A deterministic CartPole policy (push towards the pole's lean) that records its batch sizes."""

    def __init__(self, stateful: bool) -> None:
        self.stateful, self.batches = stateful, []

    def __call__(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        self.batches.append(len(obs))
        return (obs[:, 2] + 0.3 * obs[:, 3] > 0).astype(np.int64)


def test_finished_envs_leave_the_forward_batch_without_changing_scores():
    from rlkit.evaluation import evaluate

    trimmed, full = _RecordingPolicy(stateful=False), _RecordingPolicy(stateful=True)
    a = evaluate(trimmed, "CartPole-v1", 5, seed=4, num_envs=3)
    b = evaluate(full, "CartPole-v1", 5, seed=4, num_envs=3)
    assert sorted(zip(a.returns, a.lengths)) == sorted(zip(b.returns, b.lengths))
    assert len(a.returns) == 5
    assert set(full.batches) == {3}  # a stateful policy always sees every env
    assert min(trimmed.batches) < 3 and len(trimmed.batches) == len(full.batches)
    assert sum(trimmed.batches) < sum(full.batches)


def _fake_run(path, env_id: str, evals: list[dict]) -> None:
    """A run directory with a config and evaluation records (what `rlkit train` writes), for result readers."""
    import yaml

    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"algo": "ppo", "config": {"env_id": env_id}}))
    (path / "eval" / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))


def test_compare_and_plot_any_evaluation_metric(tmp_path, capsys):
    from rlkit.results import compare_table

    group = tmp_path / "group"
    for seed, final in enumerate((0.5, 0.75, 1.0)):
        _fake_run(group / f"seed_{seed}", "rlkit/NavigationRGB-v0",
                  [{"step": 10, "mean": -5.0, "success": 0.0, "spl": 0.0},
                   {"step": 20, "mean": 10.0 + seed, "success": final, "spl": final - 0.25}])
    success = compare_table([str(group)], reps=200, metric="success")[0]
    assert success["runs"] == 3 and success["mean"][0] == pytest.approx(0.75)
    assert not success["human_normalized"]
    assert compare_table([str(group)], reps=200, metric="spl")[0]["mean"][0] == pytest.approx(0.5)
    assert compare_table([str(group)], reps=200)[0]["mean"][0] == pytest.approx(11.0)  # default: mean return
    capsys.readouterr()
    assert main(["compare", str(group), "--metric", "success"]) == 0
    assert "final evaluation success" in capsys.readouterr().out
    assert main(["plot", str(group), str(group), "--metric", "spl", "-o", str(tmp_path / "spl.png")]) == 0
    assert (tmp_path / "spl.png").stat().st_size > 1000
    assert_user_error(capsys, ["compare", str(group), "--metric", "laps"], "'laps'", "success")


@pytest.mark.parametrize("pipeline", ["nature", "pong_pixels"])
def test_atari_video_plays_the_agents_game(pipeline):
    """The colour frames come from a second env that must play the agent's game step for step (same no-op start,
    same sticky actions, same rewards); with the in-process backend for the agent's env it did not (the video
    raised "diverged" or showed another game). Several seeds, a few hundred steps each."""
    from types import SimpleNamespace

    from rlkit.video import play_episode

    config = SimpleNamespace(env_id="ALE/Pong-v5", env_kwargs={"pipeline": pipeline})
    rng = np.random.default_rng(0)
    n_actions = 2 if pipeline == "pong_pixels" else 6
    for seed in (3_000_017, 0, 1, 2):
        frames = play_episode(lambda obs: rng.integers(0, n_actions, len(obs)), config, seed=seed, max_steps=150)
        assert len(frames) == 151 and frames[0].shape == (210, 160, 3)


def test_sb3_policy_gradient_sampling_and_atari_eval(tmp_path):
    """SB3 PPO sampled under --stochastic follows the policy's probabilities; an SB3 model on Atari is evaluated
    over parallel game groups, whose actors pass their own generators (``rng=``; it used to be a TypeError)."""
    import gymnasium as gym
    import stable_baselines3 as sb3
    import torch

    from rlkit.sb3 import SB3Agent

    model = sb3.PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64, seed=0)
    path = tmp_path / "ppo.zip"
    model.save(path)
    agent = SB3Agent(path)
    obs = np.repeat(np.array([[0.1, 0.5, -0.2, 0.3]], np.float32), 20_000, axis=0)
    sampled = agent.act(obs, deterministic=False, rng=np.random.default_rng(0))
    with torch.no_grad():
        probs = model.policy.get_distribution(torch.as_tensor(obs[:1])).distribution.probs[0].numpy()
    np.testing.assert_allclose(np.bincount(sampled, minlength=2) / len(sampled), probs, atol=0.015)

    class PongShaped(gym.Env):  # an env with Pong's spaces, only to build an SB3 CNN model for them
        observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        action_space = gym.spaces.Discrete(6)

    dqn = sb3.DQN("CnnPolicy", PongShaped(), buffer_size=100, seed=0)
    dqn.save(tmp_path / "dqn.zip")
    out = tmp_path / "pong_eval"
    assert main(["eval", "--sb3", str(tmp_path / "dqn.zip"), "--env", "ALE/Pong-v5", "--episodes", "2",
                 "--out", str(out)]) == 0
    record = json.loads((out / "eval.json").read_text())
    assert record["algo"] == "sb3-dqn" and len(record["returns"]) == 2


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_stopping_a_seed_group_stops_and_saves_every_seed(tmp_path, how):
    """Ctrl-C at the terminal (SIGINT to the whole process group) or SIGTERM to the group's process: every seed
    gets exactly one SIGINT, saves its checkpoint and exits 0, and so does the group (SIGTERM used to kill only
    the parent and leave the seeds training; Ctrl-C gave each seed a second SIGINT that could abort its save)."""
    import signal
    import time

    group = tmp_path / "group"
    command = [sys.executable, "-m", "rlkit.cli", "train", "dqn", "--env", "CartPole-v1", "--seeds", "0,1",
               "--workers", "2", "--total-steps", "10000000", "--run-dir", str(group), "--set", "eval_every=0",
               "--set", "learning_starts=100"]
    # SIGINT back to its default: a test runner started in the background (nohup, `&`) ignores SIGINT, children
    # inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        logs = [group / "seed_0" / "stdout.log", group / "seed_1" / "stdout.log"]
        while not all(log.is_file() and "dqn on CartPole-v1" in log.read_text() for log in logs):
            assert time.time() < deadline and proc.poll() is None, "the seeds did not start training"
            time.sleep(0.5)
        time.sleep(2)  # a little training
        if how == "ctrl_c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:  # whatever is left of a failing run: the group and its seeds (each in a session of its own)
        for pid in [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]:
            try:
                if str(group).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
    assert proc.returncode == 0, out
    assert "each seed saved its checkpoint" in out
    for seed in (0, 1):
        log = (group / f"seed_{seed}" / "stdout.log").read_text()
        assert log.count("received SIGINT") == 1 and "Traceback" not in log, log
        assert (group / f"seed_{seed}" / "checkpoints" / "last.safetensors").is_file()


def test_a_stop_request_cuts_an_evaluation_short():
    """``should_stop`` ends an evaluation within a step (vector env) or 0.2 s (Atari game groups), so a SIGTERM
    during a long evaluation still leaves the run time to save before a grace period ends."""
    import time

    import gymnasium as gym

    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.evaluation import AgentActor, EvaluationStopped, evaluate

    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(EvaluationStopped):
        evaluate(lambda obs, start: np.zeros(len(obs), np.int64), "CartPole-v1", 4, seed=0,
                 should_stop=stop_after_five)
    assert calls["n"] == 6
    agent = DQN(DQNConfig(env_id="ALE/Pong-v5", encoder="nature_cnn_small", device="cpu", buffer_size=10),
                gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))
    started = time.time()
    with pytest.raises(EvaluationStopped):  # 4 full Pong games would take far longer than this
        evaluate(AgentActor(agent), "ALE/Pong-v5", 4, seed=0, num_envs=4, workers=2,
                 should_stop=lambda: time.time() - started > 1.0)
    assert time.time() - started < 10


def test_read_scalars_keeps_episodes_that_end_on_one_step_and_prefers_a_resumed_file(tmp_path):
    """Vector envs end several episodes on one step: each is a point of the training curve. A resumed run's
    events file replaces an earlier file's points from its own first step on."""
    import time

    from torch.utils.tensorboard import SummaryWriter

    from rlkit.plotting import read_scalars

    first = SummaryWriter(str(tmp_path))
    for step, value in ((8, 1.0), (8, 2.0), (16, 3.0), (24, 4.0), (24, 5.0)):
        first.add_scalar("charts/episodic_return", value, step)
    first.close()
    time.sleep(1.1)  # events files are named by the second they were opened
    resumed = SummaryWriter(str(tmp_path))
    for step, value in ((20, 30.0), (28, 40.0)):
        resumed.add_scalar("charts/episodic_return", value, step)
    resumed.close()
    steps, values = read_scalars(tmp_path, "charts/episodic_return")
    assert steps.tolist() == [8, 8, 16, 20, 28] and values.tolist() == [1.0, 2.0, 3.0, 30.0, 40.0]


def test_periodic_triggers_do_not_fall_behind_long_ticks(tmp_path, monkeypatch):
    """A tick that advances past several multiples of eval_every (a PPO rollout longer than it) evaluates once,
    and the next evaluation is at the next multiple: not on every later tick, as when the schedule lagged."""
    from types import SimpleNamespace

    from rlkit.loop import LoopMonitor

    config = SimpleNamespace(total_steps=100_000, log_every=1000, eval_every=1000, video_every=0, checkpoint_every=0,
                             stop_at_return=None)
    agent = SimpleNamespace(config=config, global_step=0, best_eval=-float("inf"), episodes=0)
    progress = SimpleNamespace(update=lambda *a: None, close=lambda: None)
    run = SimpleNamespace(progress=lambda total, initial: progress, print=lambda *a: None, stop_requested=False,
                          log_scalars=lambda *a: None, checkpoint_dir=tmp_path)
    evaluated: list[int] = []
    monkeypatch.setattr("rlkit.loop.evaluate_during_training", lambda a, r: evaluated.append(a.global_step) or 0.0)
    monitor = LoopMonitor(agent, run)
    for step in (2500, 5000, 5200, 5400, 6100):
        agent.global_step = step
        monitor.tick({})
    assert evaluated == [2500, 5000, 6100]
