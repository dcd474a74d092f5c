"""Score Stable-Baselines3 models with rlkit's evaluation protocol, without unpickling anything.

An SB3 ``.zip`` holds ``data`` (JSON; class objects inside it are pickles, which we never load) and
``policy.pth`` (a state dict, read with ``torch.load(weights_only=True)``). The network is rebuilt from
the state dict's shapes: NatureCNN or flatten features, then SB3's default MLP (ReLU for DQN, Tanh for
actor-critic policies), then the Q or action head. Discrete-action DQN, PPO and A2C models are supported.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.agents.base import epsilon_greedy
from rlkit.errors import RLKitError
from rlkit.vision.encoders import NatureCNN

SUPPORTED = {
    "stable_baselines3.dqn.policies": "dqn",
    "stable_baselines3.common.policies": "actor-critic",
}


def _linear_stack(state: dict[str, torch.Tensor], prefix: str, activation: type[nn.Module]) -> nn.Sequential:
    """Rebuild ``prefix.{0,2,4,...}`` Linear layers (activations between) from a state dict."""
    indices = sorted({int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)})
    layers: list[nn.Module] = []
    for position, index in enumerate(indices):
        weight = state[f"{prefix}{index}.weight"]
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        layer.load_state_dict({"weight": weight, "bias": state[f"{prefix}{index}.bias"]})
        layers.append(layer)
        if position < len(indices) - 1 or prefix.endswith("policy_net."):
            layers.append(activation())
    return nn.Sequential(*layers)


class SB3Policy(nn.Module):
    """Features -> MLP -> head, rebuilt from an SB3 policy state dict; outputs Q-values or logits."""

    def __init__(self, state: dict[str, torch.Tensor], kind: str, observation_space: gym.spaces.Box) -> None:
        super().__init__()
        features_prefix = "q_net.features_extractor." if kind == "dqn" else "features_extractor."
        if f"{features_prefix}cnn.0.weight" in state:
            channels = tuple(int(state[f"{features_prefix}cnn.{i}.weight"].shape[0]) for i in (0, 2, 4))
            features_dim = int(state[f"{features_prefix}linear.0.weight"].shape[0])
            cnn = NatureCNN(observation_space, channels=channels, features_dim=features_dim)  # type: ignore[arg-type]
            mapped = {}
            for i in (0, 2, 4):
                for p in ("weight", "bias"):
                    mapped[f"convs.{i}.{p}"] = state[f"{features_prefix}cnn.{i}.{p}"]
            for p in ("weight", "bias"):
                mapped[f"head.0.{p}"] = state[f"{features_prefix}linear.0.{p}"]
            cnn.load_state_dict(mapped)
            self.features: nn.Module = cnn
            self.scale = False  # NatureCNN scales uint8 itself
        else:
            self.features = nn.Flatten()
            self.scale = observation_space.dtype == np.uint8
        if kind == "dqn":
            if "q_net.q_net.weight" in state:  # CNN policy: a single linear head
                head = nn.Linear(state["q_net.q_net.weight"].shape[1], state["q_net.q_net.weight"].shape[0])
                head.load_state_dict({"weight": state["q_net.q_net.weight"], "bias": state["q_net.q_net.bias"]})
                self.body: nn.Module = head
            else:
                self.body = _linear_stack(state, "q_net.q_net.", nn.ReLU)
        else:
            policy_net = _linear_stack(state, "mlp_extractor.policy_net.", nn.Tanh)
            head = nn.Linear(state["action_net.weight"].shape[1], state["action_net.weight"].shape[0])
            head.load_state_dict({"weight": state["action_net.weight"], "bias": state["action_net.bias"]})
            self.body = nn.Sequential(policy_net, head)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations if not self.scale else observations.float() / 255.0
        return self.body(self.features(x if isinstance(self.features, NatureCNN) else x.float()))


def _mapping(value: Any) -> dict:
    """``value`` if it is a JSON object, else an empty one (an entry a damaged ``data`` lacks)."""
    return value if isinstance(value, dict) else {}


def read_sb3_zip(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``data`` JSON object and the ``policy.pth`` state dict of an SB3 zip, or a one-line error. The state dict
    is read with ``torch.load(weights_only=True)`` only: a file that needs more is not a model we load."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
            policy = archive.read("policy.pth")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError, OSError, zlib.error) as exc:
        raise RLKitError(f"{path} is not a readable SB3 model zip ({exc}); pass a model.save() file.") from None
    if not isinstance(data, dict):
        raise RLKitError(f"{path} is not an SB3 model: its data is a JSON {type(data).__name__}, not an object; "
                         "pass a model.save() file.")
    try:
        state = torch.load(io.BytesIO(policy), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
        # (torch's own message would advise weights_only=False: never do that with a file from elsewhere)
        raise RLKitError(f"{path}'s policy.pth is not a readable state dict ({type(exc).__name__}); pass a "
                         "model.save() file.") from None
    if not isinstance(state, dict) or not state or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise RLKitError(f"{path}'s policy.pth holds no state dict of tensors; pass a model.save() file.")
    return data, state


class SB3Agent:
    """A loaded SB3 model with rlkit's ``act`` interface (greedy / argmax-logit actions, or epsilon)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise RLKitError(f"SB3 model {path} does not exist; pass the .zip written by model.save().")
        data, state = read_sb3_zip(path)
        module = _mapping(data.get("policy_class")).get("__module__", "?")
        if module not in SUPPORTED:
            algo = module.split(".")[1] if isinstance(module, str) and module.count(".") >= 2 else module
            raise RLKitError(
                f"{path} is an SB3 {algo} model; rlkit eval --sb3 supports DQN, PPO and A2C with discrete actions."
            )
        self.kind = SUPPORTED[module]
        action = _mapping(data.get("action_space"))
        if "Discrete" not in str(action.get(":type:", "")):
            raise RLKitError(f"{path} has action space {action.get(':type:')}; only Discrete actions are supported.")
        obs = _mapping(data.get("observation_space"))
        try:
            self.n_actions = int(action["n"])  # SB3 writes these as JSON numbers or strings
            shape = obs.get("_shape", [])
            self.observation_shape = tuple(int(n) for n in (json.loads(shape) if isinstance(shape, str) else shape))
            self.observation_dtype = np.dtype(obs.get("dtype", "float32"))
        except (KeyError, ValueError, TypeError) as exc:
            raise RLKitError(f"{path} has a damaged data entry (action_space n or observation_space shape/dtype: "
                             f"{exc}); pass a model.save() file.") from None
        self.algo = "dqn" if self.kind == "dqn" else ("ppo" if "clip_range" in data else "a2c")
        space = gym.spaces.Box(0, 255, self.observation_shape, np.uint8) if self.observation_dtype == np.uint8 else (
            gym.spaces.Box(-np.inf, np.inf, self.observation_shape, np.float32)
        )
        try:
            self.policy = SB3Policy(state, self.kind, space).eval()
            with torch.no_grad():
                outputs = self.policy(torch.as_tensor(np.zeros((1, *space.shape), space.dtype))).shape
        except KeyError as exc:
            raise RLKitError(f"{path}'s policy.pth lacks tensor {exc.args[0]!r}; pass a complete model.save() "
                             "file.") from None
        except (RuntimeError, ValueError, IndexError) as exc:  # tensors of shapes that do not chain up
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RLKitError(f"{path}'s policy.pth does not make a network for observations "
                             f"{self.observation_shape} ({detail}); pass a model.save() file.") from None
        if tuple(outputs) != (1, self.n_actions):
            raise RLKitError(f"{path}'s policy.pth gives {outputs[-1] if len(outputs) == 2 else tuple(outputs)} "
                             f"outputs per observation, but its action space has {self.n_actions} actions; the file "
                             "is damaged: pass a model.save() file.")
        self.rng = np.random.default_rng(0)

    def check_env(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, env_id: str) -> None:
        if tuple(observation_space.shape) != self.observation_shape or int(action_space.n) != self.n_actions:
            raise RLKitError(
                f"the SB3 model expects observations {self.observation_shape} and {self.n_actions} actions; {env_id} "
                f"gives {tuple(observation_space.shape)} and {action_space.n}; pass the env it was trained on."
            )

    @torch.no_grad()
    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        epsilon: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """DQN: greedy, epsilon-greedy with ``epsilon``. PPO/A2C: the most probable action, or a sample from the
        policy when not ``deterministic`` (epsilon means nothing to them, as for rlkit's own). Random draws come
        from ``rng`` (default: the model's own generator)."""
        rng = rng if rng is not None else self.rng
        out = self.policy(torch.as_tensor(observations))
        if self.kind != "dqn":
            if deterministic:
                return out.argmax(dim=1).numpy().astype(np.int64)
            cumulative = torch.softmax(out.double(), dim=1).cumsum(dim=1).numpy()
            drawn = (rng.random((len(cumulative), 1)) * cumulative[:, -1:] > cumulative).sum(axis=1)
            return np.minimum(drawn, self.n_actions - 1).astype(np.int64)
        actions = out.argmax(dim=1).numpy().astype(np.int64)
        return epsilon_greedy(actions, epsilon, self.n_actions, rng) if epsilon else actions

    def describe(self) -> dict[str, Any]:
        shape = list(self.observation_shape)
        return {"algo": f"sb3-{self.algo}", "observation_shape": shape, "n_actions": self.n_actions}
