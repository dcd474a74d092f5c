"""rlkit: reinforcement learning and control around Gymnasium, on PyTorch."""

__version__ = "0.1.0"


def load_plugins() -> None:
    """Import the modules whose decorators fill the registries (agents, encoders, envs)."""
    import rlkit.agents  # noqa: F401
    import rlkit.envs  # noqa: F401
    import rlkit.vision  # noqa: F401
