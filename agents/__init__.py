"""Agents: tabular TD control, DQN family (policy-gradient family to come); replay buffers; schedules."""

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.policy_gradient import A2C, PPO, A2CConfig, PPOConfig, gae
from rlkit.agents.tabular import ExpectedSarsa, QLearning, Sarsa, TabularConfig, value_iteration

__all__ = [
    "A2C",
    "A2CConfig",
    "DQN",
    "DQNConfig",
    "ExpectedSarsa",
    "PPO",
    "PPOConfig",
    "QLearning",
    "Sarsa",
    "TabularConfig",
    "gae",
    "value_iteration",
]
