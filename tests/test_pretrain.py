"""Frame datasets, pretraining (supervised, GAN, MAE, data parallel) and linear probes: tiny data, tiny nets."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.cli import main
from rlkit.vision.data import ChunkWriter, FrameDataset, assign_splits, read_manifest


def make_dataset(path: Path, frames: int = 48, episodes: int = 6, shape: tuple = (4, 84, 84), seed: int = 0) -> Path:
    """A synthetic dataset: random frames; label 'bright' = mean brightness class of the frame, 'noise' random."""
    rng = np.random.default_rng(seed)
    per = frames // episodes
    writer = ChunkWriter(path, 10, {"env_id": "synthetic", "labels": ["bright", "noise"], "color": False})
    for i in range(frames):
        level = int(rng.integers(0, 4))
        obs = rng.integers(0, 64, shape, dtype=np.uint8) + np.uint8(level * 64)
        writer.add(obs=obs, labels=np.array([level, rng.integers(0, 4)]), episode=i // per, step=i % per,
                   action=np.int64(0), reward=np.float32(0))
    split = assign_splits(list(range(episodes)), seed)
    writer.close({"obs_shape": list(shape), "obs_dtype": "uint8",
                  "episodes": [{"id": e, "frames": per, "split": split[e]} for e in range(episodes)]})
    return path


def test_collect_pong_labels_match_ram_and_splits_are_by_episode(tmp_path):
    from rlkit.vision.collect import collect, make_collect_env
    from rlkit.vision.labels import ATARI_RAM_LABELS

    out = tmp_path / "pong"
    collect("ALE/Pong-v5", 200, out, seed=3, chunk_size=64, episode_steps=50, color=True, print_fn=lambda s: None)
    manifest = read_manifest(out)
    assert manifest["frames"] == 200 and len(manifest["chunks"]) == 4
    assert manifest["labels"] == list(ATARI_RAM_LABELS["pong"])
    # AtariARI's Pong indices (Anand et al. 2019, DESIGN.md), written out here, not read from the module under test
    assert ATARI_RAM_LABELS["pong"] == {"player_y": 51, "player_x": 46, "enemy_y": 50, "enemy_x": 45, "ball_x": 49,
                                        "ball_y": 54, "enemy_score": 13, "player_score": 14}
    assert ATARI_RAM_LABELS["breakout"] == {"ball_x": 99, "ball_y": 101, "player_x": 72, "blocks_hit_count": 77,
                                            "score": 84}
    everything = FrameDataset(out, None)
    episode = everything.get_batch(np.arange(200), "episode")
    actions = everything.get_batch(np.arange(200), "action")
    labels = everything.get_batch(np.arange(200), "labels")
    obs = everything.get_batch(np.arange(200), "obs")
    # re-simulate from the same seed with the recorded actions; read the RAM ourselves
    env, _, reset = make_collect_env("ALE/Pong-v5")
    indices = np.array(list(ATARI_RAM_LABELS["pong"].values()))
    state, _ = reset(env, 3)
    try:
        for i in range(200):
            if i > 0 and episode[i] != episode[i - 1]:
                state, _ = reset(env)
            ram = env.unwrapped.ale.getRAM()
            np.testing.assert_array_equal(labels[i], ram[indices], err_msg=f"frame {i}")
            np.testing.assert_array_equal(obs[i], state, err_msg=f"frame {i}")
            state, *_ = env.step(int(actions[i]))
    finally:
        env.close()
    assert len(np.unique(labels[:, 0])) > 1  # the paddle moves
    assert FrameDataset(out, "train", color=True)[0][2].shape == (210, 160, 3)
    # splits: by episode, disjoint, covering every frame
    seen: dict[str, set] = {}
    for split in ("train", "val", "test"):
        data = FrameDataset(out, split)
        assert len(data) > 0
        seen[split] = set(data.get_batch(np.arange(len(data)), "episode").tolist())
        o, lab = data[0]
        assert o.shape == (4, 84, 84) and o.dtype == torch.uint8 and lab.shape == (8,)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(FrameDataset(out, s)) for s in seen) == 200


def test_generic_env_frames_only(tmp_path):
    assert main(["collect", "--env", "rlkit/FakeImage-v0", "--steps", "30", "--out", str(tmp_path / "d")]) == 0
    data = FrameDataset(tmp_path / "d", None)
    assert len(data) == 30 and data.label_names == [] and data[0][1].numel() == 0


def test_gan_shapes_and_one_step(tmp_path):
    from rlkit.vision.gan import GANConfig, GANPretrainer

    data_dir = make_dataset(tmp_path / "d", frames=20, episodes=4)
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8)
    trainer = GANPretrainer(config, FrameDataset(data_dir, "train"), None, torch.device("cpu"))
    z = torch.randn(3, 100)
    assert trainer.generator(z).shape == (3, 4, 64, 64)
    assert trainer.generator(z).abs().max() <= 1
    features = trainer.encoder()(torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
    assert features.shape == (3, trainer.encoder().features_dim) == (3, 8 * 4 * 16)
    before = {k: v.clone() for k, v in {**dict(trainer.generator.named_parameters()),
                                         **dict(trainer.discriminator.named_parameters(prefix="d"))}.items()}
    losses = trainer.train_step(0)
    assert all(np.isfinite(v) for v in losses.values())
    after = {**dict(trainer.generator.named_parameters()), **dict(trainer.discriminator.named_parameters(prefix="d"))}
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_gan_at_84_keeps_the_frames_unresized(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.gan import GANConfig, GANPretrainer, NextFrameGenerator, ReconDecoder, to_gan_range

    data_dir = make_dataset(tmp_path / "d", frames=20, episodes=4)
    config = GANConfig(encoder_kwargs={"width": 4, "size": 84}, batch_size=4, fd_samples=8, info_codes=2,
                       recon_weight=1.0, augment="translation,cutout")
    trainer = GANPretrainer(config, FrameDataset(data_dir, "train"), None, torch.device("cpu"))
    assert trainer.generator(torch.randn(3, 102)).shape == (3, 4, 84, 84)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    assert torch.equal(to_gan_range(obs, 84), obs.float() * (2 / 255) - 1)  # no resize at 84
    maps = []  # the trunk's grids 84 -> 42 -> 21 -> 11 -> 5
    x = to_gan_range(obs, 84)
    for module in trainer.disc.trunk:
        x = module(x)
        if isinstance(module, torch.nn.LeakyReLU):
            maps.append(tuple(x.shape[1:]))
    assert maps == [(4, 42, 42), (8, 21, 21), (16, 11, 11), (32, 5, 5)]
    encoder = trainer.encoder()
    assert encoder(obs).shape == (3, encoder.features_dim) == (3, 32 * 5 * 5)
    losses = trainer.train_step(0)
    assert {"d", "g", "recon", "info"} <= set(losses) and all(np.isfinite(v) for v in losses.values())
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    for layer, size in enumerate((42, 21, 11, 5), start=1):
        assert make_encoder("dcgan", space, width=4, size=84, features=f"layer{layer}").features_dim == \
            4 * 2 ** (layer - 1) * size * size
    past = torch.zeros(2, 3, 84, 84)
    assert NextFrameGenerator(4, 4, 10, size=84)(past, torch.randn(2, 10)).shape == (2, 1, 84, 84)
    with pytest.raises(RLKitError, match="size=72 is not supported; choose one of: 64, 84"):
        make_encoder("dcgan", space, size=72)
    with pytest.raises(RLKitError, match="recon_decoder=deep"):
        ReconDecoder(4, 4, "linear", size=84)


@pytest.mark.parametrize("sync", [False, True])
def test_gan_encoder_batchnorm_statistics_are_of_real_frames(tmp_path, monkeypatch, sync):
    """Precise BN on real frames, also after the multi-GPU SyncBatchNorm conversion (sync), where rank 0
    calibrates alone: SyncBatchNorm's own forward, which would wait for the other ranks, must not run."""
    from rlkit.vision.gan import GANConfig, GANPretrainer, to_gan_range

    data_dir = make_dataset(tmp_path / "d", frames=20, episodes=4)
    data = FrameDataset(data_dir, "train")
    config = GANConfig(encoder_kwargs={"width": 4, "norm": "batch"}, batch_size=4, fd_samples=8)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    for step in range(3):
        trainer.train_step(step)
    if sync:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.disc)
        monkeypatch.setattr(torch.nn.SyncBatchNorm, "forward", lambda *a: pytest.fail("SyncBatchNorm.forward"))
    encoder = trainer.encoder()
    norm = encoder.trunk[3]  # first BatchNorm2d, after conv 2 (LeakyReLU before it)
    assert isinstance(norm, torch.nn.SyncBatchNorm if sync else torch.nn.BatchNorm2d)
    obs, _ = data.batch(np.arange(len(data)))
    with torch.no_grad():
        pre = encoder.trunk[:3](to_gan_range(obs))  # input of that BatchNorm on every real train frame
    torch.testing.assert_close(norm.running_mean, pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(norm.running_var, pre.var((0, 2, 3)), rtol=1e-3, atol=1e-6)


def test_gan_spectral_discriminator_instance_noise_and_label_smoothing(tmp_path):
    from rlkit.vision.gan import GANConfig, GANPretrainer
    from rlkit.vision.io import load_encoder, save_encoder

    data_dir = make_dataset(tmp_path / "d", frames=20, episodes=4)
    data = FrameDataset(data_dir, "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, steps=10, instance_noise=0.2,
                       minibatch_std=True)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    # default discriminator: spectral norm, no BatchNorm; every conv's largest singular value is ~1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trainer.discriminator.modules())
    for step in range(3):
        trainer.train_step(step)
    trainer.discriminator.eval()
    convs = [m for m in trainer.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5  # 4 trunk convs + the head
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert 0.8 < float(sigma) < 1.05
    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder

    plain = make_encoder("dcgan", data.observation_space(), width=4, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    with pytest.raises(RLKitError, match="norm='layer' is not valid"):
        make_encoder("dcgan", data.observation_space(), norm="layer")
    # instance noise: std 0.2 at step 0, half at step 5, none at the last step; drawn per (real, fake) row
    assert trainer.noise_std(0) == pytest.approx(0.2) and trainer.noise_std(5) == pytest.approx(0.1)
    _, extras = trainer.global_batch(0)
    assert extras["noise"].shape == (4, 2, 4, 64, 64)
    assert float(extras["noise"].std()) == pytest.approx(0.2, rel=0.05)
    assert "noise" not in trainer.global_batch(10)[1]
    # the noise and the smoothed real target reach the discriminator loss
    obs, labels = data.batch(np.arange(4))
    state = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    gstate = {k: v.clone() for k, v in trainer.generator.state_dict().items()}

    def d_loss(**changes):
        trainer.discriminator.load_state_dict(state)
        trainer.generator.load_state_dict(gstate)
        trainer.config = dataclasses.replace(config, **changes.pop("config", {}))
        torch.manual_seed(0)
        return trainer.update(obs, labels, {"z": extras["z"], **changes})["d"]

    plain = d_loss()
    assert d_loss(noise=extras["noise"]) != plain
    assert d_loss(config={"real_label": 1.0}) != plain
    # minibatch standard deviation: zero for a collapsed (identical) batch, positive otherwise; head only
    from rlkit.vision.gan import minibatch_std

    same = torch.randn(1, 8, 4, 4).expand(5, -1, -1, -1)
    assert float(minibatch_std(same).abs().max()) < 1e-3
    varied = minibatch_std(torch.randn(5, 8, 4, 4))
    assert varied.shape == (5, 1, 4, 4) and float(varied.min()) > 0.5
    assert trainer.disc_head.in_channels == 8 * 4 + 1
    assert trainer.logits(torch.zeros(3, 4, 64, 64)).shape == (3,)
    # the trained spectral-norm trunk round-trips through the encoder file (u, v buffers included)
    encoder = trainer.encoder().eval()
    save_encoder(tmp_path / "enc.safetensors", encoder)
    loaded = load_encoder(tmp_path / "enc.safetensors", data.observation_space()).eval()
    x = torch.from_numpy(data.get_batch(np.arange(3)))
    torch.testing.assert_close(loaded(x), encoder(x))


def test_dcgan_single_layer_features_are_that_layers_full_map():
    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.gan import to_gan_range

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    torch.manual_seed(0)
    last = make_encoder("dcgan", space, width=4, norm="none").eval()
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    x = to_gan_range(obs.float())
    maps = []
    for i in range(4):  # conv, LeakyReLU per layer with norm=none
        x = last.trunk[2 * i + 1](last.trunk[2 * i](x))
        maps.append(x.flatten(1))
    for layer, (size, channels) in enumerate(((32, 4), (16, 8), (8, 16), (4, 32)), start=1):
        encoder = make_encoder("dcgan", space, width=4, norm="none", features=f"layer{layer}").eval()
        encoder.load_state_dict(last.state_dict())
        out = encoder(obs)
        assert encoder.features_dim == size * size * channels == out.shape[1]
        torch.testing.assert_close(out, maps[layer - 1])
    torch.testing.assert_close(maps[-1], last(obs))  # layer4 is "last"
    with pytest.raises(RLKitError, match="layer1, layer2"):
        make_encoder("dcgan", space, width=4, features="layer5")


def test_dcgan_multi_layer_features_and_disc_lr(tmp_path):
    import torch.nn.functional as F

    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.gan import GANConfig, GANPretrainer, to_gan_range

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    torch.manual_seed(0)
    last = make_encoder("dcgan", space, width=4)
    multi = make_encoder("dcgan", space, width=4, features="multi")
    multi.load_state_dict(last.state_dict())  # same weights: one encoder file serves both feature modes
    last.eval(), multi.eval()
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    out = multi(obs)
    assert multi.features_dim == 4 * 16 * (1 + 2 + 4 + 8) and out.shape == (3, multi.features_dim)
    # the last block of the multi features is the last map (already 4x4, max-pooling keeps it)
    torch.testing.assert_close(out[:, -8 * 4 * 16 :], last(obs))
    # the first block is the first layer's 32x32 map max-pooled to 4x4
    first = last.trunk[1](last.trunk[0](to_gan_range(obs.float())))
    torch.testing.assert_close(out[:, : 4 * 16], F.max_pool2d(first, 8).flatten(1))
    with pytest.raises(RLKitError, match="features='mean' is not valid"):
        make_encoder("dcgan", space, features="mean")
    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    trainer = GANPretrainer(GANConfig(encoder_kwargs={"width": 4}, batch_size=4, disc_lr=1e-3), data, None,
                            torch.device("cpu"))
    assert trainer.optimizers["discriminator"].param_groups[0]["lr"] == 1e-3
    assert trainer.optimizers["generator"].param_groups[0]["lr"] == 2e-4


def test_r1_penalty_matches_hand_computed_gradient_norm_and_trains(tmp_path):
    from rlkit.vision.gan import GANConfig, GANPretrainer, r1_penalty

    # a linear discriminator x -> x.w has gradient w at every input: R1 = |w|^2 for every row
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x = torch.randn(5, 1, 2, 2, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    torch.testing.assert_close(r1_penalty(logits, x), torch.tensor(1.0 + 4.0 + 0.25 + 9.0))
    # a quadratic one, x -> sum(x^2): gradient 2x, R1 = mean over rows of 4|x|^2
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    expected = (4 * x.detach().pow(2).flatten(1).sum(1)).mean()
    torch.testing.assert_close(r1_penalty(x.pow(2).flatten(1).sum(1), x), expected)
    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4, "norm": "none"}, batch_size=4, instance_noise=0.0, real_label=1.0,
                       r1_gamma=10.0)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    losses = trainer.train_step(0)
    assert losses["r1"] > 0 and all(np.isfinite(v) for v in losses.values())
    assert "r1" not in GANPretrainer(dataclasses.replace(config, r1_gamma=0.0), data, None,
                                     torch.device("cpu")).train_step(0)
    from rlkit.errors import RLKitError

    with pytest.raises(RLKitError, match="r1_gamma must be >= 0"):
        GANPretrainer(dataclasses.replace(config, r1_gamma=-1.0), data, None, torch.device("cpu"))


def test_dcgan_motion_channels_are_absolute_frame_differences(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.gan import to_gan_range

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    torch.manual_seed(0)
    encoder = make_encoder("dcgan", space, width=4, motion=True).eval()
    assert encoder.trunk[0].in_channels == 4 + 3
    x = torch.rand(2, 4, 64, 64) * 2 - 1
    x[:, 2] = x[:, 1]  # frames 1 and 2 equal: their motion channel is -1 (static) everywhere
    stacked = encoder.with_motion(x)
    torch.testing.assert_close(stacked[:, :4], x)
    torch.testing.assert_close(stacked[:, 4], (x[:, 1] - x[:, 0]).abs() - 1)
    assert torch.equal(stacked[:, 5], torch.full_like(x[:, 0], -1.0))
    # the encoder applies them itself: uint8 frames in, the same map as the trunk on the stacked input
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(encoder(obs), encoder.trunk(encoder.with_motion(to_gan_range(obs))).flatten(1))
    multi = make_encoder("dcgan", space, width=4, motion=True, features="multi")
    assert multi(obs).shape == (2, multi.features_dim)
    with pytest.raises(RLKitError, match="motion=true needs a stack of frames"):
        make_encoder("dcgan", gym.spaces.Box(0, 255, (1, 84, 84), np.uint8), motion=True)


def test_gan_diffaugment_translation_and_cutout(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, cutout, translate

    x = torch.arange(2 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    shifted = translate(x, torch.tensor([[1, 0], [0, -2]]))
    # image 0 moves down one row (top row filled with -1), image 1 moves left two columns
    assert torch.equal(shifted[0, 0, 1:], x[0, 0, :-1]) and torch.equal(shifted[0, 0, 0], torch.full((5,), -1.0))
    assert torch.equal(shifted[1, 0, :, :3], x[1, 0, :, 2:]) and torch.equal(shifted[1, 0, :, 3:], -torch.ones(5, 2))
    assert torch.equal(translate(x, torch.zeros(2, 2, dtype=torch.long)), x)
    x.requires_grad_(True)
    translate(x, torch.tensor([[1, 0], [0, -2]])).sum().backward()  # differentiable: pixels kept get gradient 1
    assert x.grad[0, 0, :4].eq(1).all() and x.grad[0, 0, 4].eq(0).all()
    holes = cutout(torch.ones(1, 1, 8, 8), torch.tensor([[3, 5]]), 4)
    assert holes.sum() == 64 - 16 and holes[0, 0, 1:5, 3:7].eq(0).all()
    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4, "motion": True}, batch_size=4, augment="translation,cutout")
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    _, extras = trainer.global_batch(0)
    assert extras["shift"].shape == (4, 2, 2) and extras["shift"].abs().max() <= 8
    assert extras["cutout"].shape == (4, 2, 2)
    assert all(np.isfinite(v) for v in trainer.train_step(0).values())
    with pytest.raises(RLKitError, match="unknown augmentations \\['flip'\\]"):
        GANPretrainer(dataclasses.replace(config, augment="translation,flip"), data, None, torch.device("cpu"))


def test_gan_feature_matching_generator_loss(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, feature_matching_loss

    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # batch means (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 1.0]], requires_grad=True)  # batch means (1, 0.5)
    loss = feature_matching_loss(real, fake)
    torch.testing.assert_close(loss, torch.tensor(((2 - 1) ** 2 + (3 - 0.5) ** 2) / 2))
    loss.backward()  # d/dfake[n, j] = 2 (mean_fake_j - mean_real_j) / (D N)
    torch.testing.assert_close(fake.grad, torch.tensor([[-0.5, -1.25], [-0.5, -1.25]]))
    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, generator_loss="feature_matching")
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    losses = trainer.train_step(0)
    assert all(np.isfinite(v) for v in losses.values()) and losses["g"] >= 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.generator.parameters()))
    with pytest.raises(RLKitError, match="generator_loss='wgan' is not valid"):
        GANPretrainer(dataclasses.replace(config, generator_loss="wgan"), data, None, torch.device("cpu"))


def test_gan_gradient_penalty_matches_hand_computed_values():
    from rlkit.vision.gan import gradient_penalty

    real = torch.tensor([[[[3.0, 0.0]]], [[[0.0, 2.0]]]])  # (2, 1, 1, 2)
    fake = torch.zeros_like(real)
    mix = torch.tensor([0.5, 1.0]).view(2, 1, 1, 1)
    # critic(x) = 0.5 |x|^2 has gradient x: at the mixes (1.5, 0) and (0, 2), norms 1.5 and 2
    penalty = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, fake, mix)
    torch.testing.assert_close(penalty, torch.tensor(((1.5 - 1) ** 2 + (2 - 1) ** 2) / 2))
    weight = torch.tensor([3.0, 4.0], requires_grad=True)  # a linear critic: gradient norm 5 everywhere
    penalty = gradient_penalty(lambda x: (x.flatten(1) * weight).sum(1), real, fake, mix)
    torch.testing.assert_close(penalty, torch.tensor(16.0))
    penalty.backward()  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(weight.grad, torch.tensor([2 * 4 * 3 / 5, 2 * 4 * 4 / 5]))


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_gan_hinge_and_wgan_losses_train_with_critic_steps(tmp_path, loss):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, loss=loss, critic_steps=2, instance_noise=0.0)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    generator = [p.detach().clone() for p in trainer.generator.parameters()]
    disc = [p.detach().clone() for p in trainer.discriminator.parameters()]
    first = trainer.train_step(0)  # a critic step only
    assert "g" not in first and {"d", "score_real", "score_fake"} <= set(first)
    assert ("gp" in first) == (loss == "wgan-gp") and "d_real" not in first
    assert all(torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(disc, trainer.discriminator.parameters()))
    second = trainer.train_step(1)  # critic, then generator
    assert all(np.isfinite(v) for v in second.values()) and "g" in second
    assert any(not torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters()))
    if loss == "hinge":  # each hinge term is >= 0
        assert second["d"] >= 0
    with pytest.raises(RLKitError, match="loss='lsgan' is not valid; choose one of: bce, hinge, wgan-gp"):
        GANPretrainer(dataclasses.replace(config, loss="lsgan"), data, None, torch.device("cpu"))
    with pytest.raises(RLKitError, match="critic_steps >= 1"):
        GANPretrainer(dataclasses.replace(config, critic_steps=0), data, None, torch.device("cpu"))


def test_probe_linear_label_scores_one_and_random_label_chance():
    from rlkit.vision.probe import probe_features

    rng = np.random.default_rng(0)
    features, labels = {}, {}
    for split, n in (("train", 1500), ("val", 300), ("test", 500)):
        value = rng.integers(0, 10, n)
        pixels = np.concatenate([np.eye(10)[value], rng.random((n, 6))], axis=1).astype(np.float32)
        features[split] = pixels  # label 'linear' = sum_k k * pixel_k: a linear function of the pixels
        labels[split] = np.stack([value, rng.integers(0, 10, n)], axis=1)
    scores = probe_features(features, labels, ["linear", "random"], max_epochs=30, patience=5)
    assert scores["linear"]["f1_weighted"] > 0.98
    assert scores["random"]["f1_weighted"] < 0.25  # chance is 0.1


def _norm_head_gradients(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradients of a tiny Linear-ReLU-GlobalBatchNorm-Linear net's cross-entropy on (x, y)."""
    from rlkit.vision.supervised import GlobalBatchNorm1d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), GlobalBatchNorm1d(5), torch.nn.Linear(5, 3))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


NORM_X, NORM_Y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3


def _ddp_worker(rank: int, world: int, rendezvous: str, data_dir: str, run_dir: str, overrides: list[str]) -> None:
    import torch.distributed as dist

    from rlkit.vision.pretrain import leave_process_group, run_pretrain

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    run_pretrain("supervised", data_dir, overrides, run_dir, rank=rank, world=world)
    grads = _norm_head_gradients(NORM_X[rank * 4 : (rank + 1) * 4], NORM_Y[rank * 4 : (rank + 1) * 4])
    dist.all_reduce(grads)
    if rank == 0:
        torch.save(grads / world, Path(run_dir) / "norm_grads.pt")
    dist.barrier()
    leave_process_group(0)  # as `torchrun -m rlkit.vision.pretrain` ends: gloo's teardown once aborted a rank here


def test_data_parallel_matches_single_process(tmp_path):
    from safetensors.torch import load_file

    from rlkit.vision.pretrain import run_pretrain

    data_dir = str(make_dataset(tmp_path / "d"))
    # head_norm off: with it, some gradients are exactly zero in exact arithmetic (a bias followed by
    # BatchNorm), and Adam's first steps turn their rounding noise into +-lr updates; GlobalBatchNorm1d's
    # gradients are checked separately below.
    overrides = ["encoder=nature_cnn_small", "steps=3", "batch_size=8", "torch_threads=1", "lr=3e-3",
                 "eval_frames=8", "head_norm=false", "shift=2"]
    single = run_pretrain("supervised", data_dir, overrides, tmp_path / "single")
    rendezvous = str(tmp_path / "rendezvous")  # a file, not a TCP port that another process could take first
    torch.multiprocessing.spawn(_ddp_worker, args=(2, rendezvous, data_dir, str(tmp_path / "ddp"), overrides),
                                nprocs=2, join=True)
    a = load_file(str(tmp_path / "single" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "encoder.safetensors"))
    from rlkit.vision.encoders import make_encoder

    torch.manual_seed(0)  # the run's seed: its initial weights
    initial = make_encoder("nature_cnn_small", gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)).state_dict()
    assert all(not torch.equal(a[k], initial[k]) for k in a)  # three steps moved every weight
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # BatchNorm over the global batch: 2 processes x 4 samples give the gradients of 1 process x 8
    torch.testing.assert_close(torch.load(tmp_path / "ddp" / "norm_grads.pt"), _norm_head_gradients(NORM_X, NORM_Y),
                               rtol=1e-5, atol=1e-6)
    ddp_metrics = (tmp_path / "ddp" / "metrics.json").read_text()
    assert '"eval/loss"' in ddp_metrics and single["step"] == 3


def test_leave_process_group_flushes_output_and_keeps_the_exit_code():
    code = ("import sys; from rlkit.vision.pretrain import leave_process_group; "
            "print('rank done', end=''); print('warned', end='', file=sys.stderr); leave_process_group(3)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (3, "rank done", "warned")


def test_supervised_resume_continues_exactly_and_encoder_file_loads(tmp_path):
    from safetensors.torch import load_file

    from rlkit.vision.io import load_encoder
    from rlkit.vision.pretrain import run_pretrain

    data_dir = str(make_dataset(tmp_path / "d"))
    common = ["encoder=nature_cnn_small", "batch_size=8", "torch_threads=1", "eval_frames=8", "shift=2"]
    run_pretrain("supervised", data_dir, common + ["steps=4"], tmp_path / "straight")
    run_pretrain("supervised", data_dir, common + ["steps=2"], tmp_path / "split")
    run_pretrain(None, None, ["steps=4"], resume=tmp_path / "split")
    a = load_file(str(tmp_path / "straight" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "split" / "encoder.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    encoder = load_encoder(tmp_path / "straight" / "encoder.safetensors", space)
    card = encoder.card
    assert card["method"] == "supervised" and card["encoder"] == "nature_cnn_small" and card["steps"] == 4
    assert card["manifest_sha256"] and "eval/bright/f1_macro" in card["metrics"]
    assert (tmp_path / "straight" / "confusion" / "bright.npy").is_file()
    assert encoder(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, encoder.features_dim)
    regress = run_pretrain("supervised", data_dir, common + ["steps=2", "target=regress"], tmp_path / "regress")
    assert set(regress["metrics"]) >= {"eval/bright/r2", "eval/mean_r2"}


def test_gan_resume_keeps_the_instance_noise_schedule_it_began_with(tmp_path):
    """Instance noise decays to 0 at ``instance_noise_steps``, which a new run records (its ``steps``): a run resumed
    with more steps keeps that schedule, and with the horizon given up front, 2 steps + resume to 4 is exactly a
    straight 4-step run."""
    import yaml
    from safetensors.torch import load_file

    from rlkit.vision.pretrain import run_pretrain

    data_dir = str(make_dataset(tmp_path / "d", frames=20, episodes=4))
    common = ["encoder_kwargs.width=4", "batch_size=4", "fd_samples=8", "torch_threads=1", "instance_noise=0.2",
              "eval_every=0", "checkpoint_every=0"]
    run_pretrain("gan", data_dir, common + ["steps=4"], tmp_path / "straight")
    run_pretrain("gan", data_dir, common + ["steps=2", "instance_noise_steps=4"], tmp_path / "split")
    run_pretrain(None, None, ["steps=4"], resume=tmp_path / "split")
    a = load_file(str(tmp_path / "straight" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "split" / "encoder.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    run_pretrain("gan", data_dir, common + ["steps=2"], tmp_path / "short")
    saved = yaml.safe_load((tmp_path / "short" / "config.yaml").read_text())["config"]
    assert saved["instance_noise_steps"] == 2  # recorded: a resume to 4 steps does not bring the noise back


def test_gan_terms_over_the_whole_batch_are_refused_under_data_parallel(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    base = {"encoder_kwargs": {"width": 4}, "batch_size": 4, "fd_samples": 8}
    for option in ({"minibatch_std": True}, {"generator_loss": "feature_matching"}, {"contrastive_weight": 1.0}):
        with pytest.raises(RLKitError, match="computed over the whole batch"):
            GANPretrainer(GANConfig(**base, **option), data, None, torch.device("cpu"), rank=0, world=2)
        GANPretrainer(GANConfig(**base, **option), data, None, torch.device("cpu"))  # one process: fine


def test_probe_cli_writes_table_and_json(tmp_path, capsys):
    data_dir = make_dataset(tmp_path / "d", frames=60, episodes=6)
    code = main(["probe", "--encoder", "random", "--encoder-name", "nature_cnn_small", "--data", str(data_dir),
                 "--out", str(tmp_path / "p"), "--epochs", "5", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "bright" in out and "mean" in out and (tmp_path / "p" / "probe.json").is_file()


def test_probe_cli_set_reads_the_encoder_another_way(tmp_path, capsys):
    data_dir = make_dataset(tmp_path / "d", frames=60, episodes=6)
    code = main(["probe", "--encoder", "random", "--encoder-name", "dcgan", "--data", str(data_dir), "--out",
                 str(tmp_path / "p"), "--epochs", "2", "--threads", "1", "--set", "width=4", "--set",
                 "features=layer3"])
    assert code == 0
    record = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert record["overrides"] == {"width": 4, "features": "layer3"}
    assert record["card"]["encoder_kwargs"]["features"] == "layer3"
    capsys.readouterr()
    assert main(["probe", "--encoder", "random", "--encoder-name", "dcgan", "--data", str(data_dir),
                 "--set", "features"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad --set 'features'") and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "supervised", "--data", "/nonexistent/data"], "does not exist"),
        (["pretrain", "nosuch", "--data", "/nonexistent/data"], "unknown pretraining method 'nosuch'"),
        (["pretrain", "supervised"], "needs --data"),
        (["probe", "--encoder", "random", "--data", "/nonexistent/data", "--encoder-name", "nature_cnn"],
         "does not exist"),
        (["collect", "--env", "ALE/Pongg-v5", "--steps", "5", "--out", "/tmp/x"], "unknown env id"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("damage", ["truncated", "empty", "fewer_frames", "not_safetensors"])
def test_damaged_dataset_chunk_is_a_one_line_error(tmp_path, capsys, damage):
    """A chunk cut short, emptied, rewritten with fewer frames than the manifest lists, or overwritten with text:
    probe and pretrain stop with one line naming the file and the fix, not a traceback."""
    from rlkit.checkpoint import save_arrays
    from rlkit.vision.data import memmap_safetensors

    data_dir = make_dataset(tmp_path / "d", frames=30, episodes=3)
    chunk = data_dir / "chunk_000001.safetensors"
    if damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    elif damage == "empty":
        chunk.write_bytes(b"")
    elif damage == "fewer_frames":
        save_arrays(chunk, {key: np.asarray(value)[:5] for key, value in memmap_safetensors(chunk).items()})
    else:
        chunk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    for argv in (["probe", "--encoder", "random", "--encoder-name", "nature_cnn", "--data", str(data_dir),
                  "--epochs", "1", "--out", str(tmp_path / f"probe-{damage}")],
                 ["pretrain", "supervised", "--data", str(data_dir), "--steps", "1", "--run-dir",
                  str(tmp_path / f"run-{damage}")]):
        capsys.readouterr()
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "chunk_000001.safetensors" in err and "collect it again" in err


def test_metrics_reference_values():
    from rlkit.vision.metrics import f1_scores, frechet_distance, r2_score

    # scikit-learn: f1_score([0,1,2,0,1,2], [0,2,1,0,0,1], average=macro) = 0.2667, weighted 0.2667
    scores = f1_scores(np.array([0, 1, 2, 0, 1, 2]), np.array([0, 2, 1, 0, 0, 1]))
    assert scores["f1_macro"] == pytest.approx(0.26667, abs=1e-4) and scores["accuracy"] == pytest.approx(1 / 3)
    assert r2_score(np.array([1, 2, 3]), np.array([1, 2, 3])) == 1.0
    # imbalanced, by hand: per-class F1 0.8 (support 3), 0.5 (2), 2/3 (1); macro 0.65556, weighted 0.67778
    scores = f1_scores(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2]))
    assert scores["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores["f1_weighted"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)
    # 1 - 1.5 / 29.1875 (scikit-learn's r2_score example)
    assert r2_score(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])) == pytest.approx(0.948608, abs=1e-6)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # N(0, I) vs N(1, 4I) in 3-d: 3 * 1 + 3 * (1 + 4 - 2 * 2) = 6
    assert frechet_distance(a, 1 + 2 * rng.normal(size=(4000, 3))) == pytest.approx(6, rel=0.1)


def test_dataset_obs_space_and_split_errors(tmp_path):
    from rlkit.errors import RLKitError

    data = FrameDataset(make_dataset(tmp_path / "d"), "train")
    assert data.observation_space() == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    with pytest.raises(RLKitError, match="unknown split"):
        FrameDataset(tmp_path / "d", "training")


def _mae(tmp_path, **config):
    from rlkit.vision.mae import MAEConfig, MAEPretrainer

    data_dir = make_dataset(tmp_path / "d", frames=20, episodes=4, shape=(2, 16, 16))
    cfg = MAEConfig(encoder_kwargs={"patch_size": 4, "width": 16, "depth": 1, "heads": 2}, batch_size=4,
                    decoder_width=16, decoder_depth=1, decoder_heads=2, **config)
    return MAEPretrainer(cfg, FrameDataset(data_dir, "train"), None, torch.device("cpu"))


def test_mae_masks_exact_fraction_and_scores_only_masked_patches(tmp_path):
    from rlkit.vision.mae import masked_patch_loss

    trainer = _mae(tmp_path)
    obs, _ = trainer.data.batch(np.arange(4))
    x = trainer.vit.preprocess(obs).contiguous()
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    pred, mask, tokens = trainer.forward(x, noise)
    assert trainer.vit.num_patches == 16 and pred.shape == (4, 16, 4 * 4 * 2)
    assert torch.equal(mask.sum(1), torch.full((4,), 12.0))  # 75% of 16 patches hidden, per sample
    assert tokens.shape == (4, 1 + 4, 16)  # CLS + the 4 visible patches only
    target = trainer.targets(x)
    loss = masked_patch_loss(pred, target, mask)
    visible, hidden = mask == 0, mask == 1
    changed = target.clone()
    changed[visible] += 5.0
    assert torch.equal(masked_patch_loss(pred, changed, mask), loss)
    changed = target.clone()
    changed[hidden] += 5.0
    assert masked_patch_loss(pred, changed, mask) > loss + 1
    # the encoder never sees hidden patches: changing their pixels leaves its tokens unchanged
    from rlkit.vision.vit import patchify, unpatchify

    patches = patchify(x, 4)
    patches[hidden] = torch.rand_like(patches[hidden])
    x2 = unpatchify(patches, 4, 2, (4, 4))
    _, _, tokens2 = trainer.forward(x2, noise)
    torch.testing.assert_close(tokens2, tokens)


def test_mae_train_step_and_norm_pix(tmp_path):
    trainer = _mae(tmp_path, norm_pix_loss=True)
    before = [p.clone() for p in trainer.model.parameters()]
    losses = trainer.train_step(0)
    assert np.isfinite(losses["mae"])
    assert sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters())) > len(before) // 2


def test_mae_visible_loss_weight_and_foreground_weight(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.mae import background_frame, masked_patch_loss

    pred, target = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    target[:, 2:] = 1.0  # error only on the visible patches
    assert masked_patch_loss(pred, target, mask) == 0
    assert masked_patch_loss(pred, target, mask, visible_weight=1.0) == pytest.approx(0.5)
    weight = torch.ones(2, 4, 3)
    weight[:, 2:, 0] = 4.0  # one pixel of each visible patch counts 4x: its patch MSE (4 + 1 + 1) / 3 = 2
    assert masked_patch_loss(pred, target, mask, weight, visible_weight=1.0) == pytest.approx(1.0)
    frames = np.zeros((5, 1, 2, 2))
    frames[0, 0, 0, 0] = frames[1, 0, 1, 1] = 1.0  # a "ball" in two frames: not background
    assert np.array_equal(background_frame(frames), np.zeros((1, 2, 2)))

    trainer = _mae(tmp_path, foreground_weight=9.0, visible_loss_weight=0.5)
    assert trainer.background is not None and trainer.background.shape == (1, 16, 4 * 4 * 2)
    obs, _ = trainer.data.batch(np.arange(4))
    x = trainer.vit.preprocess(obs).contiguous()
    w = trainer.pixel_weight(x)
    from rlkit.vision.vit import patchify

    fg = (patchify(x, 4) - trainer.background).abs() > trainer.config.foreground_threshold
    assert w.shape == (4, 16, 32) and torch.equal(w, 1 + 9 * fg.float())
    assert _mae(tmp_path / "off").pixel_weight(x) is None
    assert np.isfinite(trainer.train_step(0)["mae"])
    with pytest.raises(RLKitError, match=">= 0"):
        _mae(tmp_path / "bad", visible_loss_weight=-1.0)


def test_mae_decoder_positions_on_mask_tokens_only(tmp_path):
    trainer = _mae(tmp_path, decoder_visible_pos=False)
    decoder = trainer.decoder
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    from rlkit.vision.mae import random_masking

    _, mask, restore = random_masking(noise, 0.75)
    tokens = torch.randn(2, 1 + 4, 16)  # CLS + 4 visible
    out = decoder(tokens, restore)
    # changing the decoder's positional embedding at a visible patch changes nothing; at a hidden one it does
    vis = int((mask[0] == 0).nonzero()[0])
    hid = int((mask[0] == 1).nonzero()[0])
    with torch.no_grad():
        decoder.pos_embed[0, vis] += 10.0
    torch.testing.assert_close(decoder(tokens, restore)[0], out[0])
    with torch.no_grad():
        decoder.pos_embed[0, hid] += 10.0
    assert not torch.allclose(decoder(tokens, restore)[0], out[0])
    assert np.isfinite(trainer.train_step(0)["mae"])


def test_mae_newest_frame_masking(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.vit import patchify, unpatchify

    trainer = _mae(tmp_path, mask_frames="newest")  # 2-frame stacks, 16 patches of 4x4
    obs, _ = trainer.data.batch(np.arange(4))
    x = trainer.vit.preprocess(obs).contiguous()
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    pred, mask, tokens = trainer.forward(x, noise)
    assert torch.equal(mask.sum(1), torch.full((4,), 12.0))
    assert tokens.shape == (4, 1 + 16, 16)  # CLS + every patch
    # the encoder's input: the newest frame is 0 in exactly the hidden patches, everything else is untouched
    blanked = patchify(trainer.blank_newest(x, mask), 4).view(4, 16, 16, 2)  # (B, N, pixels, channels)
    original = patchify(x, 4).view(4, 16, 16, 2)
    hidden = mask.bool()
    assert torch.equal(blanked[..., 0], original[..., 0])
    assert torch.equal(blanked[~hidden][..., 1], original[~hidden][..., 1])
    assert torch.all(blanked[hidden][..., 1] == 0)
    # changing the hidden patches' newest frame leaves the tokens unchanged; their older frame does not
    patches = patchify(x, 4).view(4, 16, 16, 2).clone()
    patches[hidden] = patches[hidden] + torch.stack([torch.zeros(16), torch.rand(16)], -1)
    _, _, same = trainer.forward(unpatchify(patches.view(4, 16, 32), 4, 2, (4, 4)), noise)
    torch.testing.assert_close(same, tokens)
    # the loss scores the newest frame of hidden patches only
    loss = trainer.loss(x, pred, mask)
    for where, channel, moves in ((hidden, 0, False), (~hidden, 1, False), (hidden, 1, True)):
        changed = pred.view(4, 16, 16, 2).clone()
        changed[where] = changed[where] + torch.nn.functional.one_hot(torch.tensor(channel), 2) * 3.0
        new = trainer.loss(x, changed.view(4, 16, 32), mask)
        assert (new > loss + 1) if moves else torch.equal(new, loss)
    assert np.isfinite(trainer.train_step(0)["mae"])
    from rlkit.config import build_config
    from rlkit.vision.mae import MAEConfig, MAEPretrainer

    with pytest.raises(RLKitError, match="mask_frames='last' is not valid"):
        build_config(MAEConfig, {"mask_frames": "last"}, source="mae config")
    single_frames = FrameDataset(make_dataset(tmp_path / "one", frames=20, episodes=4, shape=(1, 16, 16)), "train")
    with pytest.raises(RLKitError, match="mask_frames=newest needs frame stacks"):
        MAEPretrainer(MAEConfig(mask_frames="newest", encoder_kwargs={"patch_size": 4}), single_frames, None,
                      torch.device("cpu"))


def test_recard_script_reads_same_weights_with_new_pooling(tmp_path):
    import runpy

    from rlkit.errors import RLKitError
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.io import load_encoder, save_encoder

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    torch.manual_seed(0)
    mean = make_encoder("vit", space, pool="mean", depth=1)
    save_encoder(tmp_path / "mean.safetensors", mean, {"method": "mae"})
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "vision_recard.py"))
    script["main"](str(tmp_path / "mean.safetensors"), str(tmp_path / "grid.safetensors"), {"pool": "grid"})
    grid = load_encoder(tmp_path / "grid.safetensors", space)
    assert grid.card["encoder_kwargs"]["pool"] == "grid" and grid.card["method"] == "mae"
    assert grid.features_dim == 192 * 16
    for a, b in zip(mean.state_dict().values(), grid.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(RLKitError, match="does not fit"):  # CLS pooling adds a parameter: refused
        script["main"](str(tmp_path / "mean.safetensors"), str(tmp_path / "cls.safetensors"), {"pool": "cls"})


def test_collect_with_trained_policy_run_dir(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "dqn", "--env", "CartPole-v1", "--total-steps", "150", "--run-dir", str(run),
                 "--set", "learning_starts=50", "--set", "eval_every=150", "--set", "eval_episodes=1"]) == 0
    out = tmp_path / "frames"
    assert main(["collect", "--env", "CartPole-v1", "--steps", "20", "--policy", str(run), "--epsilon", "0",
                 "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert str(run) in manifest["policy"] and manifest["obs_shape"] == [1, 84, 84]
    assert main(["collect", "--env", "ALE/Pong-v5", "--steps", "5", "--policy", str(run), "--out",
                 str(tmp_path / "x")]) == 2  # trained on CartPole, not Pong


def test_collect_with_a_recurrent_policy_carries_its_state(tmp_path, monkeypatch):
    """A ppo_lstm policy keeps its LSTM state from step to step while collecting, and starts each episode afresh
    (it used to be called without a state, so every step began from zeros)."""
    from rlkit.agents.recurrent_ppo import RecurrentPPO

    run = tmp_path / "lstm"
    assert main(["train", "ppo_lstm", "--env", "CartPole-v1", "--total-steps", "256", "--run-dir", str(run),
                 "--set", "num_envs=2", "--set", "rollout_steps=64", "--set", "minibatches=2",
                 "--set", "eval_every=0", "--set", "eval_episodes=1", "--set", "torch_threads=1"]) == 0
    calls: list[tuple[bool, bool]] = []
    act = RecurrentPPO.act

    def recording_act(self, observations, *args, state=None, episode_start=None, **kwargs):
        calls.append((state is not None, bool(np.asarray(episode_start).any()) if episode_start is not None else None))
        return act(self, observations, *args, state=state, episode_start=episode_start, **kwargs)

    monkeypatch.setattr(RecurrentPPO, "act", recording_act)
    assert main(["collect", "--env", "CartPole-v1", "--steps", "30", "--episode-steps", "12", "--policy", str(run),
                 "--out", str(tmp_path / "frames")]) == 0
    assert len(calls) == 30 and all(has_state for has_state, _ in calls)
    assert [start for _, start in calls] == [t % 12 == 0 for t in range(30)]


def test_gan_next_frame_condition(tmp_path):
    """condition=past: the generator keeps the real older frames, starts as a copy of the last one, and its
    loss is the adversarial loss plus l1_weight times the newest-frame L1."""
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, NextFrameGenerator, to_gan_range

    generator = NextFrameGenerator(4, width=4, z_dim=8)
    past = torch.rand(3, 3, 64, 64) * 2 - 1
    out = generator(past, torch.randn(3, 8))
    assert out.shape == (3, 1, 64, 64) and out.abs().max() < 1
    torch.nn.init.zeros_(generator.out.weight)  # no change predicted: an exact copy of the newest past frame
    torch.testing.assert_close(generator(past, torch.randn(3, 8)), past[:, -1:].clamp(-0.999, 0.999))

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, condition="past", l1_weight=0.0)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    assert isinstance(trainer.generator, NextFrameGenerator)
    indices, extras = trainer.global_batch(0)
    real = to_gan_range(data.batch(indices)[0])
    fake = trainer.generate(extras["z"], real)
    assert fake.shape == real.shape and torch.equal(fake[:, :-1], real[:, :-1])
    assert not torch.equal(fake[:, -1], real[:, -1])
    plain = trainer.train_step(0)
    weighted = GANPretrainer(dataclasses.replace(config, l1_weight=10.0), data, None, torch.device("cpu")).train_step(0)
    # same init, batch and discriminator step, so the generator losses differ by exactly the L1 term
    assert plain["d"] == pytest.approx(weighted["d"]) and plain["l1"] == pytest.approx(weighted["l1"])
    assert weighted["g"] - plain["g"] == pytest.approx(10.0 * plain["l1"], rel=1e-5)
    assert plain["l1"] == pytest.approx((fake[:, -1] - real[:, -1]).abs().mean().item(), rel=1e-5)
    assert trainer.samples(6).shape == (6, 4, 64, 64)
    with pytest.raises(RLKitError, match="condition='next' is not valid"):
        GANPretrainer(dataclasses.replace(config, condition="next"), data, None, torch.device("cpu"))
    single = FrameDataset(make_dataset(tmp_path / "one", frames=20, episodes=4, shape=(1, 84, 84)), "train")
    with pytest.raises(RLKitError, match="1 channel"):
        GANPretrainer(config, single, None, torch.device("cpu"))


def test_gan_label_condition_projects_labels_onto_the_features(tmp_path):
    """condition=labels: the generator draws a stack for given labels, the discriminator's logit is the
    unconditional one plus the inner product of the labels' embeddings with the flattened trunk map
    (projection discriminator), and only the rows of the labels in the batch move."""
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, LabelGenerator, to_gan_range

    generator = LabelGenerator(4, labels=2, width=4, z_dim=8, embedding=3)
    z = torch.randn(2, 8)
    same = generator(z, torch.tensor([[1, 2], [1, 2]]))
    assert same.shape == (2, 4, 64, 64)
    generator.eval()  # BatchNorm in eval mode: each row's output depends on its own inputs only
    a, b = generator(z[:1], torch.tensor([[1, 2]])), generator(z[:1], torch.tensor([[1, 3]]))
    assert not torch.allclose(a, b) and torch.equal(a, generator(z[:1], torch.tensor([[1, 2]])))

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, condition="labels",
                       label_embedding=3)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    table = trainer.label_projection.table.weight
    assert table.shape == (2 * 256, 4 * 8 * 16) and not table.any()  # starts as the unconditional DCGAN
    indices, extras = trainer.global_batch(0)
    obs, labels = data.batch(indices)
    features = trainer.disc.trunk_map(to_gan_range(obs))
    with torch.no_grad():
        table.normal_()
        unconditional = trainer.disc_head(features).view(-1)
        by_hand = unconditional + torch.stack([
            sum(table[label * 256 + value] for label, value in enumerate(row.tolist())) @ features[i].flatten()
            for i, row in enumerate(labels)
        ])
        torch.testing.assert_close(trainer.head_logits(features, labels), by_hand)
        table.zero_()
    metrics = trainer.train_step(0)
    assert np.isfinite(metrics["d"]) and np.isfinite(metrics["g"])
    used = {label * 256 + value for row in labels.tolist() for label, value in enumerate(row)}
    moved = set(torch.nonzero(table.abs().sum(1)).flatten().tolist())
    assert moved == used  # the rows of the labels in the batch, and no others
    assert trainer.samples(6).shape == (6, 4, 64, 64)  # conditioned on the labels of fixed dataset frames

    def blank_frames(path: Path, names: list[str], labels: list[list[int]]) -> FrameDataset:
        writer = ChunkWriter(path, 10, {"env_id": "synthetic", "labels": names, "color": False})
        for i, row in enumerate(labels):
            writer.add(obs=np.zeros((4, 84, 84), np.uint8), labels=np.array(row, np.int64), episode=i // 4,
                       step=i % 4, action=np.int64(0), reward=np.float32(0))
        writer.close({"obs_shape": [4, 84, 84], "obs_dtype": "uint8",
                      "episodes": [{"id": e, "frames": 4, "split": "train"} for e in range(len(labels) // 4)]})
        return FrameDataset(path, "train")

    with pytest.raises(RLKitError, match="needs ground-truth labels"):
        GANPretrainer(config, blank_frames(tmp_path / "none", [], [[]] * 8), None, torch.device("cpu"))
    with pytest.raises(RLKitError, match="label values in 0-255"):
        GANPretrainer(config, blank_frames(tmp_path / "wide", ["x"], [[300 * i] for i in range(8)]), None,
                      torch.device("cpu"))


def test_gan_discriminator_reconstruction_and_its_ablation(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, reconstruction_loss

    recon, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[0.0, 0.5], [1.0, -1.0]]]])
    torch.testing.assert_close(reconstruction_loss(recon, target, None, 20.0), torch.tensor((0.25 + 1 + 1) / 4))
    background = torch.tensor([[[[0.0, 0.5], [0.0, 0.0]]]])  # pixels 3 and 4 are foreground: weight 1 + 2
    torch.testing.assert_close(reconstruction_loss(recon, target, background, 2.0),
                               torch.tensor((0 + 0.25 + 3 * 1 + 3 * 1) / (1 + 1 + 3 + 3)))

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, recon_weight=1.0)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    assert trainer.background.shape == (1, 4, 64, 64)
    assert "decoder" in trainer.discriminator
    losses = trainer.train_step(0)
    assert {"d", "g", "recon"} <= set(losses) and np.isfinite(losses["recon"])
    saved = trainer.encoder()  # the trunk only: no decoder weights in the encoder file
    assert not any("decoder" in name for name in saved.state_dict())

    ablation = GANPretrainer(dataclasses.replace(config, adversarial=False), data, None, torch.device("cpu"))
    generator = {k: v.clone() for k, v in ablation.generator.state_dict().items()}
    head = ablation.disc_head.weight.detach().clone()
    trunk = [p.detach().clone() for p in ablation.disc.parameters()]
    assert set(ablation.train_step(0)) == {"recon"}
    assert all(torch.equal(v, ablation.generator.state_dict()[k]) for k, v in generator.items())
    assert torch.equal(head, ablation.disc_head.weight.detach())
    assert all(not torch.equal(a, b) for a, b in zip(trunk, ablation.disc.parameters()))
    with pytest.raises(RLKitError, match="set recon_weight, uniformity_weight, contrastive_weight or temporal_weight"):
        GANPretrainer(dataclasses.replace(config, adversarial=False, recon_weight=0.0), data, None,
                      torch.device("cpu"))

    # the linear decoder: cell (i, j) of the 4x4 map alone draws the 16x16 patch (i, j), linearly before tanh
    linear = GANPretrainer(dataclasses.replace(config, recon_decoder="linear"), data, None, torch.device("cpu"))
    decoder = linear.recon_decoder
    features = torch.randn(1, 32, 4, 4)
    cell = torch.zeros_like(features)
    cell[:, :, 1, 2] = features[:, :, 1, 2]
    drawn = torch.atanh(decoder(cell).clamp(-0.999999, 0.999999)) - decoder.net[0].bias.view(1, -1, 1, 1)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[16:32, 32:48] = False
    assert drawn[..., outside].abs().max() < 1e-4 and drawn[..., ~outside].abs().max() > 1e-3
    assert decoder(features).shape == (1, 4, 64, 64) and np.isfinite(linear.train_step(0)["recon"])
    with pytest.raises(RLKitError, match="recon_decoder='wide' is not valid; choose one of: deep, linear"):
        GANPretrainer(dataclasses.replace(config, recon_decoder="wide"), data, None, torch.device("cpu"))


def test_gan_infogan_codes(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, z_dim=10, info_codes=3)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    latent = trainer.latent(500, torch.Generator().manual_seed(0))
    assert latent.shape == (500, 13)
    codes = latent[:, 10:]
    assert codes.min() >= -1 and codes.max() <= 1 and codes.mean().abs() < 0.1 and (codes.var() - 1 / 3).abs() < 0.05
    assert trainer.generator(latent[:4]).shape == (4, 4, 64, 64)
    features = torch.randn(4, 32, 4, 4)  # the trunk's 4x4x8k map at k=4
    predicted = features.flatten(1) @ trainer.info_head.weight.T + trainer.info_head.bias
    expected = ((predicted - latent[:4, 10:]) ** 2).mean()
    torch.testing.assert_close(trainer.info_loss(features, latent[:4]), expected)
    head = trainer.info_head.weight.detach().clone()
    losses = trainer.train_step(0)
    assert np.isfinite(losses["info"]) and not torch.equal(head, trainer.info_head.weight)
    assert trainer.samples(5).shape == (5, 4, 64, 64)
    assert trainer.encoder().features_dim == 8 * 4 * 16  # Q is not part of the saved encoder
    with pytest.raises(RLKitError, match="info_codes and info_weight must be >= 0"):
        GANPretrainer(dataclasses.replace(config, info_codes=-1), data, None, torch.device("cpu"))


def test_gan_orthogonal_regularisation(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, orthogonal_penalty

    conv = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1))  # gram [[1, 1], [1, 2]]
    torch.testing.assert_close(orthogonal_penalty([conv, torch.nn.ReLU()]), torch.tensor(2.0))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, -2.0]]).view(2, 2, 1, 1))  # orthogonal rows, any norms
    assert orthogonal_penalty([conv]).item() == 0.0
    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    # norm=none: spectral normalisation's power iteration would move the weights during the step's forwards
    config = GANConfig(encoder_kwargs={"width": 4, "norm": "none"}, batch_size=4, fd_samples=8, ortho_weight=1.0)
    trainer = GANPretrainer(config, data, None, torch.device("cpu"))
    before = orthogonal_penalty(trainer.disc.trunk).item()
    assert trainer.train_step(0)["ortho"] == pytest.approx(before, rel=1e-5)
    with pytest.raises(RLKitError, match="ortho_weight must be >= 0"):
        GANPretrainer(dataclasses.replace(config, ortho_weight=-1.0), data, None, torch.device("cpu"))


def test_feature_rank_script_spectrum_summary():
    import runpy

    summary = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "vision_feature_rank.py"))["spectrum_summary"]
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 64)))[0][:, :5]  # 5 orthonormal directions in 64 features
    features = rng.choice([-1.0, 1.0], size=(4000, 5)) @ basis.T * np.sqrt(64 / 5)  # 5 equal, independent parts
    result = summary(features)
    assert result["dims_90"] == 5 and abs(result["participation_ratio"] - 5) < 0.5 and result["top10_share"] > 0.99
    assert summary(rng.standard_normal((4000, 32)))["dims_90"] > 25  # isotropic: nearly every direction counts


def test_gan_uniformity_regulariser_and_its_ablation(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, uniformity_loss

    same = torch.ones(4, 3)
    assert uniformity_loss(same).item() == pytest.approx(0.0, abs=1e-6)  # collapse: the maximum
    assert uniformity_loss(torch.eye(2)).item() == pytest.approx(-4.0, abs=1e-5)  # orthogonal: |f_i - f_j|^2 = 2
    f = torch.randn(5, 2, 3)
    unit = torch.nn.functional.normalize(f.flatten(1), dim=1)
    pairs = [torch.exp(-2.0 * (unit[i] - unit[j]).pow(2).sum()) for i in range(5) for j in range(5) if i != j]
    torch.testing.assert_close(uniformity_loss(f), torch.log(torch.stack(pairs).mean()))
    torch.testing.assert_close(uniformity_loss(f * 3.0), uniformity_loss(f))  # scale-free: no feature can die

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, uniformity_weight=1.0)
    assert np.isfinite(GANPretrainer(config, data, None, torch.device("cpu")).train_step(0)["uniformity"])
    ablation = GANPretrainer(dataclasses.replace(config, adversarial=False), data, None, torch.device("cpu"))
    generator = {k: v.clone() for k, v in ablation.generator.state_dict().items()}
    assert set(ablation.train_step(0)) == {"uniformity"}
    assert all(torch.equal(v, ablation.generator.state_dict()[k]) for k, v in generator.items())
    with pytest.raises(RLKitError, match="uniformity_weight must be >= 0"):
        GANPretrainer(dataclasses.replace(config, uniformity_weight=-1.0), data, None, torch.device("cpu"))


def test_gan_contrastive_discriminator_loss_and_its_ablation(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, nt_xent_loss

    torch.manual_seed(0)
    a, b, t = torch.randn(3, 5), torch.randn(3, 5), 0.5
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    terms = []  # SimCLR's l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), averaged over the 2N anchors
    for i in range(6):
        partner = (i + 3) % 6
        others = torch.stack([z[i] @ z[k] / t for k in range(6) if k != i])
        terms.append(-(z[i] @ z[partner] / t - torch.logsumexp(others, dim=0)))
    torch.testing.assert_close(nt_xent_loss(a, b, t), torch.stack(terms).mean())
    # identical, well separated views: near zero at a low temperature; swapping the views changes nothing
    assert nt_xent_loss(torch.eye(4), torch.eye(4), 0.05).item() < 1e-6
    torch.testing.assert_close(nt_xent_loss(a, b, t), nt_xent_loss(b, a, t))

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, contrastive_weight=1.0)
    metrics = GANPretrainer(config, data, None, torch.device("cpu")).train_step(0)
    assert np.isfinite(metrics["contrastive"]) and "d" in metrics
    ablation = GANPretrainer(dataclasses.replace(config, adversarial=False), data, None, torch.device("cpu"))
    generator = {k: v.clone() for k, v in ablation.generator.state_dict().items()}
    trunk = [p.detach().clone() for p in ablation.disc.parameters()]
    assert set(ablation.train_step(0)) == {"contrastive"}  # SimCLR alone on the trunk
    assert all(torch.equal(v, ablation.generator.state_dict()[k]) for k, v in generator.items())
    assert any(not torch.equal(a, b) for a, b in zip(trunk, ablation.disc.parameters()))
    with pytest.raises(RLKitError, match="contrastive_temperature > 0"):
        GANPretrainer(dataclasses.replace(config, contrastive_temperature=0.0), data, None, torch.device("cpu"))


def test_gan_temporal_stdim_loss_partners_and_its_ablation(tmp_path):
    from rlkit.errors import RLKitError
    from rlkit.vision.gan import GANConfig, GANPretrainer, stdim_loss, temporal_partners

    # two episodes, rows shuffled: each frame's partner is its episode's frame 2 steps later, else 2 earlier
    episode = np.array([1, 0, 0, 1, 0, 1, 0, 1])
    step = np.array([0, 2, 0, 1, 1, 2, 3, 3])
    partner = temporal_partners(episode, step, 2)
    expected = {(1, 0): (1, 2), (0, 2): (0, 0), (0, 0): (0, 2), (1, 1): (1, 3), (0, 1): (0, 3), (1, 2): (1, 0),
                (0, 3): (0, 1), (1, 3): (1, 1)}
    assert [(episode[p], step[p]) for p in partner] == [expected[(e, s)] for e, s in zip(episode, step)]
    assert list(temporal_partners(np.array([0, 1]), np.array([0, 0]), 1)) == [0, 1]  # nothing: itself

    torch.manual_seed(0)
    n, d, g, h, w = 3, 4, 5, 2, 2
    glob, now, later = torch.randn(n, g), torch.randn(n, d, h, w), torch.randn(n, d, h, w)
    w_global, w_local = torch.nn.Linear(g, d), torch.nn.Linear(d, d)
    global_terms, local_terms = [], []  # InfoNCE at each cell: row i must pick row i's later cell
    for y in range(h):
        for x in range(w):
            for i in range(n):
                scores = torch.stack([w_global(glob[i]) @ later[j, :, y, x] for j in range(n)])
                global_terms.append(torch.logsumexp(scores, 0) - scores[i])
                scores = torch.stack([w_local(now[i, :, y, x]) @ later[j, :, y, x] for j in range(n)])
                local_terms.append(torch.logsumexp(scores, 0) - scores[i])
    reference = torch.stack(global_terms).mean() + torch.stack(local_terms).mean()
    torch.testing.assert_close(stdim_loss(glob, now, later, w_global, w_local), reference)

    data = FrameDataset(make_dataset(tmp_path / "d", frames=20, episodes=4), "train")
    config = GANConfig(encoder_kwargs={"width": 4}, batch_size=4, fd_samples=8, temporal_weight=1.0)
    pretrainer = GANPretrainer(config, data, None, torch.device("cpu"))
    indices, extras = pretrainer.global_batch(0)
    assert torch.equal(extras["later_obs"], data.batch(pretrainer.partner[indices])[0])
    metrics = pretrainer.train_step(0)
    assert np.isfinite(metrics["temporal"]) and "d" in metrics
    ablation = GANPretrainer(dataclasses.replace(config, adversarial=False), data, None, torch.device("cpu"))
    assert set(ablation.train_step(0)) == {"temporal"}  # ST-DIM alone on the trunk
    with pytest.raises(RLKitError, match="temporal_offset >= 1"):
        GANPretrainer(dataclasses.replace(config, temporal_offset=0), data, None, torch.device("cpu"))
