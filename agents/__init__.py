"""Agents: tabular TD control, DQN family, policy-gradient family (PPO, A2C, recurrent PPO, REINFORCE)."""

from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.agents.policy_gradient import A2C, PPO, A2CConfig, PPOConfig, gae
from rlkit.agents.recurrent_ppo import RecurrentPPO, RecurrentPPOConfig
from rlkit.agents.reinforce import Reinforce, ReinforceConfig, discounted_returns
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
    "RecurrentPPO",
    "RecurrentPPOConfig",
    "Reinforce",
    "ReinforceConfig",
    "Sarsa",
    "TabularConfig",
    "discounted_returns",
    "gae",
    "value_iteration",
]
