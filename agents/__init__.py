"""Agents: tabular TD control, DQN family (policy-gradient family to come); replay buffers; schedules."""

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.tabular import ExpectedSarsa, QLearning, Sarsa, TabularConfig, value_iteration

__all__ = ["DQN", "DQNConfig", "ExpectedSarsa", "QLearning", "Sarsa", "TabularConfig", "value_iteration"]
