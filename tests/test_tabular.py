"""Tabular agents against value iteration, plus their TD updates against hand-computed values."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from test_cli import assert_user_error

from rlkit.agents.tabular import ExpectedSarsa, QLearning, Sarsa, TabularConfig, optimal_actions, value_iteration
from rlkit.checkpoint import load_checkpoint
from rlkit.cli import main


def reachable_states(env: gym.Env) -> set[int]:
    """States reachable from the initial distribution under some policy (BFS over the model)."""
    start = np.flatnonzero(env.unwrapped.initial_state_distrib > 0)
    seen, queue = set(start.tolist()), deque(start.tolist())
    while queue:
        s = queue.popleft()
        for outcomes in env.unwrapped.P[s].values():
            for prob, s2, _, done in outcomes:
                if prob > 0 and s2 not in seen and not done:
                    seen.add(s2)
                    queue.append(s2)
    return seen


def test_value_iteration_on_a_two_state_chain():
    # s0 --a1--> s1 (reward 0), s1 --any--> terminal (reward 1); a0 in s0 loops with reward 0.
    P = {
        0: {0: [(1.0, 0, 0.0, False)], 1: [(1.0, 1, 0.0, False)]},
        1: {0: [(1.0, 1, 1.0, True)], 1: [(1.0, 1, 1.0, True)]},
    }
    q = value_iteration(P, 2, 2, gamma=0.9)
    np.testing.assert_allclose(q, [[0.81, 0.9], [1.0, 1.0]], atol=1e-8)
    assert optimal_actions(q) == [{1}, {0, 1}]


def _agent(cls, **overrides):
    config = TabularConfig(env_id="FrozenLake-v1", **overrides)
    return cls(config, gym.spaces.Discrete(3), gym.spaces.Discrete(2))


def test_td_updates_hand_computed():
    # Q(s'=1) = [1.0, 3.0]; reward 0.5, gamma 0.9, lr 0.5 constant, epsilon 0.2 for expected SARSA.
    for cls, next_value in ((QLearning, 3.0), (Sarsa, 1.0), (ExpectedSarsa, 0.1 * 1.0 + 0.9 * 3.0)):
        agent = _agent(cls, gamma=0.9, lr=0.5, lr_schedule="constant")
        agent.q[1] = [1.0, 3.0]
        td = agent.update(0, 1, 0.5, 1, 0, terminated=False, exploration=0.2)
        assert td == pytest.approx(0.5 + 0.9 * next_value)
        assert agent.q[0, 1] == pytest.approx(0.5 * (0.5 + 0.9 * next_value))
        td = agent.update(0, 0, 0.5, 1, 0, terminated=True, exploration=0.2)  # no bootstrap at a termination
        assert td == pytest.approx(0.5)


def test_visit_count_step_size():
    agent = _agent(QLearning, lr=1.0, lr_schedule="visits", lr_power=0.6)
    for n in (1, 2, 10):
        agent.visits[0, 0] = n
        assert agent.step_size(0, 0) == pytest.approx(n**-0.6)


def test_softmax_and_epsilon_policies():
    agent = _agent(QLearning)
    agent.q[0] = [1.0, 1.0]
    np.testing.assert_allclose(agent.policy_probs(np.array([0]), 0.2)[0], [0.5, 0.5])  # ties share greedy mass
    agent.q[0] = [0.0, 2.0]
    np.testing.assert_allclose(agent.policy_probs(np.array([0]), 0.2)[0], [0.1, 0.9])
    agent.config.exploration = "softmax"
    expected = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()
    np.testing.assert_allclose(agent.policy_probs(np.array([0]), 1.0)[0], expected)


# Q-learning is off-policy: it learns Q* on every state-action its behaviour keeps visiting. Deterministic
# envs use step size 1 (each backup exact) with optimistic initial values (FrozenLake's returns are <= 1,
# CliffWalking's <= 0) and epsilon 0.3, which drive the agent to every reachable state; Taxi and slippery
# FrozenLake use a uniformly random behaviour policy, the latter with 1/n(s,a)**0.6 step sizes.
# (env id, env kwargs, step budget, overrides): the documented budgets within which the greedy policy is optimal.
OPTIMISTIC = ["lr_schedule=constant", "lr=1.0", "exploration_start=0.3", "exploration_end=0.3"]
RANDOM = ["exploration_start=1.0", "exploration_end=1.0"]
CASES = [
    ("FrozenLake-v1", {"is_slippery": False}, 20_000, [*OPTIMISTIC, "initial_q=1.0"]),
    ("FrozenLake-v1", {"map_name": "8x8", "is_slippery": False}, 50_000, [*OPTIMISTIC, "initial_q=1.0"]),
    ("CliffWalking-v1", {}, 50_000, OPTIMISTIC),
    ("Taxi-v4", {}, 300_000, [*RANDOM, "lr_schedule=constant", "lr=1.0"]),
    ("FrozenLake-v1", {"is_slippery": True}, 500_000, RANDOM),
]


@pytest.mark.parametrize(
    "env_id,env_kwargs,steps,overrides",
    [pytest.param(*case, marks=pytest.mark.slow) if case[2] > 100_000 else case for case in CASES],
)
def test_q_learning_greedy_policy_is_optimal(tmp_path, env_id, env_kwargs, steps, overrides):
    run = tmp_path / "run"
    args = ["train", "q_learning", "--env", env_id, "--total-steps", str(steps), "--run-dir", str(run),
            "--set", "eval_every=0", "--set", "eval_episodes=10"]
    for item in overrides:
        args += ["--set", item]
    for key, value in env_kwargs.items():
        args += ["--set", f"env_kwargs.{key}={str(value).lower() if isinstance(value, bool) else value}"]
    assert main(args) == 0
    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    q = tensors["q"].numpy()
    env = gym.make(env_id, **env_kwargs)
    n_states, n_actions = env.observation_space.n, env.action_space.n
    q_star = value_iteration(env.unwrapped.P, n_states, n_actions, gamma=meta["config"]["gamma"])
    best = optimal_actions(q_star)
    checked = [s for s in sorted(reachable_states(env)) if len(best[s]) == 1]
    wrong = [s for s in checked if int(q[s].argmax()) not in best[s]]
    assert len(checked) > 0
    assert wrong == [], f"{len(wrong)} of {len(checked)} states differ from value iteration: {wrong[:10]}"
    # the values too, not only the greedy actions: V(s) = max_a Q(s, a) against V*(s) on the reachable states
    # (exact backups on the deterministic envs at step size 1; slippery FrozenLake averages noisy samples)
    states = sorted(reachable_states(env))
    tolerance = 0.05 if env_kwargs.get("is_slippery", True) and env_id.startswith("FrozenLake") else 1e-6
    np.testing.assert_allclose(q[states].max(1), q_star[states].max(1), atol=tolerance)


def test_expected_sarsa_learns_the_epsilon_greedy_optimum_not_q_star(tmp_path):
    """On-policy with a fixed epsilon: on CliffWalking, Expected SARSA's greedy policy matches value iteration for
    epsilon-greedy policies (the safe path away from the cliff) on every reachable state with one best action,
    and it differs from Q*'s greedy policy (the path along the cliff) on some of them."""
    epsilon = 0.2
    run = tmp_path / "run"
    assert main(["train", "expected_sarsa", "--env", "CliffWalking-v1", "--total-steps", "40000", "--run-dir",
                 str(run), "--set", "eval_every=0", "--set", "eval_episodes=1", "--set", "lr_schedule=constant",
                 "--set", "lr=1.0", "--set", f"exploration_start={epsilon}", "--set", f"exploration_end={epsilon}",
                 "--set", "gamma=0.95"]) == 0
    q = load_checkpoint(run / "checkpoints" / "last.safetensors")[0]["q"].numpy()
    env = gym.make("CliffWalking-v1")
    P, n_states, n_actions = env.unwrapped.P, env.observation_space.n, env.action_space.n
    q_soft = value_iteration(P, n_states, n_actions, gamma=0.95, epsilon=epsilon)
    best_soft, best_star = optimal_actions(q_soft), optimal_actions(value_iteration(P, n_states, n_actions, gamma=0.95))
    ranked = np.sort(q_soft, axis=1)
    # states whose best action leads the next by > 0.1 (a near-tie, e.g. 0.014 in state 17, needs far more steps)
    checked = [s for s in sorted(reachable_states(env)) if ranked[s, -1] - ranked[s, -2] > 0.1]
    wrong = [s for s in checked if int(q[s].argmax()) not in best_soft[s]]
    assert len(checked) > 30 and wrong == [], f"{len(wrong)} of {len(checked)} states differ: {wrong[:10]}"
    assert sum(not (best_soft[s] & best_star[s]) for s in checked) > 10  # the two references differ (cliff rows)


@pytest.mark.slow
def test_sarsa_learns_the_epsilon_greedy_optimum(tmp_path):
    """SARSA (on-policy, sampled next action) converges to the same epsilon-greedy optimum as Expected SARSA, more
    slowly: the sampled next action adds variance, so it takes a visit-count step size (lr / n^0.51) and 400k
    steps to get every reachable CliffWalking state with a clear best action (lead > 0.1) right."""
    epsilon = 0.2
    run = tmp_path / "run"
    assert main(["train", "sarsa", "--env", "CliffWalking-v1", "--total-steps", "400000", "--run-dir", str(run),
                 "--set", "eval_every=0", "--set", "eval_episodes=1", "--set", "lr_schedule=visits", "--set", "lr=1.0",
                 "--set", "lr_power=0.51", "--set", f"exploration_start={epsilon}",
                 "--set", f"exploration_end={epsilon}", "--set", "gamma=0.95"]) == 0
    q = load_checkpoint(run / "checkpoints" / "last.safetensors")[0]["q"].numpy()
    env = gym.make("CliffWalking-v1")
    q_soft = value_iteration(env.unwrapped.P, env.observation_space.n, env.action_space.n, gamma=0.95,
                             epsilon=epsilon)
    best_soft, ranked = optimal_actions(q_soft), np.sort(q_soft, axis=1)
    checked = [s for s in sorted(reachable_states(env)) if ranked[s, -1] - ranked[s, -2] > 0.1]
    wrong = [s for s in checked if int(q[s].argmax()) not in best_soft[s]]
    assert len(checked) > 30 and wrong == [], f"{len(wrong)} of {len(checked)} states differ: {wrong[:10]}"


def test_tabular_rejects_box_observations(capsys):
    assert_user_error(capsys, ["train", "q_learning", "--env", "CartPole-v1", "--total-steps", "10"],
                      "Discrete observations", "dqn")


def test_tabular_eval_and_resume(tmp_path, capsys):
    run = tmp_path / "fl"
    assert main(["train", "sarsa", "--env", "FrozenLake-v1", "--total-steps", "3000", "--run-dir", str(run),
                 "--set", "eval_every=0", "--set", "eval_episodes=5"]) == 0
    assert main(["train", "--resume", str(run), "--total-steps", "5000"]) == 0
    _, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["counters"]["global_step"] == 5000 and meta["algo"] == "sarsa"
    assert main(["eval", str(run), "--episodes", "3"]) == 0
