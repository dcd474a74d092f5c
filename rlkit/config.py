"""Typed config dataclasses: attribute docstrings as help, YAML presets shipped in the package, checked overrides.

A config field is declared as::

    lr: float = 1e-4
    \"\"\"Adam learning rate.\"\"\"

The string under a field is its one-line help (shown by ``rlkit train ALGO --help``).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
from importlib import resources
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from rlkit.errors import RLKitError, suggest

PRESET_PACKAGE = "rlkit.presets"


@dataclasses.dataclass
class TrainConfig:
    """Fields every agent shares: the env, the budget, seeding, evaluation, checkpoints, device."""

    env_id: str = "CartPole-v1"
    """Gymnasium id, e.g. ALE/Pong-v5, CartPole-v1 (see `rlkit envs`)."""
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    """Env-family settings (Atari: frame_skip, frame_stack, noop_max, episodic_life, clip_rewards, ...)."""
    seed: int = 0
    """Seed for envs, networks, exploration and replay sampling."""
    total_steps: int = 100_000
    """Training budget in environment steps (agent steps; Atari frames = steps x frame_skip)."""
    num_envs: int = 1
    """Parallel training environments."""
    eval_every: int = 0
    """Evaluate every N env steps (0: only at the end)."""
    eval_episodes: int = 10
    """Full episodes per evaluation."""
    stop_at_return: float | None = None
    """Stop early once an evaluation's mean return reaches this value (None: never)."""
    video_every: int = 0
    """Record one evaluation episode as mp4 in eval/ and as a GIF in TensorBoard every N env steps (0: never)."""
    checkpoint_every: int = 100_000
    """Write a periodic checkpoint every N env steps (0: only last/best)."""
    log_every: int = 2_000
    """Write training scalars every N env steps."""
    device: str = "auto"
    """torch device: auto, cpu, cuda, cuda:1, ..."""
    torch_threads: int = 0
    """torch intra-op threads (0: one per core)."""


def field_docs(cls: type) -> dict[str, str]:
    """Map each field of a dataclass (and its bases) to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against type ``tp``; return it converted, or raise RLKitError naming the field."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise RLKitError(f"{name}={value!r} is not valid; choose one of: {type_name(tp)}.")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except RLKitError:
                continue
        raise RLKitError(f"{name}={value!r} is not a {type_name(tp)}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            (item,) = get_args(tp)[:1] or (Any,)
            items = [value_ if item is Any else _coerce(name, item, value_) for value_ in value]
            return tuple(items) if origin is tuple else items
    else:
        return value
    raise RLKitError(f"{name}={value!r} is not a {type_name(tp)}; fix the value (e.g. --set {name}=...).")


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (``1e-4``, ``true``, ``[1,2]``, ``null``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads 1e-4 as a string; accept it as a float.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclasses.dataclass(frozen=True)
class Bound:
    """The values a numeric config field admits: ``low`` to ``high`` (None: unbounded), ends included unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low, high = (f"{end:g}" if isinstance(end, float) else str(end) for end in (self.low, self.high))
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


MAX_SEED = 2**31 - 1
"""The largest seed: every seed user (torch, numpy, ALE's int32 random_seed) takes it."""
AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, FRACTION = Bound(1), Bound(0), Bound(0, low_open=True), Bound(0, 1)
FIELD_BOUNDS: dict[str, Bound] = {
    # budgets, sizes, counts and intervals (0 where a field documents it as "off" or "only at the end")
    **dict.fromkeys(
        ("total_steps", "steps", "num_envs", "eval_episodes", "log_every", "batch_size", "buffer_size", "n_step",
         "train_freq", "gradient_steps", "target_update_interval", "rollout_steps", "epochs", "minibatches",
         "episodes_per_update", "chunk_size", "lstm_hidden", "lstm_layers"),
        AT_LEAST_ONE,
    ),
    **dict.fromkeys(
        ("eval_every", "checkpoint_every", "video_every", "torch_threads", "learning_starts",
         "exploration_steps", "env_groups", "augment_pad", "lr_step_every", "instance_noise_steps"),
        NON_NEGATIVE,
    ),
    "seed": Bound(0, MAX_SEED),
    # rates and coefficients
    **dict.fromkeys(("lr", "adam_eps", "optimizer_eps", "per_eps", "lr_step_gamma", "target_kl"), POSITIVE),
    **dict.fromkeys(("weight_decay", "max_grad_norm", "per_alpha", "vf_coef", "clip_range", "lr_end"), NON_NEGATIVE),
    # discounts and probabilities
    **dict.fromkeys(("gamma", "gae_lambda", "eval_epsilon", "per_beta_start", "exploration_start", "exploration_end"),
                    FRACTION),
    "tau": Bound(0, 1, low_open=True),
    "momentum": Bound(0, 1, high_open=True),
}
"""Ranges of config fields by name, checked by ``build_config`` for every config class that has the field (the
names mean the same in every agent and pretraining method). A value outside would crash or hang a run later.
No float field takes NaN or infinity (a field that can be off says so with 0 or None)."""


def field_bound(key: str, values: dict[str, Any]) -> Bound | None:
    """The range of field ``key`` given the config's other ``values``: ``FIELD_BOUNDS``, except that the
    exploration schedule of ``exploration=softmax`` (tabular agents) runs over temperatures, not epsilons."""
    if key in ("exploration_start", "exploration_end") and values.get("exploration") == "softmax":
        return NON_NEGATIVE
    return FIELD_BOUNDS.get(key)


def check_relations(config: Any) -> None:
    """One-line errors for fields that are each in range but do not fit together."""
    buffer_size, batch_size = getattr(config, "buffer_size", None), getattr(config, "batch_size", None)
    if buffer_size is not None and batch_size is not None and buffer_size < batch_size:
        raise RLKitError(f"buffer_size={buffer_size} is smaller than batch_size={batch_size}: every batch would "
                         f"repeat transitions; raise buffer_size (--set buffer_size=...) or lower batch_size.")


def build_config(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Create ``cls`` from a mapping, rejecting unknown keys, wrong types and out-of-range values (``FIELD_BOUNDS``)
    with one-line errors."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise RLKitError(
                f"unknown {source} key {key!r}; valid keys: {', '.join(sorted(fields))}." + suggest(key, fields)
            )
        kwargs[key] = _coerce(key, hints[key], value)
        if isinstance(kwargs[key], float) and not math.isfinite(kwargs[key]):
            raise RLKitError(f"{key}={kwargs[key]!r} is not a finite number; give {key} a real value.")
    config = cls(**kwargs)
    resolved = vars(config)  # defaults included: a bound may depend on another field
    for key, value in kwargs.items():
        bound = field_bound(key, resolved)
        if bound is not None and isinstance(value, (int, float)) and not bound.admits(value):
            default = fields[key].default
            example = f" (default {default!r})" if default is not dataclasses.MISSING else ""
            raise RLKitError(f"{key}={value!r} is out of range: {key} must be {bound}{example}.")
    check_relations(config)
    return config


def _takes_mapping(tp: Any) -> bool:
    """Whether a field of type ``tp`` holds a dict (``dict``, ``dict[str, Any]``, ``dict | None``)."""
    if get_origin(tp) in (Union, types.UnionType):
        return any(_takes_mapping(arg) for arg in get_args(tp))
    return tp is dict or get_origin(tp) is dict


def apply_overrides(values: dict[str, Any], overrides: list[str], cls: type) -> dict[str, Any]:
    """Apply ``key=value`` strings (``a.b=v`` sets a key inside a dict field) onto ``values``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values = dict(values)
    for item in overrides:
        if "=" not in item:
            raise RLKitError(f"bad override {item!r}: write it as key=value, e.g. --set lr=3e-4.")
        key, text = item.split("=", 1)
        key = key.strip()
        head, _, sub = key.partition(".")
        if head not in fields:
            raise RLKitError(
                f"unknown config key {head!r} in --set {item}; valid keys: {', '.join(sorted(fields))}."
                + suggest(head, fields)
            )
        if sub:
            if not _takes_mapping(hints[head]):
                raise RLKitError(f"bad --set {item}: {head} is a {type_name(hints[head])} field and takes no "
                                 f"sub-keys; write --set {head}=VALUE.")
            if not isinstance(values.get(head) or {}, dict):
                raise RLKitError(f"bad --set {item}: {head} is {values[head]!r}, not a mapping, so it has no key "
                                 f"{sub!r}; set {head} to a mapping (e.g. --set '{head}={{{sub}: ...}}').")
            inner = dict(values.get(head) or {})
            inner[sub] = parse_value(text)
            values[head] = inner
        else:
            values[head] = parse_value(text)
    return values


def preset_names(algo: str | None = None) -> list[str]:
    """Preset files shipped in the package, as ``algo-name`` strings."""
    names = [
        p.name[: -len(".yaml")]
        for p in resources.files(PRESET_PACKAGE).iterdir()
        if p.name.endswith(".yaml")
    ]
    if algo is not None:
        names = [n for n in names if n.startswith(algo + "-")]
    return sorted(names)


def load_preset(algo: str, name: str) -> dict[str, Any]:
    """Read preset ``name`` for ``algo`` from the package's YAML files."""
    full = f"{algo}-{name}"
    if full not in preset_names():
        available = [n.split("-", 1)[1] for n in preset_names(algo)]
        raise RLKitError(
            f"unknown preset {name!r} for {algo}; available: {', '.join(available) or 'none'}."
            + suggest(name, available)
        )
    text = resources.files(PRESET_PACKAGE).joinpath(full + ".yaml").read_text()
    data = yaml.safe_load(text) or {}
    data.pop("description", None)
    data.pop("default_for", None)
    data.pop("default_device", None)
    return data


def preset_info(full_name: str) -> dict[str, Any]:
    """The description, the env families a preset is the default for, and the device kind (cpu/cuda) it is
    the default on (``None``: any)."""
    text = resources.files(PRESET_PACKAGE).joinpath(full_name + ".yaml").read_text()
    data = yaml.safe_load(text) or {}
    return {
        "description": data.get("description", ""),
        "default_for": data.get("default_for", []),
        "default_device": data.get("default_device"),
    }


def default_preset(algo: str, family: str, device_type: str = "cpu") -> str | None:
    """The preset of ``algo`` marked ``default_for`` env family ``family``: one marked for ``device_type``
    (``cpu`` or ``cuda``) wins over one marked for any device."""
    candidates = []
    for full in preset_names(algo):
        info = preset_info(full)
        if family in info["default_for"] and info["default_device"] in (None, device_type):
            candidates.append((info["default_device"] is None, full.split("-", 1)[1]))
    return min(candidates)[1] if candidates else None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_help(cls: type, resolved: Any = None) -> str:
    """Every field with its type, default and description, for ``--help``; with ``resolved`` (a config of
    ``cls``, e.g. after a preset) each field shows its value there, and the class default where they differ."""
    docs = field_docs(cls)
    hints = get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "required"
        shown = f"default {default!r}"
        if resolved is not None:
            value = getattr(resolved, f.name)
            shown = f"{value!r}" + (f", class default {default!r}" if value != default else "")
        lines.append(f"  {f.name} ({type_name(hints[f.name])}, {shown})\n      {docs.get(f.name, '')}")
    return "\n".join(lines)


__all__ = [
    "FIELD_BOUNDS",
    "Bound",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "config_help",
    "config_to_dict",
    "field_docs",
    "load_preset",
    "parse_value",
    "preset_names",
]
