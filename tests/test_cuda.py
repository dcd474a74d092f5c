"""GPU paths, checked on a CUDA machine (skipped elsewhere): the CUDA-graph DQN update equals the eager one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.agents.dqn import DQN, DQNConfig, UpdateGraph
from rlkit.agents.replay import FrameReplayBuffer
from rlkit.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

OBS = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def _buffer(seed: int) -> FrameReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = FrameReplayBuffer(500, 2, OBS.shape, np.uint8, stacked=True, n_step=3, gamma=0.99, seed=seed)
    buffer.start(rng.integers(0, 256, (2, *OBS.shape), dtype=np.uint8))
    for _ in range(300):
        buffer.add(
            rng.integers(0, 6, 2),
            rng.normal(size=2).astype(np.float32),
            rng.random(2) < 0.01,
            np.zeros(2, bool),
            rng.integers(0, 256, (2, *OBS.shape), dtype=np.uint8),
        )
    return buffer


def _agent(cuda_graph: bool) -> DQN:
    config = DQNConfig(
        device="cuda", cuda_graph=cuda_graph, batch_size=16, dueling=True, n_step=3, lr=1e-3, seed=3,
        max_grad_norm=1.0,
    )
    return DQN(config, OBS, gym.spaces.Discrete(6))


@pytest.fixture
def exact_cuda_math():
    """Same kernels on both sides: no TF32, no per-process autotuning, deterministic cuDNN algorithms. (With
    TF32 and cudnn.benchmark the two agents may pick different algorithms; Adam then turns rounding noise in
    near-zero gradients into +-lr steps, seen on an H100 as 1.9e-3 parameter differences after 7 updates.)"""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved


def _exact() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def test_graph_update_matches_eager_update(exact_cuda_math):
    graph_agent, eager_agent = _agent(True), _agent(False)
    for group in eager_agent.optimizer.param_groups:  # the same Adam arithmetic (on-device step counts) on both sides
        group["capturable"] = True
    _exact()  # after construction: the agent turns cudnn.benchmark on
    for a, b in zip(graph_agent.q_net.parameters(), eager_agent.q_net.parameters()):
        assert torch.equal(a, b)
    graph_buffer, eager_buffer = _buffer(5), _buffer(5)
    steps = UpdateGraph.WARMUP + 4
    for step in range(steps):
        g = graph_agent.train_step(graph_buffer)
        e = eager_agent.train_step(eager_buffer)
        torch.testing.assert_close(g["td_loss"], e["td_loss"], rtol=1e-5, atol=1e-6, msg=f"update {step}")
        if step == UpdateGraph.WARMUP + 1:  # a target sync between replays must reach the captured graph
            graph_agent.update_target()
            eager_agent.update_target()
    assert graph_agent._graph is not None and eager_agent._graph is None
    assert graph_agent.updates == eager_agent.updates == steps
    for a, b in zip(graph_agent.q_net.parameters(), eager_agent.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_graph_agent_checkpoint_round_trip(tmp_path):
    agent = _agent(True)
    buffer = _buffer(1)
    for _ in range(UpdateGraph.WARMUP + 2):
        agent.train_step(buffer)
    agent.save(tmp_path / "c.safetensors")
    restored = _agent(True)
    restored.load_state_dict(*load_checkpoint(tmp_path / "c.safetensors"))
    for a, b in zip(agent.q_net.parameters(), restored.q_net.parameters()):
        assert torch.equal(a, b)
    restored.train_step(buffer)  # the restored (capturable) optimizer state is usable


def test_policy_gradient_checkpoint_restores_the_gpu_generator(tmp_path):
    """A PPO agent on a GPU samples its actions from the GPU's generator: a resume must continue its stream."""
    from rlkit.agents.policy_gradient import PPO, PPOConfig

    box = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    agent = PPO(PPOConfig(env_id="CartPole-v1", device="cuda"), box, gym.spaces.Discrete(2))
    torch.cuda.manual_seed(5)
    agent.save(tmp_path / "c.safetensors")
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(6)  # another stream in between, as a new process would have
    restored = PPO(PPOConfig(env_id="CartPole-v1", device="cuda"), box, gym.spaces.Discrete(2))
    restored.load_state_dict(*load_checkpoint(tmp_path / "c.safetensors"))
    assert torch.equal(torch.rand(4, device="cuda"), expected)
