"""Agents: DQN family (and, later, tabular and policy-gradient agents); replay buffers; schedules."""

from rlkit.agents.dqn import DQN, DQNConfig

__all__ = ["DQN", "DQNConfig"]
