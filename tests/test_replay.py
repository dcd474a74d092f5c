"""The frame-deduplicating replay buffer against naive (obs, action, reward, next_obs, done) storage."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlkit.agents.replay import FrameReplayBuffer
from rlkit.envs import make_vec_env
from rlkit.envs.fake import FakeImageEnv


def drive(envs: gym.vector.VectorEnv, buffer: FrameReplayBuffer, steps: int, seed: int = 0) -> dict:
    """Step ``envs`` with random actions, writing to ``buffer`` exactly as ``DQN.learn`` does, and keep a naive
    copy of every transition keyed by (env, absolute slot of its observation's newest frame)."""
    num_envs = envs.num_envs
    stack = buffer.stack
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    buffer.start(obs)
    # Independent bookkeeping of the stream layout: starting an episode writes `stack` frames, a step one.
    slot = np.full(num_envs, stack - 1)
    naive: dict[tuple[int, int], tuple] = {}
    reset_next = np.zeros(num_envs, dtype=bool)
    for _ in range(steps):
        actions = rng.integers(0, envs.single_action_space.n, num_envs)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        buffer.add(actions, rewards, terminated, truncated, next_obs, reset_step=reset_next)
        for i in range(num_envs):
            if reset_next[i]:
                slot[i] += stack
            else:
                naive[(i, int(slot[i]))] = (
                    obs[i].copy(), int(actions[i]), float(rewards[i]), next_obs[i].copy(),
                    bool(terminated[i]), bool(terminated[i] or truncated[i]),
                )
                slot[i] += 1
        np.testing.assert_array_equal(buffer.head, slot)
        reset_next = terminated | truncated
        obs = next_obs
    return naive


def check_against_naive(buffer: FrameReplayBuffer, naive: dict) -> int:
    """Every naive transition whose frames are still stored must be reproduced exactly; return their count."""
    checked = 0
    for env in range(buffer.num_envs):
        head = int(buffer.head[env])
        oldest = max(head - buffer.slots + buffer.stack, 0)
        stored = {u for (e, u) in naive if e == env and u >= oldest}
        valid = {u for u in range(oldest, head + 1) if buffer.valid[env, u % buffer.slots]}
        assert valid == stored, "valid slots must be exactly the stored transitions"
        for u in sorted(stored):
            obs, action, reward, next_obs, terminated, done = naive[(env, u)]
            s = u % buffer.slots
            np.testing.assert_array_equal(buffer.observation(env, u), obs)
            np.testing.assert_array_equal(buffer.observation(env, u + 1), next_obs)
            assert buffer.actions[env, s] == action
            assert buffer.rewards[env, s] == np.float32(reward)
            assert buffer.terminated[env, s] == terminated
            assert buffer.episode_end[env, s] == done
            checked += 1
    return checked


def check_samples(buffer: FrameReplayBuffer, naive: dict, gamma: float) -> None:
    """n_step=1 samples: (obs, next_obs) pairs, actions, returns and discounts of real transitions."""
    pairs = {}
    for obs, action, reward, next_obs, terminated, _ in naive.values():
        pairs.setdefault(obs.tobytes() + next_obs.tobytes(), set()).add((action, reward, terminated))
    for _ in range(5):
        batch = buffer.sample(64)
        for j in range(64):
            key = batch.observations[j].numpy().tobytes() + batch.next_observations[j].numpy().tobytes()
            assert key in pairs, "sampled (obs, next_obs) is no transition of the stream"
            terminated = batch.discounts[j].item() == 0.0
            if not terminated:
                assert batch.discounts[j].item() == pytest.approx(gamma)
            assert (batch.actions[j].item(), batch.returns[j].item(), terminated) in pairs[key]


def fake_vec(lengths: tuple[int, ...], size: int = 12) -> gym.vector.VectorEnv:
    return SyncVectorEnv(
        [lambda n=n: FakeImageEnv(size=size, episode_length=n) for n in lengths],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


def test_fake_image_env_is_a_rolling_frame_stack():
    envs = make_vec_env("rlkit/FakeImage-v0", 2, seed=0, env_kwargs={"size": 12, "episode_length": 5})
    obs, _ = envs.reset(seed=0)
    for _ in range(4):
        nxt, *_ = envs.step(np.zeros(2, np.int64))
        np.testing.assert_array_equal(nxt[:, :-1], obs[:, 1:])
        obs = nxt
    envs.close()


@pytest.mark.parametrize("capacity", [100_000, 60])
def test_make_vec_env_stream_matches_naive_storage(capacity):
    envs = make_vec_env("rlkit/FakeImage-v0", 3, seed=1, env_kwargs={"size": 12, "episode_length": 7})
    shape = envs.single_observation_space.shape
    buffer = FrameReplayBuffer(capacity, 3, shape, np.uint8, stacked=True, n_step=1, gamma=0.99, seed=0)
    naive = drive(envs, buffer, 150, seed=1)
    envs.close()
    assert len(naive) == 3 * 150 - 3 * (150 // 8)  # one reset step per env after each 7-step episode
    checked = check_against_naive(buffer, naive)
    if capacity > 1000:
        assert checked == len(naive)
    else:
        assert buffer.head.min() > 2 * buffer.slots  # wrapped around at least twice
        assert 0 < checked < len(naive)
    check_samples(buffer, naive, 0.99)


@pytest.mark.parametrize("capacity", [100_000, 45])
@pytest.mark.parametrize("prioritized", [False, True])
def test_mixed_episode_lengths_match_naive_storage(capacity, prioritized):
    envs = fake_vec((3, 5, 11))
    buffer = FrameReplayBuffer(capacity, 3, (4, 12, 12), np.uint8, stacked=True, n_step=1, gamma=0.9,
                               prioritized=prioritized, seed=2)
    naive = drive(envs, buffer, 120, seed=2)
    envs.close()
    checked = check_against_naive(buffer, naive)
    assert checked == len(naive) if capacity > 1000 else 0 < checked < len(naive)
    check_samples(buffer, naive, 0.9)


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5"])
def test_ale_stream_matches_naive_storage(env_id):
    # Breakout loses lives quickly under random play: with episodic_life (train mode) that gives
    # terminations and resets whose first stacks are zero-padded.
    envs = make_vec_env(env_id, 2, seed=0, mode="train")
    shape = envs.single_observation_space.shape
    assert shape == (4, 84, 84)
    buffer = FrameReplayBuffer(400, 2, shape, np.uint8, stacked=True, n_step=1, gamma=0.99, seed=0)
    naive = drive(envs, buffer, 300, seed=0)
    envs.close()
    checked = check_against_naive(buffer, naive)
    assert checked > 300
    check_samples(buffer, naive, 0.99)
    if env_id == "ALE/Breakout-v5":
        assert any(t[4] for t in naive.values()), "expected life-loss terminations"


def test_ale_reset_stack_is_zero_padded():
    envs = make_vec_env("ALE/Pong-v5", 1, seed=0, mode="train")
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8
    assert not obs[0, :3].any() and obs[0, 3].any()


def test_memory_is_one_frame_per_transition():
    needed = FrameReplayBuffer.bytes_needed(1_000_000, (4, 84, 84), np.uint8, True)
    naive_obs = 1_000_000 * 4 * 84 * 84  # stacked observations only (next_obs would double it)
    assert needed <= 8e9
    assert 0.24 < needed / naive_obs < 0.26
    # the allocated buffer is what bytes_needed predicts (up to a few extra slots per stream)
    buffer = FrameReplayBuffer(20_000, 4, (4, 84, 84), np.uint8, stacked=True, n_step=3)
    predicted = FrameReplayBuffer.bytes_needed(20_000, (4, 84, 84), np.uint8, True)
    assert predicted <= buffer.nbytes <= predicted * 1.01
    assert buffer.frames.shape == (4, 5000 + 4 + 3, 84, 84)


def test_train_refuses_a_buffer_that_cannot_fit(monkeypatch):
    """The check counts the transitions the run will store (min of buffer_size and total_steps: zeroed pages
    are backed only once written), names the GiB needed and available, and suggests a buffer that fits."""
    import psutil

    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.config import build_config
    from rlkit.errors import RLKitError

    class Memory:
        available = 2 * 2**30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory())
    space, actions = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6)
    settings = {"buffer_size": 1_000_000, "encoder": "nature_cnn_small"}
    config = build_config(DQNConfig, {**settings, "total_steps": 10_000_000})
    with pytest.raises(RLKitError, match=r"buffer_size=1000000 needs 6\.\d\d GiB for the 1000000 transitions .* "
                                         r"only 2\.00 GiB is available; .*--set buffer_size=2\d\d\d\d\d\.$"):
        DQN(config, space, actions).make_buffer(8, stacked=True)
    short = build_config(DQNConfig, {**settings, "total_steps": 30_000})
    buffer = DQN(short, space, actions).make_buffer(8, stacked=True)
    assert buffer.frames.shape[1] == 125_000 + 4 + 1


def test_uniform_sampling_is_uniform_over_transitions_before_the_buffer_wraps():
    """Env 0 plays 2-step episodes (each costs extra episode-start slots), env 1 one long episode: before the
    buffer wraps the two streams hold different numbers of transitions, and each transition must still be
    drawn equally often."""
    buffer = FrameReplayBuffer(4000, 2, (4, 1), np.int64, stacked=True, n_step=1, seed=0)
    buffer.start(np.zeros((2, 4, 1), np.int64))
    reset_next = np.zeros(2, bool)
    for step in range(1500):
        terminated = np.array([step % 2 == 1, False]) & ~reset_next
        buffer.add(np.zeros(2, np.int64), np.zeros(2, np.float32), terminated, np.zeros(2, bool),
                   np.full((2, 4, 1), step, np.int64), reset_step=reset_next)
        reset_next = terminated
    stored = np.array([buffer.valid[e].sum() for e in range(2)])
    assert stored[0] != stored[1]
    envs, slots = buffer._sample_uniform(200_000)
    assert buffer.valid[envs, slots % buffer.slots].all()
    share = np.bincount(envs, minlength=2) / len(envs)
    np.testing.assert_allclose(share, stored / stored.sum(), atol=0.005)


def test_sum_tree_never_lands_on_an_empty_leaf():
    """Prefixes on and just below every cumulative boundary of trees with many zero priorities: rounding in
    the stored sums once sent a few of them to zero-priority leaves (an infinite importance weight)."""
    from rlkit.agents.replay import SumTree

    rng = np.random.default_rng(0)
    for _ in range(80):
        size = int(rng.integers(5, 3000))
        tree = SumTree(size)
        priorities = rng.random(size) ** 3 * rng.choice([1e-6, 1, 50], size)
        priorities[rng.random(size) < 0.3] = 0
        tree.update(np.arange(size), priorities)
        bounds = np.cumsum(priorities)
        bounds = bounds[bounds < tree.total]
        prefix = np.concatenate([np.nextafter(bounds, 0), bounds, [np.nextafter(tree.total, 0)], [0.0]])
        leaves = tree.find(prefix)
        assert (leaves < size).all() and (tree.get(leaves) > 0).all()


def test_len_counts_exactly_the_transitions_that_can_be_sampled():
    """A small wrapping buffer with frame stacks and 3-step windows: ``len`` is the number of distinct
    transitions uniform sampling draws (it once also counted transitions whose oldest frames were overwritten
    and those whose n-step window was not complete yet)."""
    envs = fake_vec((3, 5))
    buffer = FrameReplayBuffer(30, 2, (4, 12, 12), np.uint8, stacked=True, n_step=3, seed=0)
    drive(envs, buffer, 57)
    assert buffer.can_sample()
    envs_drawn, slots = buffer._sample_uniform(50_000)
    drawn = set(zip(envs_drawn.tolist(), slots.tolist()))
    assert len(buffer) == len(drawn)
    assert len(buffer) < int(buffer.valid.sum())


def test_sampling_a_buffer_without_transitions_is_a_user_error():
    from rlkit.errors import RLKitError

    for prioritized in (False, True):
        buffer = FrameReplayBuffer(64, 1, (4, 3), np.uint8, stacked=True, n_step=3, prioritized=prioritized)
        buffer.start(np.zeros((1, 4, 3), np.uint8))
        assert not buffer.can_sample() and len(buffer) == 0
        with pytest.raises(RLKitError, match="raise buffer_size"):
            buffer.sample(4)


def test_a_buffer_too_small_for_the_stack_and_window_is_refused_up_front():
    from rlkit.agents.dqn import DQN, DQNConfig
    from rlkit.config import build_config
    from rlkit.errors import RLKitError

    space, actions = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6)
    config = build_config(DQNConfig, {"buffer_size": 50, "batch_size": 32, "n_step": 3})
    with pytest.raises(RLKitError, match=r"buffer_size=50 cannot hold .* 8 envs; use --set buffer_size=56"):
        DQN(config, space, actions).make_buffer(8, stacked=True)
