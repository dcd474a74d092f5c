"""Pretrained encoders in agents (file format, --encoder/--freeze/--encoder-lr-scale) and random-shift
augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from cli_helpers import one_line_error, run_cli
from safetensors.torch import save_file

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.policy_gradient import PPO, PPOConfig
from rlkit.checkpoint import load_checkpoint
from rlkit.errors import RLKitError
from rlkit.vision.augment import random_shift
from rlkit.vision.encoders import make_encoder
from rlkit.vision.io import load_encoder, read_card, save_encoder

FAKE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)  # rlkit/FakeImage-v0's observations
IMPALA_KWARGS = {"channels": [8, 16, 16], "depth": 1}


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    torch.manual_seed(123)
    encoder = make_encoder("impala", FAKE, **IMPALA_KWARGS)
    path = tmp_path / "impala.safetensors"
    save_encoder(path, encoder, {"method": "test"})
    return path


def file_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def dqn_args(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "dqn", "--env", "rlkit/FakeImage-v0", "--total-steps", "200", "--run-dir", str(run_dir),
            "--set", "learning_starts=50", "--set", "buffer_size=500", "--set", "eval_episodes=1",
            "--set", "torch_threads=1", "--set", "env_kwargs.episode_length=20", "--set", "train_freq=8",
            "--set", "gradient_steps=1", "--set", "batch_size=16", *extra]


# ---- file format ------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(encoder_file):
    card = read_card(encoder_file)
    assert card["encoder"] == "impala" and card["encoder_kwargs"] == IMPALA_KWARGS
    assert card["observation_shape"] == [4, 84, 84] and card["observation_dtype"] == "uint8"
    assert card["features_dim"] == 256 and card["method"] == "test"
    encoder = load_encoder(encoder_file, FAKE)
    torch.manual_seed(0)
    fresh = make_encoder("impala", FAKE, **IMPALA_KWARGS)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    weights = file_weights(encoder_file)
    assert all(torch.equal(v, weights[k]) for k, v in encoder.state_dict().items())
    assert not torch.allclose(encoder(x), fresh(x))
    assert encoder.card == card
    assert not list(encoder_file.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_load_errors_are_one_line(tmp_path, encoder_file):
    with pytest.raises(RLKitError, match=r"expects observations \(4, 84, 84\) uint8, this env gives \(3, 64, 64\)"):
        load_encoder(encoder_file, gym.spaces.Box(0, 255, (3, 64, 64), np.uint8))
    with pytest.raises(RLKitError, match="does not exist"):
        load_encoder(tmp_path / "missing.safetensors", FAKE)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(RLKitError, match="corrupt or not a safetensors file"):
        load_encoder(garbage, FAKE)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(RLKitError, match="not an rlkit encoder file"):
        load_encoder(plain, FAKE)
    card = {"encoder": "convnext", "encoder_kwargs": {}, "observation_shape": [4, 84, 84]}
    unknown = tmp_path / "unknown.safetensors"
    save_file({"w": torch.zeros(2)}, str(unknown), metadata={"format": "rlkit-encoder-v1", "card": json.dumps(card)})
    with pytest.raises(RLKitError, match="unknown encoder 'convnext'"):
        load_encoder(unknown, FAKE)
    wrong = tmp_path / "wrong.safetensors"
    card = {"encoder": "impala", "encoder_kwargs": {}, "observation_shape": [4, 84, 84]}
    save_file({"w": torch.zeros(2)}, str(wrong), metadata={"format": "rlkit-encoder-v1", "card": json.dumps(card)})
    with pytest.raises(RLKitError, match="does not fit its card"):
        load_encoder(wrong, FAKE)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(encoder_file.read_bytes()[:-1000])
    with pytest.raises(RLKitError, match="corrupt"):
        load_encoder(truncated, FAKE)
    run_dir = tmp_path / "pretrain-run"  # the run directory instead of the file inside it
    run_dir.mkdir()
    (run_dir / "encoder.safetensors").write_bytes(encoder_file.read_bytes())
    with pytest.raises(RLKitError, match=f"is a directory; pass {run_dir / 'encoder.safetensors'}"):
        load_encoder(run_dir, FAKE)


# ---- DQN: frozen, fine-tuned, errors ---------------------------------------------------------------------------
def test_dqn_frozen_pretrained_encoder(capsys, tmp_path, encoder_file):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *dqn_args(run_dir, "--encoder", str(encoder_file), "--freeze"))
    assert code == 0, err
    assert "frozen" in out
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert meta["counters"]["updates"] > 0
    weights = file_weights(encoder_file)
    for prefix in ("q_net.encoder.", "target_net.encoder."):
        for key, value in weights.items():
            assert torch.equal(tensors[prefix + key], value), prefix + key
    # The head learned: it differs from the same seed's initial head.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]
    assert config["encoder"] == "impala" and config["encoder_kwargs"] == IMPALA_KWARGS  # dqn-classic said auto
    assert config["freeze_encoder"] is True and config["encoder_path"] == str(encoder_file)
    fresh = DQN(DQNConfig(**{**config, "encoder_path": None}), FAKE, gym.spaces.Discrete(4))
    assert not torch.allclose(tensors["q_net.head.weight"], fresh.q_net.head.weight)
    # The optimizer holds only the head (weight, bias).
    assert [len(g["params"]) for g in meta["optimizer"]["param_groups"]] == [2]
    # Eval rebuilds the architecture from config.yaml; the encoder file is not needed any more.
    encoder_file.unlink()
    code, out, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "1", "--checkpoint", "last")
    assert code == 0, err


def test_dqn_freeze_and_lr_scale_param_groups():
    frozen = DQN(DQNConfig(freeze_encoder=True, device="cpu"), FAKE, gym.spaces.Discrete(4))
    assert len(frozen.optimizer.param_groups) == 1
    in_optimizer = {id(p) for p in frozen.optimizer.param_groups[0]["params"]}
    assert not any(id(p) in in_optimizer for p in frozen.q_net.encoder.parameters())
    assert not any(p.requires_grad for p in frozen.q_net.encoder.parameters())
    assert all(p.requires_grad for p in frozen.q_net.head.parameters())
    scaled = DQN(DQNConfig(encoder_lr_scale=0.1, lr=1e-3, device="cpu"), FAKE, gym.spaces.Discrete(4))
    head, encoder = scaled.optimizer.param_groups
    assert head["lr"] == 1e-3 and encoder["lr"] == pytest.approx(1e-4) and encoder["lr_scale"] == 0.1
    assert {id(p) for p in encoder["params"]} == {id(p) for p in scaled.q_net.encoder.parameters()}
    assert len(head["params"]) == 2
    plain = DQN(DQNConfig(device="cpu"), FAKE, gym.spaces.Discrete(4))
    assert len(plain.optimizer.param_groups) == 1  # checkpoints keep their optimizer layout
    assert len(plain.optimizer.param_groups[0]["params"]) == len(list(plain.q_net.parameters()))


def test_ppo_lr_scale_follows_the_schedule(capsys, tmp_path, encoder_file):
    run_dir = tmp_path / "ppo"
    code, _, err = run_cli(
        capsys, "train", "ppo", "--env", "rlkit/FakeImage-v0", "--total-steps", "128", "--run-dir", str(run_dir),
        "--encoder", str(encoder_file), "--encoder-lr-scale", "0.1", "--set", "rollout_steps=16",
        "--set", "lr_schedule=linear", "--set", "eval_episodes=1", "--set", "torch_threads=1",
        "--set", "augment=shift", "--set", "env_kwargs.episode_length=20",
    )
    assert code == 0, err
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    head, encoder = meta["optimizer"]["param_groups"]
    assert head["lr"] < 2.5e-4  # annealed
    assert encoder["lr"] == pytest.approx(0.1 * head["lr"])
    weights = file_weights(encoder_file)
    changed = [k for k, v in weights.items() if not torch.equal(tensors["net.actor_encoder." + k], v)]
    assert changed  # fine-tuned, not frozen


def test_ppo_frozen_encoder_unchanged():
    torch.manual_seed(0)
    agent = PPO(PPOConfig(freeze_encoder=True, device="cpu", encoder="nature_cnn_small"), FAKE, gym.spaces.Discrete(4))
    before = {k: v.clone() for k, v in agent.net.actor_encoder.state_dict().items()}
    head = agent.net.policy_head.weight.detach().clone()
    T, N = 8, 2
    obs = np.random.default_rng(0).integers(0, 256, (T, N, 4, 84, 84), dtype=np.uint8)
    zeros = np.zeros((T, N), np.float32)
    advantages = np.random.default_rng(1).normal(size=(T, N)).astype(np.float32)
    actions = np.random.default_rng(2).integers(0, 4, (T, N))
    agent.optimise(obs, actions, zeros - 1.4, zeros, advantages, advantages, np.ones((T, N), np.float32))
    assert all(torch.equal(v, before[k]) for k, v in agent.net.actor_encoder.state_dict().items())
    assert not torch.equal(head, agent.net.policy_head.weight)


def test_mismatched_observations_exit_2_with_one_line(capsys, tmp_path):
    small = make_encoder("nature_cnn_small", gym.spaces.Box(0, 255, (3, 64, 64), np.uint8))
    path = tmp_path / "rgb64.safetensors"
    save_encoder(path, small)
    line = one_line_error(capsys, *dqn_args(tmp_path / "run", "--encoder", str(path)))
    assert "expects observations (3, 64, 64) uint8, this env gives (4, 84, 84) uint8" in line
    assert not (tmp_path / "run").exists()


def test_encoder_flag_errors(capsys, tmp_path, encoder_file):
    line = one_line_error(capsys, *dqn_args(tmp_path / "a", "--encoder", str(tmp_path / "nope.safetensors")))
    assert "does not exist" in line
    line = one_line_error(capsys, *dqn_args(tmp_path / "b", "--encoder", str(encoder_file), "--set", "encoder=vit"))
    assert "holds a impala encoder" in line
    line = one_line_error(capsys, *dqn_args(tmp_path / "c", "--encoder-lr-scale", "0"))
    assert "must be positive" in line
    line = one_line_error(capsys, "train", "reinforce", "--env", "CartPole-v1", "--freeze")
    assert "does not apply to reinforce" in line
    line = one_line_error(capsys, *dqn_args(tmp_path / "d", "--set", "encoder_kwargs.dpeth=2",
                                            "--set", "encoder=impala"))
    assert "no option 'dpeth'" in line
    line = one_line_error(capsys, "train", "dqn", "--env", "CartPole-v1", "--set", "augment=shift")
    assert "augment=shift needs image observations" in line
    short = ("--env", "rlkit/FakeImage-v0", "--total-steps", "64", "--run-dir", str(tmp_path / "short"))
    line = one_line_error(capsys, "train", "ppo_lstm", *short, "--set", "augment=shift")
    assert "augment=shift is not available for ppo_lstm" in line  # it used to be accepted and ignored
    line = one_line_error(capsys, "train", "ppo", *short, "--set", "normalize_observations=true")
    assert "normalize_observations=true is for vector observations" in line  # it used to wrap uint8 values


def test_encoder_kwargs_override_reaches_the_encoder(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *dqn_args(run_dir, "--set", "encoder=vit", "--set", "encoder_kwargs.depth=1",
                                             "--set", "encoder_kwargs.width=48", "--set", "augment=shift"))
    assert code == 0, err
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert meta["encoder"] == "vit" and meta["config"]["encoder_kwargs"] == {"depth": 1, "width": 48}
    assert tensors["q_net.encoder.pos_embed"].shape == (1, 49, 48)
    assert not any(k.startswith("q_net.encoder.blocks.1.") for k in tensors)


# ---- random shift ---------------------------------------------------------------------------------------------
def coordinate_images(batch: int, size: int = 12) -> torch.Tensor:
    """uint8 images whose pixel value encodes its position: 16 * row + col."""
    grid = (16 * torch.arange(size)[:, None] + torch.arange(size)[None, :]).to(torch.uint8)
    return grid.expand(batch, 3, size, size).clone()


def test_random_shift_matches_replicate_pad_and_crop():
    torch.manual_seed(0)
    x = coordinate_images(64)
    out = random_shift(x, pad=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="replicate")
    shifts = set()
    for b in range(64):
        # The centre pixel (6, 6) is never clamped for |shift| <= 4, so it reveals the shift.
        dy, dx = int(out[b, 0, 6, 6]) // 16 - 6, int(out[b, 0, 6, 6]) % 16 - 6
        assert abs(dy) <= 4 and abs(dx) <= 4
        crop = padded[b, :, 4 + dy : 4 + dy + 12, 4 + dx : 4 + dx + 12]
        assert torch.equal(out[b].float(), crop)
        shifts.add((dy, dx))
    assert len(shifts) > 20  # drawn per sample, not one shift for the batch


def test_random_shift_pad_zero_is_identity_and_float_works():
    x = coordinate_images(4)
    assert torch.equal(random_shift(x, pad=0), x)
    y = torch.rand(5, 4, 84, 84)
    out = random_shift(y, pad=4)
    assert out.shape == y.shape and out.dtype == torch.float32
    generator = torch.Generator().manual_seed(3)
    again = random_shift(y, pad=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(random_shift(y, pad=4, generator=generator), again)
    assert not torch.equal(out, y)
