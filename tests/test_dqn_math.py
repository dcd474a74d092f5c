"""DQN arithmetic against hand-computed values: TD targets, n-step returns, prioritized replay, losses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.agents.dqn import DQN, DQNConfig, td_targets
from rlkit.agents.replay import FrameReplayBuffer, SumTree

GAMMA = 0.9


# ---- TD targets ------------------------------------------------------------------------------------------


def _target_inputs():
    returns = torch.tensor([1.0, 0.5, 2.0])
    discounts = torch.tensor([0.9, 0.81, 0.0])
    next_q_target = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 4.0], [10.0, 20.0, 30.0]])
    # The online net prefers different actions than the target net in every row.
    next_q_online = torch.tensor([[0.0, 1.0, 9.0], [7.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    return returns, discounts, next_q_target, next_q_online


def test_double_dqn_targets_use_online_argmax_and_target_values():
    returns, discounts, next_q_target, next_q_online = _target_inputs()
    targets = td_targets(returns, discounts, next_q_target, next_q_online)
    # online argmax = [2, 0, 0] -> target values [2, 3, 10]
    expected = torch.tensor([1.0 + 0.9 * 2.0, 0.5 + 0.81 * 3.0, 2.0 + 0.0 * 10.0])
    torch.testing.assert_close(targets, expected)


def test_vanilla_dqn_targets_use_target_max():
    returns, discounts, next_q_target, _ = _target_inputs()
    targets = td_targets(returns, discounts, next_q_target, None)
    # target argmax = [1, 2, 2] -> values [5, 4, 30]
    expected = torch.tensor([1.0 + 0.9 * 5.0, 0.5 + 0.81 * 4.0, 2.0])
    torch.testing.assert_close(targets, expected)


# ---- n-step returns ---------------------------------------------------------------------------------------


def reward_of(v: float) -> float:
    """Reward of the transition whose observation holds ``v`` (distinct per transition)."""
    return v + 1.0


def _drive(buffer: FrameReplayBuffer, episodes: list[tuple[list[int], str]]) -> None:
    """Feed one stream: episodes of observation values, each ending in 'terminated', 'truncated' or 'running'.

    Steps follow next-step autoreset: after an episode ends, one reset step (no transition, reward 999)
    delivers the next episode's first observation.
    """
    first = episodes[0][0][0]
    buffer.start(np.array([[float(first)]], dtype=np.float32))
    for number, (values, end) in enumerate(episodes):
        if number > 0:
            buffer.add(
                np.array([3]), np.array([999.0]), np.array([False]), np.array([False]),
                np.array([[float(values[0])]], dtype=np.float32), reset_step=np.array([True]),
            )
        for i, (v, nxt) in enumerate(zip(values, values[1:])):
            last = i == len(values) - 2
            buffer.add(
                np.array([int(v) % 2]),
                np.array([reward_of(v)]),
                np.array([last and end == "terminated"]),
                np.array([last and end == "truncated"]),
                np.array([[float(nxt)]], dtype=np.float32),
                reset_step=np.array([False]),
            )


EPISODES = [
    (list(range(0, 6)), "terminated"),  # transitions 0..4; 4 -> 5 terminates
    (list(range(10, 18)), "truncated"),  # transitions 10..16; 16 -> 17 is truncated
    (list(range(20, 28)), "running"),  # transitions 20..26 recorded; only 20..24 have complete windows
]

# (obs value) -> (n-step return, bootstrap discount, bootstrap observation value), n=3, gamma=0.9, r(v)=v+1
EXPECTED = {
    0: (1 + 0.9 * 2 + 0.81 * 3, 0.729, 3),
    1: (2 + 0.9 * 3 + 0.81 * 4, 0.729, 4),
    2: (3 + 0.9 * 4 + 0.81 * 5, 0.0, 5),  # the window's last step terminates: three rewards, no bootstrap
    3: (4 + 0.9 * 5, 0.0, 5),  # termination inside the window: truncated return, no bootstrap
    4: (5.0, 0.0, 5),
    10: (11 + 0.9 * 12 + 0.81 * 13, 0.729, 13),
    13: (14 + 0.9 * 15 + 0.81 * 16, 0.729, 16),
    14: (15 + 0.9 * 16 + 0.81 * 17, 0.729, 17),  # truncation at the window's last step
    15: (16 + 0.9 * 17, 0.81, 17),  # truncation inside the window: bootstrap from the final obs 17
    16: (17.0, 0.9, 17),
    20: (21 + 0.9 * 22 + 0.81 * 23, 0.729, 23),  # full window
    24: (25 + 0.9 * 26 + 0.81 * 27, 0.729, 27),
}


def _reference(values: list[int], end: str) -> dict[int, tuple[float, float, int]]:
    """Independent straightforward n-step computation for a whole episode."""
    out = {}
    transitions = len(values) - 1
    for i in range(transitions):
        k = min(3, transitions - i)
        ret = sum(GAMMA**j * reward_of(values[i + j]) for j in range(k))
        ends_in_window = i + k == transitions and end != "running"
        if end == "running" and i + 3 > transitions:
            continue  # window not complete yet: not sampleable
        discount = 0.0 if (ends_in_window and end == "terminated") else GAMMA**k
        out[values[i]] = (ret, discount, values[i + k])
    return out


def _all_expected() -> dict[int, tuple[float, float, int]]:
    table: dict[int, tuple[float, float, int]] = {}
    for values, end in EPISODES:
        table.update(_reference(values, end))
    # the generic reference agrees with the hand-written rows
    for v, row in EXPECTED.items():
        assert table[v] == pytest.approx(row), v
    return table


@pytest.mark.parametrize("prioritized", [False, True])
def test_n_step_returns_discounts_and_bootstrap_observations(prioritized):
    buffer = FrameReplayBuffer(
        100, 1, (1,), np.float32, stacked=False, n_step=3, gamma=GAMMA, prioritized=prioritized, seed=3
    )
    _drive(buffer, EPISODES)
    table = _all_expected()
    seen = set()
    for _ in range(20):
        batch = buffer.sample(64)
        obs = batch.observations.numpy()[:, 0]
        for j, v in enumerate(obs):
            v = int(v)
            assert v in table, f"sampled a non-transition observation {v}"
            ret, discount, boot = table[v]
            assert batch.returns[j].item() == pytest.approx(ret, rel=1e-6)
            assert batch.discounts[j].item() == pytest.approx(discount, rel=1e-6)
            assert batch.next_observations[j, 0].item() == boot
            assert batch.actions[j].item() == v % 2
            seen.add(v)
    # every complete transition is sampled; terminal obs (5, 17), reset steps and incomplete windows never
    assert seen == set(table)
    assert 999.0 not in buffer.rewards[0, buffer.valid[0]]


def test_n_step_one_matches_one_step_td():
    buffer = FrameReplayBuffer(100, 1, (1,), np.float32, stacked=False, n_step=1, gamma=GAMMA, seed=0)
    _drive(buffer, EPISODES)
    batch = buffer.sample(256)
    for v, ret, disc, nxt in zip(
        batch.observations[:, 0].tolist(), batch.returns.tolist(), batch.discounts.tolist(),
        batch.next_observations[:, 0].tolist(),
    ):
        assert ret == pytest.approx(v + 1.0)
        assert nxt == v + 1
        assert disc == pytest.approx(0.0 if v == 4 else GAMMA)


# ---- prioritized replay -----------------------------------------------------------------------------------


def test_sum_tree_total_find_update_against_cumsum():
    rng = np.random.default_rng(0)
    size = 13
    tree = SumTree(size)
    values = rng.uniform(0.1, 5.0, size)
    tree.update(np.arange(size), values)
    for _ in range(3):
        assert tree.total == pytest.approx(values.sum())
        np.testing.assert_allclose(tree.get(np.arange(size)), values)
        cumsum = np.cumsum(values)
        prefix = rng.uniform(0, values.sum(), 500)
        prefix = np.concatenate([prefix, cumsum[:-1] + 1e-9, [0.0]])
        expected = np.searchsorted(cumsum, prefix, side="right")
        np.testing.assert_array_equal(tree.find(prefix), expected)
        # change a few leaves, one of them to zero: it can no longer be found
        changed = rng.choice(size, 4, replace=False)
        values[changed] = rng.uniform(0.1, 5.0, 4)
        values[changed[0]] = 0.0
        tree.update(changed, values[changed])
    found = tree.find(rng.uniform(0, values.sum(), 2000))
    assert changed[0] not in found


def test_sum_tree_counts_positive_leaves_as_it_goes():
    rng = np.random.default_rng(1)
    tree, values = SumTree(50), np.zeros(50)
    for _ in range(200):  # repeated indices: the last value wins, as in a numpy assignment
        indices = rng.integers(0, 50, 8)
        new = np.where(rng.random(8) < 0.4, 0.0, rng.uniform(0.1, 2.0, 8))
        tree.update(indices, new)
        values[indices] = new
        assert tree.positive == int((values > 0).sum())
        np.testing.assert_allclose(tree.get(np.arange(50)), values)
        assert tree.total == pytest.approx(values.sum())
    copy = SumTree(50)
    copy.load(tree.tree)
    assert copy.positive == tree.positive and copy.total == tree.total


def test_sum_tree_empty_update_is_a_no_op():
    tree = SumTree(6)
    tree.update(np.arange(6), np.arange(1.0, 7.0))
    tree.update(np.array([], dtype=np.int64), np.array([]))
    assert tree.total == pytest.approx(21.0)


def _per_buffer(alpha=0.6):
    """One stream, observations 0..8, transition v (obs v -> v+1, reward v) at slot v (= leaf v)."""
    buffer = FrameReplayBuffer(64, 1, (1,), np.float32, stacked=False, n_step=1, gamma=GAMMA,
                               prioritized=True, alpha=alpha, seed=5)
    buffer.start(np.zeros((1, 1), np.float32))
    for v in range(8):
        buffer.add(np.array([0]), np.array([float(v)]), np.array([False]), np.array([False]),
                   np.full((1, 1), v + 1.0, np.float32))
    return buffer


def test_new_transitions_enter_with_max_priority():
    buffer = _per_buffer()
    np.testing.assert_allclose(buffer.tree.get(np.arange(8)), np.ones(8))
    assert buffer.tree.get(np.array([8]))[0] == 0.0  # the newest observation is no transition yet
    assert buffer.tree.total == pytest.approx(8.0)


def test_update_priorities_and_importance_weights():
    alpha, beta, eps = 0.6, 0.4, 1e-6
    buffer = _per_buffer(alpha)
    td = np.array([0.5, -1.0, 2.0, 0.0, 3.0, -0.25, 1.5, 4.0])
    buffer.update_priorities(np.arange(8), td, eps)
    priorities = np.array([(abs(t) + eps) ** alpha for t in td])
    np.testing.assert_allclose(buffer.tree.get(np.arange(8)), priorities)
    assert buffer.max_priority == pytest.approx(4.000001**0.6)
    # a leaf that holds no transition is not brought back by a late priority update, and its TD error does
    # not raise the priority new transitions enter with
    buffer.update_priorities(np.array([8]), np.array([10.0]), eps)
    assert buffer.tree.get(np.array([8]))[0] == 0.0
    assert buffer.max_priority == pytest.approx(4.000001**0.6)

    probabilities = priorities / priorities.sum()
    counts = np.zeros(8)
    for _ in range(100):
        batch = buffer.sample(64, beta=beta)
        leaves = batch.indices
        # leaf v holds the transition whose observation is v
        np.testing.assert_array_equal(batch.observations[:, 0].numpy().astype(int), leaves)
        raw = (8 * probabilities[leaves]) ** (-beta)
        np.testing.assert_allclose(batch.weights.numpy(), raw / raw.max(), rtol=1e-5)
        np.add.at(counts, leaves, 1)
    np.testing.assert_allclose(counts / counts.sum(), probabilities, atol=0.01)


def test_overwritten_transitions_leave_the_priority_tree():
    # capacity 6 in one stream with n_step=2: only transitions whose frames are still stored and whose
    # 2-step window is complete may carry priority.
    buffer = FrameReplayBuffer(6, 1, (1,), np.float32, stacked=False, n_step=2, gamma=GAMMA,
                               prioritized=True, seed=0)
    buffer.start(np.zeros((1, 1), np.float32))
    for v in range(40):
        buffer.add(np.array([0]), np.array([1.0]), np.array([False]), np.array([False]),
                   np.full((1, 1), v + 1.0, np.float32))
        head = int(buffer.head[0])
        live = {u % buffer.slots for u in range(max(head - buffer.slots + 1, 0), head - 2 + 1)}
        positive = set(np.flatnonzero(buffer.tree.tree[buffer.tree.leaves:] > 0).tolist())
        assert positive == live
    batch = buffer.sample(128)
    obs = batch.observations[:, 0].numpy()
    assert obs.min() >= 40 - buffer.slots + 1 and obs.max() <= 38
    np.testing.assert_allclose(batch.next_observations[:, 0].numpy(), obs + 2)
    np.testing.assert_allclose(batch.returns.numpy(), 1.0 + GAMMA)


# ---- loss choice ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_td_loss_choice(loss):
    obs_space = gym.spaces.Box(-10.0, 10.0, (4,), np.float32)
    config = DQNConfig(loss=loss, batch_size=8, device="cpu", max_grad_norm=0.0, lr=0.0, seed=1)
    agent = DQN(config, obs_space, gym.spaces.Discrete(2))
    buffer = FrameReplayBuffer(16, 1, (4,), np.float32, stacked=False, n_step=1, gamma=0.99)
    o = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    buffer.start(o)
    for _ in range(5):  # identical terminal transitions: the TD target is exactly the reward, 100
        buffer.add(np.array([1]), np.array([100.0]), np.array([True]), np.array([False]), o)
    with torch.no_grad():
        q = agent.q_net(torch.as_tensor(o))[0, 1].item()
    stats = agent.train_step(buffer)
    error = abs(q - 100.0)
    expected = error - 0.5 if loss == "huber" else 0.5 * error**2
    assert stats["td_loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["q_values"] == pytest.approx(q, rel=1e-5)
    assert agent.updates == 1


@pytest.mark.parametrize("double_dqn", [True, False])
def test_loss_terms_match_separate_forward_passes(double_dqn):
    """Double DQN preprocesses s' once for both networks: the targets, Q values and loss must equal those of
    plain forward passes of each network on the raw uint8 frames."""
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    config = DQNConfig(encoder="nature_cnn_small", dueling=True, double_dqn=double_dqn, device="cpu", seed=3)
    agent = DQN(config, obs_space, gym.spaces.Discrete(6))
    with torch.no_grad():  # make the target network differ from the online one
        for p in agent.target_net.parameters():
            p.mul_(0.9)
    gen = torch.Generator().manual_seed(0)
    obs, next_obs = (torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8, generator=gen) for _ in range(2))
    actions = torch.tensor([0, 5, 2, 3, 1])
    returns, discounts, weights = torch.randn(5, generator=gen), torch.full((5,), 0.97), torch.rand(5, generator=gen)
    with torch.no_grad():
        loss, q, td_error = agent.loss_terms(obs, actions, returns, next_obs, discounts, weights)
        next_q_target = agent.target_net(next_obs)
        expected_targets = td_targets(returns, discounts, next_q_target, agent.q_net(next_obs) if double_dqn else None)
        expected_q = agent.q_net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    assert torch.equal(q, expected_q)
    assert torch.equal(td_error, q - expected_targets)
    per_sample = torch.nn.functional.smooth_l1_loss(expected_q, expected_targets, reduction="none")
    assert torch.equal(loss, (weights * per_sample).mean())


def test_soft_target_update_averages_weights_and_takes_the_online_buffers():
    """Polyak averaging covers parameters; BatchNorm running statistics are buffers the eval-mode target never
    updates itself, so it must take the online network's (they were left at their initial values)."""
    obs_space = gym.spaces.Box(0, 255, (4, 20, 20), np.uint8)
    config = DQNConfig(encoder="resnet18", encoder_kwargs={"norm": "batch", "widths": [4, 8], "blocks": [1, 1]},
                       tau=0.5, device="cpu", seed=0)
    agent = DQN(config, obs_space, gym.spaces.Discrete(3))
    target_before = {k: v.clone() for k, v in agent.target_net.state_dict().items()}
    agent.q_net.train()
    with torch.no_grad():
        agent.q_net(torch.randint(0, 256, (8, 4, 20, 20), dtype=torch.uint8))  # moves the running statistics
        for p in agent.q_net.parameters():
            p.add_(1.0)
    agent.update_target()
    online = agent.q_net.state_dict()
    buffers = {name for name, _ in agent.q_net.named_buffers()}
    assert any("running_mean" in name for name in buffers)
    for name, value in agent.target_net.state_dict().items():
        if name in buffers:
            assert torch.equal(value, online[name]), name
        else:
            torch.testing.assert_close(value, target_before[name].lerp(online[name], 0.5))
