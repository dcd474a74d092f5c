"""Encoders: shapes on Atari-like and RGB frames, gradients, options, the ViT's MAE hooks, the listing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.cli import main
from rlkit.errors import RLKitError
from rlkit.registry import ENCODERS
from rlkit.vision.encoders import encoder_options, forward_flops, make_encoder
from rlkit.vision.vit import ViT, default_patch_size, patchify, unpatchify, valid_patch_sizes

IMAGE_ENCODERS = ["nature_cnn", "nature_cnn_small", "impala", "resnet18", "vit"]
FEATURES = {"nature_cnn": 512, "nature_cnn_small": 256, "impala": 256, "resnet18": 256, "vit": 192}


def image_space(shape: tuple[int, int, int]) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, shape, np.uint8)


def frames(shape: tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("shape", [(4, 84, 84), (3, 64, 64)])
@pytest.mark.parametrize("name", IMAGE_ENCODERS)
def test_output_shape_and_gradients(name, shape):
    torch.manual_seed(0)
    encoder = make_encoder(name, image_space(shape))
    assert encoder.features_dim == FEATURES[name]
    out = encoder(frames(shape))
    assert out.shape == (2, encoder.features_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads), name
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", IMAGE_ENCODERS)
def test_uint8_scaling_inside(name):
    """A uint8 frame and the same frame as floats in [0, 1] for a float space give the same features."""
    torch.manual_seed(0)
    encoder = make_encoder(name, image_space((4, 84, 84)))
    x = frames((4, 84, 84))
    float_space = gym.spaces.Box(0.0, 1.0, (4, 84, 84), np.float32)
    torch.manual_seed(0)
    twin = make_encoder(name, float_space)
    twin.load_state_dict(encoder.state_dict())
    assert torch.allclose(encoder(x), twin(x.float() / 255.0), atol=1e-5)


def test_impala_and_resnet_options_change_the_network():
    space = image_space((4, 84, 84))
    deep = make_encoder("impala", space, depth=3, channels=[16, 32, 32, 32])
    # Stages: conv + pool + 3 blocks each; 84 -> 42 -> 21 -> 11 -> 6.
    assert deep.head[0].in_features == 32 * 6 * 6
    assert make_encoder("impala", space).head[0].in_features == 32 * 11 * 11
    wide = make_encoder("resnet18", space, width_multiplier=1.0, features_dim=128)
    assert wide.head[0].in_features == 512 and wide.features_dim == 128
    assert wide(frames((4, 84, 84))).shape == (2, 128)


def test_unknown_encoder_option_is_one_line_error():
    with pytest.raises(RLKitError, match="has no option 'dpeth'.*depth"):
        make_encoder("impala", image_space((4, 84, 84)), dpeth=3)
    assert "depth" in encoder_options("vit") and "observation_space" not in encoder_options("vit")


def test_image_encoder_on_vector_space_errors():
    with pytest.raises(RLKitError, match="image observations"):
        make_encoder("vit", gym.spaces.Box(-1, 1, (8,), np.float32))


def test_vit_patch_sizes():
    assert valid_patch_sizes(84, 84) == [2, 3, 4, 6, 7, 12, 14, 21, 28, 42]
    assert default_patch_size(84, 84) == 12 and default_patch_size(64, 64) == 8
    assert make_encoder("vit", image_space((4, 84, 84)), patch_size=7).grid == (12, 12)
    with pytest.raises(RLKitError, match="patch_size=8 does not tile the 84x84 input; valid patch sizes: .*7, 12"):
        make_encoder("vit", image_space((4, 84, 84)), patch_size=8)
    with pytest.raises(RLKitError, match="patch_size=12 .*64x64.* 8"):
        make_encoder("vit", image_space((3, 64, 64)), patch_size=12)
    with pytest.raises(RLKitError, match="not divisible by heads"):
        make_encoder("vit", image_space((3, 64, 64)), width=100, heads=3)


def test_vit_grid_pool_keeps_token_positions():
    torch.manual_seed(0)
    vit = make_encoder("vit", image_space((4, 84, 84)), pool="grid", depth=1)  # 7x7 patches -> 4x4 cells
    assert vit.features_dim == 192 * 16 and vit.num_prefix_tokens == 0
    x = frames((4, 84, 84))
    assert vit(x).shape == (2, 192 * 16)
    tokens = torch.zeros(1, 49, 192)
    tokens[0, 0, 0] = 1.0  # top-left patch -> only the first cell of channel 0
    tokens[0, 48, 1] = 1.0  # bottom-right patch -> only the last cell of channel 1
    cells = vit.pool_tokens(tokens).view(192, 4, 4)
    assert cells[0, 0, 0] > 0 and cells[0].count_nonzero() == 1
    assert cells[1, 3, 3] > 0 and cells[1].count_nonzero() == 1
    # the mean pool of the same tokens cannot tell the two patches apart
    mean = make_encoder("vit", image_space((4, 84, 84)), pool="mean", depth=1)
    swapped = torch.zeros(1, 49, 192)
    swapped[0, 48, 0] = swapped[0, 0, 1] = 1.0
    assert torch.equal(mean.pool_tokens(tokens), mean.pool_tokens(swapped))
    assert not torch.equal(vit.pool_tokens(tokens), vit.pool_tokens(swapped))
    # same parameters as mean pooling: a mean-pool encoder file loads into a grid-pool encoder
    vit.load_state_dict(mean.state_dict())
    assert make_encoder("vit", image_space((4, 84, 84)), pool="grid", pool_grid=7).features_dim == 192 * 49
    with pytest.raises(RLKitError, match="pool='max' is not valid"):
        make_encoder("vit", image_space((4, 84, 84)), pool="max")


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_keep_idx_token_count(pool):
    torch.manual_seed(0)
    vit = make_encoder("vit", image_space((3, 64, 64)), pool=pool, depth=2)
    assert isinstance(vit, ViT) and vit.num_patches == 64 and vit.pos_embed.shape == (1, 64, 192)
    x = frames((3, 64, 64))
    prefix = 1 if pool == "cls" else 0
    assert vit.forward_tokens(x).shape == (2, 64 + prefix, 192)
    keep = torch.stack([torch.randperm(64)[:16] for _ in range(2)])  # per-sample visible patches
    assert vit.forward_tokens(x, keep).shape == (2, 16 + prefix, 192)
    assert vit.forward_tokens(x, keep[0]).shape == (2, 16 + prefix, 192)
    # Keeping every patch in order is the full forward pass.
    full = vit.forward_tokens(x, torch.arange(64))
    assert torch.allclose(full, vit.forward_tokens(x), atol=1e-5)
    assert torch.allclose(vit.pool_tokens(full), vit(x), atol=1e-5)
    # Visible tokens see only visible patches: changing a hidden patch leaves them unchanged.
    hidden = sorted(set(range(64)) - set(keep[0].tolist()))[0]
    row, col = divmod(hidden, 8)
    y = x.clone()
    y[:, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] ^= 0xFF
    assert torch.allclose(vit.forward_tokens(x, keep[0]), vit.forward_tokens(y, keep[0]), atol=1e-5)
    assert not torch.allclose(vit(x), vit(y))
    assert vit.embed_patches(x.float() / 255).shape == (2, 64, 192)


def test_patchify_round_trip():
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    patches = patchify(x, 8)
    assert patches.shape == (2, 64, 8 * 8 * 3)
    # Patch 1 is the top row's second 8x8 block.
    assert torch.equal(patches[0, 1].reshape(8, 8, 3).permute(2, 0, 1), x[0, :, :8, 8:16])
    assert torch.equal(unpatchify(patches, 8, 3, (8, 8)), x)


def test_forward_flops_counts_attention():
    torch.manual_seed(0)
    vit = make_encoder("vit", image_space((4, 84, 84)), depth=1)
    x = frames((4, 84, 84), batch=1)
    tokens, width = 50, 192
    attention = 4 * tokens * tokens * width  # QK^T and AV, 2 FLOPs per multiply-add
    linear = 2 * tokens * (3 * width * width + width * width + 2 * 4 * width * width)
    patch = 2 * 49 * width * 4 * 12 * 12
    assert forward_flops(vit, x) == attention + linear + patch


def test_rlkit_encoders_lists_every_encoder(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "4x84x84 uint8" in lines[0]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ENCODERS.names()
    for name in IMAGE_ENCODERS:
        assert "MFLOPs" in lines[1 + names.index(name)]
    assert "input 4x84x84 uint8" in lines[1 + names.index("impala")]


@pytest.mark.parametrize("name", ["nature_cnn", "impala", "vit"])
def test_bf16_compute_matches_fp32_and_keeps_fp32_weights(name):
    """precision=bf16 (autocast) gives float32 features within bfloat16's rounding of the fp32 ones, and
    float32 gradients on the float32 weights; the convolutions really ran in bfloat16."""
    torch.manual_seed(0)
    encoder = make_encoder(name, image_space((4, 84, 84)))
    x = frames((4, 84, 84), batch=4)
    reference = encoder(x)
    encoder.compute_dtype = torch.bfloat16
    out = encoder(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, reference)
    scale = float(reference.detach().abs().max())
    assert float((out - reference).detach().abs().max()) < 0.05 * scale
    out.square().sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in encoder.parameters())
