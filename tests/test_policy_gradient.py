"""Policy-gradient pieces against hand-computed values and torch.distributions; learning checks (slow)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_cli import assert_user_error

from rlkit.agents.policy_gradient import PPO, ActorCritic, PPOConfig, gae, ppo_losses, tanh_log_det
from rlkit.cli import main


def test_gae_hand_computed_with_termination_and_truncation():
    # One env, 4 steps, gamma 0.9, lambda 0.5. Step 1 terminates; step 3 is truncated.
    # values[t] = V(obs_t); values[2] is the reset step's obs (masked in training; not used below t=2's cut).
    rewards = np.array([[1.0], [2.0], [0.0], [3.0]])
    values = np.array([[0.5], [1.0], [9.0], [2.0]])
    next_value = np.array([4.0])  # V(final obs of the truncated episode)
    terminated = np.array([[0.0], [1.0], [0.0], [0.0]])
    ended = np.array([[0.0], [1.0], [0.0], [1.0]])
    adv, ret = gae(rewards, values, next_value, terminated, ended, gamma=0.9, lam=0.5)
    d3 = 3.0 + 0.9 * 4.0 - 2.0  # truncation: bootstrap from the final observation's value
    d2 = 0.0 + 0.9 * 2.0 - 9.0
    d1 = 2.0 - 1.0  # termination: no bootstrap
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    # step 2 starts a new episode and is followed by step 3 of it; step 0's recursion stops at step 1's end.
    expected = [d0 + 0.45 * d1, d1, d2 + 0.45 * d3, d3]
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], np.array(expected) + values[:, 0], rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[0.2], [0.3], [0.4]])
    zeros = np.zeros((3, 1))
    adv, ret = gae(rewards, values, np.array([0.0]), zeros, zeros, gamma=0.5, lam=1.0)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 + 0.25, 1 + 0.5, 1.0], rtol=1e-6)


def test_ppo_clipped_objective_hand_built():
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # ratios 1.5, 0.5, 1.1, 0.7 with clip 0.2: terms max(-A r, -A clip(r)):
    # A=+1, r=1.5 -> max(-1.5, -1.2) = -1.2; A=+1, r=0.5 -> max(-0.5, -0.8) = -0.5
    # A=-1, r=1.1 -> max(1.1, 1.1) = 1.1;    A=-1, r=0.7 -> max(0.7, 0.8) = 0.8
    values, old_values, returns = torch.tensor([2.0, 0.0, 1.0, 1.0]), torch.ones(4), torch.tensor([3.0, 0.0, 1.0, 1.0])
    pg, v = ppo_losses(new, old, adv, values, old_values, returns, clip=0.2, clip_value=True)
    assert float(pg) == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4)
    # value clipping: V=2 (old 1) -> clipped 1.2: max((2-3)^2, (1.2-3)^2) = 3.24; V=0 -> clipped 0.8: max(0, .64)
    assert float(v) == pytest.approx(0.5 * (3.24 + 0.64 + 0 + 0) / 4)
    pg0, v0 = ppo_losses(new, old, adv, values, old_values, returns, clip=0.0, clip_value=True)
    assert float(pg0) == pytest.approx(float(-(adv * new).mean()))
    assert float(v0) == pytest.approx(0.5 * (1 + 0 + 0 + 0) / 4)


def _policy(action_space, squash=False):
    config = PPOConfig(env_id="Pendulum-v1", squash=squash, log_std_init=-0.3)
    torch.manual_seed(0)
    return ActorCritic(config, gym.spaces.Box(-1, 1, (3,), np.float32), action_space)


def test_gaussian_log_prob_and_entropy_match_torch():
    net = _policy(gym.spaces.Box(-2, 2, (2,), np.float32))
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    logp, entropy = net.log_prob_entropy(obs, actions)
    mean = net.policy_head(net.actor_encoder(obs))
    ref = torch.distributions.Independent(torch.distributions.Normal(mean, net.log_std.exp()), 1)
    torch.testing.assert_close(logp, ref.log_prob(actions))
    torch.testing.assert_close(entropy, ref.entropy())


def test_tanh_squashed_log_prob_matches_torch_transformed_distribution():
    net = _policy(gym.spaces.Box(-1, 1, (2,), np.float32), squash=True)
    obs, u = torch.randn(5, 3), torch.randn(5, 2) * 2
    logp, _ = net.log_prob_entropy(obs, u)
    mean = net.policy_head(net.actor_encoder(obs))
    base = torch.distributions.Normal(mean, net.log_std.exp())
    squashed = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform(cache_size=1)])
    torch.testing.assert_close(logp, squashed.log_prob(torch.tanh(u)).sum(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tanh_log_det(u), torch.log(1 - torch.tanh(u) ** 2).sum(-1), rtol=1e-4, atol=1e-4)


def test_categorical_log_prob_and_entropy_match_torch():
    net = _policy(gym.spaces.Discrete(4))
    obs, actions = torch.randn(6, 3), torch.randint(0, 4, (6,))
    logp, entropy = net.log_prob_entropy(obs, actions)
    ref = torch.distributions.Categorical(logits=net.policy_head(net.actor_encoder(obs)))
    torch.testing.assert_close(logp, ref.log_prob(actions))
    torch.testing.assert_close(entropy, ref.entropy())


def test_rollout_sampling_matches_torch_distributions():
    """``sample_with_value`` (the rollout's one-pass sampler) against torch.distributions: same log-probs, same
    values, the same draws as ``Categorical.sample`` from the same RNG state, and frequencies near the probs."""
    net = _policy(gym.spaces.Discrete(4))
    obs = torch.randn(6, 3)
    torch.manual_seed(7)
    raw, logp, value = net.sample_with_value(obs)
    dist, ref_value = net.distribution_and_value(obs)
    torch.testing.assert_close(logp, dist.log_prob(raw))
    torch.testing.assert_close(value, ref_value)
    torch.manual_seed(7)
    assert torch.equal(raw, dist.sample())
    many = torch.stack([net.sample_with_value(obs[:1])[0] for _ in range(4000)]).flatten()
    frequencies = torch.bincount(many, minlength=4).float() / len(many)
    torch.testing.assert_close(frequencies, dist.probs[0].detach(), atol=0.03, rtol=0)
    for squash in (False, True):  # Gaussian, with and without tanh: log-prob of the drawn action as in training
        net = _policy(gym.spaces.Box(-1, 1, (2,), np.float32), squash=squash)
        raw, logp, value = net.sample_with_value(obs)
        torch.testing.assert_close(logp, net.log_prob_entropy(obs, raw)[0])
        torch.testing.assert_close(value, net.value(obs))
        base = torch.distributions.Normal(net.policy_head(net.actor_encoder(obs)), net.log_std.exp())
        if squash:  # against torch's own tanh-transformed distribution, at the squashed action
            tanh = torch.distributions.TanhTransform(cache_size=1)
            reference = torch.distributions.TransformedDistribution(base, [tanh]).log_prob(torch.tanh(raw)).sum(-1)
        else:
            reference = torch.distributions.Independent(base, 1).log_prob(raw)
        torch.testing.assert_close(logp, reference, rtol=1e-4, atol=1e-4)


def test_actor_critic_initialises_convolutions_orthogonally():
    """Every conv and linear layer gets orthogonal weights with gain sqrt(2) and zero biases, as in CleanRL and
    SB3 (policy head 0.01, value head 1); PyTorch's default conv init would leave the features 13x smaller."""
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    net = ActorCritic(PPOConfig(encoder="nature_cnn"), space, gym.spaces.Discrete(6))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3
    layers = [(m, 2.0) for m in net.actor_encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    layers += [(net.policy_head, 0.01**2), (net.value_head, 1.0)]
    for module, gain_squared in layers:
        rows = module.weight.detach().reshape(module.weight.shape[0], -1)
        small = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
        torch.testing.assert_close(small, gain_squared * torch.eye(small.shape[0]), atol=1e-4, rtol=1e-4)
        assert not module.bias.any()
    features = net.actor_encoder(torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8))
    assert features.pow(2).mean().sqrt() > 0.2


def test_squashed_actions_map_into_bounds():
    config = PPOConfig(env_id="Pendulum-v1", squash=True)
    agent = PPO(config, gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-2, 2, (1,), np.float32))
    mapped = agent.to_env_action(np.array([[-50.0], [0.0], [50.0]]))
    np.testing.assert_allclose(mapped[:, 0], [-2.0, 0.0, 2.0], atol=1e-6)


def test_bad_spaces(capsys):
    assert_user_error(capsys, ["train", "ppo", "--env", "FrozenLake-v1", "--total-steps", "10"],
                      "Discrete", "q_learning")
    assert_user_error(capsys, ["train", "dqn", "--env", "Pendulum-v1", "--total-steps", "10"], "Discrete action")


def test_ppo_resume_and_eval(tmp_path):
    run = tmp_path / "ppo"
    common = ["--set", "torch_threads=1", "--set", "eval_episodes=2", "--set", "eval_every=0"]
    assert main(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "1024", "--run-dir", str(run), *common]) == 0
    assert main(["train", "--resume", str(run), "--total-steps", "2048"]) == 0
    assert main(["eval", str(run), "--episodes", "2", "--stochastic", "--checkpoint", "last"]) == 0
    record = json.loads((run / "eval" / "eval.json").read_text())
    assert record["algo"] == "ppo" and record["step"] == 2048
    assert record["deterministic"] is False  # --stochastic samples from the policy (epsilon means nothing to PPO)


def _best_eval(run) -> float:
    lines = (run / "eval" / "evaluations.jsonl").read_text().splitlines()
    return max(json.loads(line)["mean"] for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo,env,preset,steps,threshold",
    [
        ("ppo", "CartPole-v1", "classic", 100_000, 475),
        ("a2c", "CartPole-v1", "classic", 500_000, 400),
        ("ppo", "Pendulum-v1", "continuous", 200_000, -250),
    ],
)
def test_policy_gradient_learns(tmp_path, algo, env, preset, steps, threshold):
    run = tmp_path / "run"
    assert main(["train", algo, "--env", env, "--preset", preset, "--total-steps", str(steps), "--run-dir", str(run),
                 "--set", "torch_threads=1"]) == 0
    assert _best_eval(run) >= threshold


def test_discounted_returns_hand_computed():
    from rlkit.agents.reinforce import discounted_returns

    np.testing.assert_allclose(discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1 + 0 + 0.5, 1.0, 2.0])
    # Pong: the return restarts at every point scored (nonzero reward).
    np.testing.assert_allclose(
        discounted_returns(np.array([0.0, -1.0, 0.0, 1.0]), 0.5, restart_on_reward=True), [-0.5, -1.0, 0.5, 1.0]
    )


def test_reinforce_smoke_and_resume(tmp_path):
    run = tmp_path / "rf"
    common = ["--set", "torch_threads=1", "--set", "eval_episodes=2", "--set", "eval_every=0"]
    assert main(["train", "reinforce", "--env", "CartPole-v1", "--total-steps", "2000", "--run-dir", str(run),
                 *common]) == 0
    assert main(["train", "--resume", str(run), "--total-steps", "3000"]) == 0
    assert main(["eval", str(run), "--episodes", "2", "--checkpoint", "last"]) == 0


def test_pong_pixels_pipeline_difference_frames():
    from rlkit.envs import make_vec_env

    envs = make_vec_env("ALE/Pong-v5", 2, seed=0, mode="train", env_kwargs={"pipeline": "pong_pixels"})
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 6400) and obs.dtype == np.int8
    assert set(np.unique(obs)) <= {0, 1}  # the first observation is a frame minus zeros
    assert envs.single_action_space == gym.spaces.Discrete(2)
    moving = 0
    for _ in range(100):
        obs, *_ = envs.step(np.array([0, 1]))
        assert set(np.unique(obs)) <= {-1, 0, 1}
        moving += int((obs != 0).any())
    envs.close()
    assert moving > 50  # paddles and ball move: difference frames are mostly non-empty


def test_ppo_minibatches_split_the_kept_steps_into_equal_parts(monkeypatch):
    """Reset steps are dropped before the split, so the kept count rarely divides by ``minibatches``: each epoch
    still takes exactly ``minibatches`` updates of near-equal size (not a fifth one of 3 transitions)."""
    config = PPOConfig(env_id="CartPole-v1", num_envs=4, rollout_steps=128, minibatches=4, epochs=2)
    agent = PPO(config, gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    sizes: list[int] = []
    def record(new_logp, *rest) -> None:  # the real step's statistics too, so the epoch summary has values
        sizes.append(len(new_logp))
        for values in rest[-1].values():
            values.append(0.0)

    monkeypatch.setattr(agent, "minibatch_step", record)
    T, N = 128, 4
    rng = np.random.default_rng(0)
    valid = np.ones((T, N), np.float32)
    valid[37, 2] = 0.0  # one reset step: 511 kept transitions
    zeros = np.zeros((T, N), np.float32)
    agent.optimise(rng.normal(size=(T, N, 4)).astype(np.float32), rng.integers(0, 2, (T, N)), zeros, zeros,
                   rng.normal(size=(T, N)).astype(np.float32), zeros, valid)
    assert sizes == [128, 128, 128, 127] * 2


def test_stochastic_evaluations_do_not_change_the_training_run(tmp_path):
    """With eval_deterministic=false the evaluations sample from the policy: they use their own torch generator,
    so how often a run evaluates does not change what it learns (same seed, same weights)."""
    from rlkit.checkpoint import load_checkpoint

    weights = []
    for every in (0, 256):
        run = tmp_path / f"every{every}"
        assert main(["train", "ppo", "--env", "CartPole-v1", "--total-steps", "1024", "--run-dir", str(run),
                     "--set", "torch_threads=1", "--set", "eval_episodes=2", "--set", f"eval_every={every}",
                     "--set", "eval_deterministic=false", "--set", "num_envs=2", "--set", "rollout_steps=64"]) == 0
        weights.append(load_checkpoint(run / "checkpoints" / "last.safetensors")[0])
    assert (tmp_path / "every256" / "eval" / "evaluations.jsonl").read_text().count("\n") >= 3
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_tanh_squashed_entropy_estimate_has_the_true_entropy_gradient():
    """The squashed policy's entropy H[tanh(u)] = H[u] + E[log(1 - tanh(u)^2)]: the per-sample estimate averages
    to it, and its gradient with respect to log-std matches a finite difference of it (a -log_prob estimate at
    the policy's own actions has zero expected gradient, so an entropy bonus did nothing)."""
    net = _policy(gym.spaces.Box(-1, 1, (2,), np.float32), squash=True)
    obs = torch.randn(1, 3).expand(100_000, 3)
    torch.manual_seed(3)
    dist = net.distribution(obs)
    _, entropy = net.dist_log_prob_entropy(dist, dist.sample())
    entropy.mean().backward()
    mean, log_std = dist.mean[0].detach(), net.log_std.detach()
    noise = torch.randn(400_000, 2, dtype=torch.float64)

    def true_entropy(log_std: torch.Tensor) -> torch.Tensor:  # per dimension, common random numbers
        u = mean.double() + log_std.double().exp() * noise
        gaussian = 0.5 * np.log(2 * np.pi * np.e) + log_std.double()
        return gaussian + torch.log1p(-torch.tanh(u) ** 2).mean(0)

    assert float(entropy.mean().detach()) == pytest.approx(float(true_entropy(log_std).sum()), abs=0.02)
    h = 1e-3
    numeric = (true_entropy(log_std + h) - true_entropy(log_std - h)) / (2 * h)
    torch.testing.assert_close(net.log_std.grad.double(), numeric, atol=0.03, rtol=0)
    assert (numeric.abs() > 0.2).all()  # far from the zero an estimate without a gradient path would give


def test_reinforce_bootstraps_truncated_episodes_from_the_final_value():
    """A time-limit cut is not the end of the task: with the learned baseline the return of a truncated episode
    continues with gamma^k V(final observation); a terminated episode's tail is 0."""
    from rlkit.agents.reinforce import Reinforce, ReinforceConfig

    agent = Reinforce(ReinforceConfig(env_id="CartPole-v1", gamma=0.5), gym.spaces.Box(-1, 1, (4,), np.float32),
                      gym.spaces.Discrete(2))
    head = agent.value_net[-1]
    with torch.no_grad():  # V(s) = 2 everywhere
        head.weight.zero_()
        head.bias.fill_(2.0)
    obs = np.zeros((2, 4), np.float32)
    ended = {"obs": obs, "actions": np.zeros(2, np.int64), "rewards": np.array([1.0, 1.0], np.float32)}
    cut = {**ended, "final_obs": np.ones(4, np.float32)}
    returns = agent.episode_returns([ended, cut])
    np.testing.assert_allclose(returns, [1 + 0.5 * 1, 1, 1 + 0.5 * (1 + 0.5 * 2), 1 + 0.5 * 2])
    no_baseline = Reinforce(ReinforceConfig(env_id="CartPole-v1", gamma=0.5, baseline="none"),
                            gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    np.testing.assert_allclose(no_baseline.episode_returns([cut]), [1.5, 1.0])
