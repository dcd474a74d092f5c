"""Env factories: Atari train/eval settings, observations, episode statistics; Gymnasium envs; the fake env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlkit.envs import env_family, episode_stats, list_envs, make_env, make_vec_env
from rlkit.envs.atari import atari_settings, rom_name
from rlkit.errors import RLKitError


def test_atari_train_and_eval_settings():
    train = make_vec_env("ALE/Pong-v5", 2, seed=0, mode="train")
    evaluation = make_vec_env("ALE/Pong-v5", 1, seed=0, mode="eval",
                              env_kwargs={"episodic_life": True, "clip_rewards": True, "frame_skip": 3})
    try:
        assert train.settings_dict["env_id"] == "ALE/Pong-v5"
        assert train.settings_dict["clip_rewards"] is True and train.settings_dict["episodic_life"] is True
        assert train.settings_dict["frame_skip"] == 4 and train.settings_dict["frame_stack"] == 4
        assert train.settings_dict["repeat_action_probability"] == 0.25
        # eval always plays full unclipped games, whatever the training env_kwargs say
        assert evaluation.settings_dict["clip_rewards"] is False
        assert evaluation.settings_dict["episodic_life"] is False
        assert evaluation.settings_dict["frame_skip"] == 3
        for envs in (train, evaluation):
            space = envs.single_observation_space
            assert space.shape == (4, 84, 84) and space.dtype == np.uint8
            assert isinstance(envs.single_action_space, gym.spaces.Discrete)
            assert envs.single_action_space.n == 6
        obs, _ = train.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        rewards = []
        for _ in range(300):
            obs, reward, *_ = train.step(train.action_space.sample())
            rewards.append(reward)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
        assert -1.0 in np.unique(rewards)  # random play concedes points in 300 steps
    finally:
        train.close()
        evaluation.close()


def test_atari_settings_explicit_overrides_in_train_mode():
    settings = atari_settings("train", {"episodic_life": False})
    assert settings.episodic_life is False and settings.clip_rewards is True
    assert atari_settings("eval", {}).clip_rewards is False


def test_unknown_atari_setting():
    with pytest.raises(RLKitError, match=r"unknown Atari env setting\(s\) frameskip; valid: .*frame_skip"):
        make_vec_env("ALE/Pong-v5", 1, env_kwargs={"frameskip": 2})


def test_rom_names():
    assert rom_name("ALE/MsPacman-v5") == "ms_pacman"
    assert rom_name("ALE/Pong-v5") == "pong"
    with pytest.raises(RLKitError):
        rom_name("ALE/Pong-v4")


def _play_until_games_end(envs_list, steps=4000, seed=0):
    """Step several identically seeded vector envs with the same random actions; yield each step's results."""
    for envs in envs_list:
        envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n = envs_list[0].single_action_space.n
    for _ in range(steps):
        actions = rng.integers(0, n, envs_list[0].num_envs)
        yield [envs.step(actions) for envs in envs_list]


def test_episode_statistics_report_unclipped_game_score():
    # SpaceInvaders scores 5..30 points per alien, so clipped and unclipped returns differ.
    clipped = make_vec_env("ALE/SpaceInvaders-v5", 2, seed=0, mode="train", env_kwargs={"episodic_life": False})
    raw = make_vec_env("ALE/SpaceInvaders-v5", 2, seed=0, mode="train",
                       env_kwargs={"episodic_life": False, "clip_rewards": False})
    games = []
    raw_sum, clipped_sum, length = np.zeros(2), np.zeros(2), np.zeros(2, dtype=int)
    resetting = np.zeros(2, dtype=bool)
    try:
        for (obs_c, rew_c, term_c, trunc_c, info_c), (obs_r, rew_r, term_r, trunc_r, info_r) in _play_until_games_end(
            [clipped, raw]
        ):
            np.testing.assert_array_equal(obs_c, obs_r)  # the same game
            np.testing.assert_array_equal(rew_c, np.sign(rew_r))
            assert set(np.unique(rew_c)) <= {-1.0, 0.0, 1.0}
            raw_sum += np.where(resetting, 0, rew_r)
            clipped_sum += np.where(resetting, 0, rew_c)
            length += ~resetting
            done = term_r | trunc_r
            np.testing.assert_array_equal(done, term_c | trunc_c)
            assert [i for i, *_ in episode_stats(info_c)] == list(np.flatnonzero(done))
            for (i, r_c, l_c), (_, r_r, l_r) in zip(episode_stats(info_c), episode_stats(info_r)):
                assert r_c == r_r == raw_sum[i]
                assert l_c == l_r == length[i]
                assert r_c > clipped_sum[i] > 0
                games.append(r_c)
                raw_sum[i] = clipped_sum[i] = length[i] = 0
            resetting = done
            if len(games) >= 2:
                break
    finally:
        clipped.close()
        raw.close()
    assert len(games) >= 2 and all(g % 5 == 0 for g in games)


def test_episodic_life_statistics_span_the_whole_game():
    envs = make_vec_env("ALE/Breakout-v5", 1, seed=0, mode="train", env_kwargs={"clip_rewards": False})
    assert envs.settings_dict["episodic_life"] is True
    score, steps, lives_seen = 0.0, 0, []
    last_frame = 0
    try:
        for ((_, reward, terminated, _truncated, info),) in _play_until_games_end([envs], steps=5000):
            # a lost life ends the training episode but the game goes on: no reset, frames keep counting
            frame = int(info["episode_frame_number"][0])
            assert frame > last_frame
            last_frame = frame
            score += reward[0]  # rlkit counts every step of the game, including the one after a lost life
            steps += 1
            stats = episode_stats(info)
            if terminated[0] and info["lives"][0] > 0:
                lives_seen.append(int(info["lives"][0]))
                assert stats == []
            if stats:
                ((_, ret, length),) = stats
                assert terminated[0] and info["lives"][0] == 0
                break
        else:
            pytest.fail("no game ended")
    finally:
        envs.close()
    assert lives_seen == [4, 3, 2, 1]  # Breakout: 5 lives, each loss a training-episode end
    assert ret == score and length == steps
    assert ret >= 1


def test_episodic_life_game_continues_after_reset_step():
    """After the game is over, the next step resets it (lives back to 5, not counted in statistics)."""
    envs = make_vec_env("ALE/Breakout-v5", 1, seed=0, mode="train", env_kwargs={"clip_rewards": False})
    games, game_steps = [], 0
    reset_next = False
    try:
        for ((_, reward, terminated, truncated, info),) in _play_until_games_end([envs], steps=6000):
            if reset_next:
                assert info["lives"][0] == 5 and reward[0] == 0
            else:
                game_steps += 1
            reset_next = bool(truncated[0] or (terminated[0] and info["lives"][0] == 0))
            for _, _, length in episode_stats(info):
                assert length == game_steps
                games.append(length)
                game_steps = 0
            if len(games) == 2:
                break
    finally:
        envs.close()
    assert len(games) == 2


def test_classic_control_records_episode_statistics():
    envs = make_vec_env("CartPole-v1", 3, seed=0)
    assert envs.settings_dict == {"env_id": "CartPole-v1"}
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    returns, lengths = np.zeros(3), np.zeros(3, dtype=int)
    resetting = np.zeros(3, dtype=bool)
    finished = 0
    try:
        for _ in range(500):
            _, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
            returns += np.where(resetting, 0, reward)
            lengths += ~resetting
            done = terminated | truncated
            stats = episode_stats(info)
            assert [i for i, *_ in stats] == list(np.flatnonzero(done))
            for i, ret, length in stats:
                assert ret == returns[i] == length == lengths[i]  # CartPole pays 1 per step
                returns[i], lengths[i] = 0, 0
                finished += 1
            resetting = done
    finally:
        envs.close()
    assert finished >= 10


def test_bad_gymnasium_env_kwargs():
    with pytest.raises(RLKitError, match="bad env_kwargs for CartPole-v1"):
        make_vec_env("CartPole-v1", 1, env_kwargs={"not_a_kwarg": 1})


def test_num_envs_must_be_positive():
    with pytest.raises(RLKitError, match="num_envs"):
        make_vec_env("CartPole-v1", 0)


def test_env_families():
    assert env_family("ALE/Pong-v5") == "atari"
    assert env_family("CartPole-v1") == "classic-control"
    assert env_family("FrozenLake-v1") == "toy-text"
    assert env_family("rlkit/FakeImage-v0") == "rlkit"
    with pytest.raises(RLKitError, match=r"Did you mean: CartPole-v1"):
        env_family("CartPol-v1")
    groups = list_envs()
    assert "ALE/Pong-v5" in groups["atari"] and "CartPole-v1" in groups["classic-control"]


def test_fake_image_env_passes_gymnasium_checker():
    env = make_env("rlkit/FakeImage-v0", episode_length=5)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    truncated, steps = False, 0
    while not truncated:
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert reward in (0.0, 1.0) and not terminated
        steps += 1
    assert steps == 5
    env.close()


def test_fake_image_reward_follows_newest_frame_brightness():
    env = make_env("rlkit/FakeImage-v0", seed=1, size=8, n_actions=4)
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        # brightness class k has mean level (k + 1) * 255 // 5 (51, 102, 153, 204) with noise in [-8, 7]
        target = int(np.argmin([abs(obs[-1].mean() - (k + 1) * 255 // 5) for k in range(4)]))
        obs, reward, *_ = env.step(target)
        assert reward == 1.0
    env.close()


@pytest.mark.parametrize("n_actions", [31, 42, 254])
def test_fake_image_env_supports_many_actions(n_actions):
    """Levels below 8 or above 248 (n_actions > 30) are clipped, not overflowed or wrapped: the newest frame's
    mean still tells the class."""
    env = make_env("rlkit/FakeImage-v0", seed=1, size=84, n_actions=n_actions)
    levels = (np.arange(n_actions) + 1) * 255 // (n_actions + 1)
    means = np.clip(levels[:, None] + np.arange(-8, 8), 0, 255).mean(axis=1)  # noise is uniform in [-8, 7]
    assert np.all(np.diff(means) > 0)
    obs, _ = env.reset(seed=1)
    for _ in range(200):
        target = int(np.argmin(np.abs(obs[-1].mean() - means)))
        obs, reward, *_ = env.step(target)
        assert reward == 1.0
    env.close()


@pytest.mark.parametrize("n_actions", [0, 255, 2.0, True])
def test_fake_image_env_rejects_unusable_action_counts(n_actions):
    with pytest.raises(RLKitError, match=r"n_actions must be an integer in \[1, 254\]"):
        make_env("rlkit/FakeImage-v0", n_actions=n_actions)


def test_life_loss_step_is_a_reset_step_that_fires_and_pays_nothing():
    """After a lost life (episodic_life) the next step replaces the action by FIRE and reports reward 0,
    while the game goes on with its remaining lives (no real reset)."""
    envs = make_vec_env("ALE/Breakout-v5", 1, seed=3, mode="train")
    fire = envs._life_reset_action
    assert fire == 1  # Breakout's action set is NOOP, FIRE, RIGHT, LEFT
    obs, info = envs.reset(seed=3)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 1))
        if terminated[0] and info["lives"][0] > 0:
            lives = int(info["lives"][0])
            assert envs._life_reset[0]
            obs, reward, terminated, truncated, info = envs.step(np.array([3]))
            assert reward[0] == 0.0
            assert int(info["lives"][0]) == lives  # same game, not a new one with full lives
            checked += 1
        if checked >= 2:
            break
    envs.close()
    assert checked >= 2


def test_masked_cartpole_hides_velocities():
    env = make_env("rlkit/MaskedCartPole-v0")
    check_env(env.unwrapped)
    full = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=4)
    full_obs, _ = full.reset(seed=4)
    assert obs.shape == (2,) and env.observation_space.shape == (2,)
    np.testing.assert_array_equal(obs, full_obs[[0, 2]])  # cart position, pole angle
    for action in [0, 1, 1, 0, 1] * 4:
        obs, reward, terminated, truncated, _ = env.step(action)
        full_obs, full_reward, full_terminated, *_ = full.step(action)
        np.testing.assert_array_equal(obs, full_obs[[0, 2]])
        assert (reward, terminated) == (full_reward, full_terminated)
    assert env.spec.max_episode_steps == 500 and env_family("rlkit/MaskedCartPole-v0") == "rlkit"
    env.close()


def test_headless_rendering_defaults_keep_the_users_drivers(monkeypatch):
    """Collecting or recording a pygame-rendered env on a machine without a display or sound: SDL's dummy
    drivers, so SDL prints no 'error: XDG_RUNTIME_DIR ...' line beside rlkit's output; a user's choice wins."""
    import os

    from rlkit.envs import headless_rendering

    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.setenv("SDL_AUDIODRIVER", "alsa")
    headless_rendering()
    assert os.environ["SDL_VIDEODRIVER"] == "dummy" and os.environ["SDL_AUDIODRIVER"] == "alsa"
