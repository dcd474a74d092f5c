"""Optimizers and learning-rate schedules of every gradient-based agent; resume recomputes the LR; early stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_cli import assert_user_error
from test_smoke import scalars

from rlkit.agents import A2CConfig, DQNConfig, PPOConfig, RecurrentPPOConfig, ReinforceConfig
from rlkit.agents.optim import OptimizerConfig, make_optimizer, optimizer_from_config, scheduled_lr
from rlkit.agents.schedules import lr_factor
from rlkit.checkpoint import load_checkpoint
from rlkit.cli import main
from rlkit.errors import RLKitError


def test_lr_factor_hand_computed():
    # total 1000 steps
    assert lr_factor("constant", 730, 1000) == 1.0
    assert lr_factor("linear", 0, 1000) == 1.0
    assert lr_factor("linear", 250, 1000) == pytest.approx(0.75)
    assert lr_factor("linear", 1500, 1000) == 0.0  # past the end: stays at 0
    assert lr_factor("cosine", 0, 1000) == pytest.approx(1.0)
    assert lr_factor("cosine", 250, 1000) == pytest.approx((1 + math.sqrt(0.5)) / 2)  # 0.853553
    assert lr_factor("cosine", 500, 1000) == pytest.approx(0.5)
    assert lr_factor("cosine", 1000, 1000) == pytest.approx(0.0, abs=1e-12)
    # step: x0.1 every 300 steps -> 1 (0..299), 0.1 (300..599), 0.01 (600..899), 0.001 (900..)
    assert lr_factor("step", 299, 1000, step_every=300, step_gamma=0.1) == 1.0
    assert lr_factor("step", 300, 1000, step_every=300, step_gamma=0.1) == pytest.approx(0.1)
    assert lr_factor("step", 899, 1000, step_every=300, step_gamma=0.1) == pytest.approx(0.01)
    assert lr_factor("step", 900, 1000, step_every=300, step_gamma=0.1) == pytest.approx(0.001)


def test_scheduled_lr_from_config():
    config = OptimizerConfig(total_steps=1000, lr_schedule="step", lr_step_gamma=0.5)
    config.lr = 0.2  # type: ignore[attr-defined]  # every agent config defines lr
    assert scheduled_lr(config, 249) == pytest.approx(0.2)  # lr_step_every 0: a quarter of total_steps
    assert scheduled_lr(config, 250) == pytest.approx(0.1)
    assert scheduled_lr(config, 999) == pytest.approx(0.025)
    ppo = PPOConfig(total_steps=400, lr=1e-3)  # PPO's default schedule: linear
    assert scheduled_lr(ppo, 100) == pytest.approx(7.5e-4)


def test_unknown_schedule_and_optimizer_are_one_line_errors():
    with pytest.raises(RLKitError, match="choose one of: constant, linear, cosine, step"):
        lr_factor("exponential", 1, 10)
    with pytest.raises(RLKitError, match="choose one of: adam, adamw, rmsprop, adagrad, sgd"):
        make_optimizer("lamb", [torch.nn.Parameter(torch.zeros(1))], 1e-3)


@pytest.mark.parametrize(
    "name,cls,expected",
    [
        ("adam", torch.optim.Adam, {"lr": 0.01, "eps": 1e-5, "weight_decay": 0.0}),
        ("adamw", torch.optim.AdamW, {"lr": 0.01, "eps": 1e-5, "weight_decay": 0.01}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "eps": 1e-5, "alpha": 0.99, "weight_decay": 0.0}),
        ("adagrad", torch.optim.Adagrad, {"lr": 0.01, "eps": 1e-5, "weight_decay": 0.0}),
        ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}),
    ],
)
def test_optimizers_build_with_their_hyper_parameters(name, cls, expected):
    optimizer = make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], 0.01, eps=1e-5)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert {k: group[k] for k in expected} == pytest.approx(expected)


def test_optimizer_config_fields_reach_the_optimizer():
    config = PPOConfig(optimizer="sgd", lr=0.05, momentum=0.5, weight_decay=1e-4)
    group = optimizer_from_config(config, [torch.nn.Parameter(torch.zeros(1))], eps=1e-5).param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.5, 1e-4)
    config = DQNConfig(optimizer="adamw", weight_decay=0.0)
    assert optimizer_from_config(config, [torch.nn.Parameter(torch.zeros(1))], eps=1e-8).defaults["weight_decay"] == 0


@pytest.mark.parametrize("cls", [DQNConfig, PPOConfig, A2CConfig, ReinforceConfig, RecurrentPPOConfig])
def test_every_gradient_agent_has_the_optimizer_fields(cls):
    assert issubclass(cls, OptimizerConfig)
    for field in ("optimizer", "lr", "lr_schedule", "weight_decay", "momentum", "lr_step_every", "lr_step_gamma"):
        assert hasattr(cls(), field)


@pytest.mark.parametrize("algo", ["dqn", "ppo", "a2c", "reinforce", "ppo_lstm"])
@pytest.mark.parametrize("setting,needle", [("optimizer=adamx", "adam|adamw|rmsprop|adagrad|sgd"),
                                            ("lr_schedule=exp", "constant|linear|cosine|step")])
def test_bad_optimizer_or_schedule_exits_2(capsys, algo, setting, needle):
    assert_user_error(capsys, ["train", algo, "--env", "CartPole-v1", "--set", setting, "--total-steps", "10"], needle)


def test_dqn_linear_schedule_changes_the_learning_rate(run_dir):
    lr, total = 1e-3, 600
    assert main(["train", "dqn", "--env", "CartPole-v1", "--total-steps", str(total), "--run-dir", str(run_dir),
                 "--set", "lr_schedule=linear", "--set", f"lr={lr}", "--set", "learning_starts=100",
                 "--set", "train_freq=1", "--set", "gradient_steps=1", "--set", "log_every=100",
                 "--set", "eval_episodes=1", "--set", "torch_threads=1"]) == 0
    events = scalars(run_dir).Scalars("charts/learning_rate")
    trained = [e for e in events if e.step >= 100]
    assert len(trained) >= 4
    for event in trained:  # set at the step it is logged at: lr * (1 - step / total)
        assert event.value == pytest.approx(lr * (1 - event.step / total), rel=1e-5, abs=1e-9)
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # reached the end


def _last_lr(run) -> float:
    return load_checkpoint(run / "checkpoints" / "last.safetensors")[1]["optimizer"]["param_groups"][0]["lr"]


def test_resume_recomputes_the_learning_rate(tmp_path):
    """Step decay every 500 env steps (independent of total_steps): a run to 2000 and a run to 1000 resumed
    to 2000 use the same learning rates, and end at lr * 0.5**4."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["dqn", "--env", "CartPole-v1", "--set", "learning_starts=200", "--set", "lr=1e-3",
              "--set", "lr_schedule=step", "--set", "lr_step_every=500", "--set", "lr_step_gamma=0.5",
              "--set", "eval_episodes=1", "--set", "torch_threads=1"]
    assert main(["train", *common, "--total-steps", "2000", "--run-dir", str(a)]) == 0
    assert main(["train", *common, "--total-steps", "1000", "--run-dir", str(b)]) == 0
    assert _last_lr(b) == pytest.approx(1e-3 * 0.5**2)
    assert main(["train", "--resume", str(b), "--total-steps", "2000"]) == 0
    assert _last_lr(b) == pytest.approx(1e-3 * 0.5**4) == _last_lr(a)


@pytest.mark.parametrize(
    "algo,env,extra",
    [
        ("dqn", "CartPole-v1", ["--set", "learning_starts=100"]),
        ("ppo", "CartPole-v1", []),
        ("a2c", "CartPole-v1", []),
        ("reinforce", "CartPole-v1", []),
        ("ppo_lstm", "rlkit/MaskedCartPole-v0", []),
        ("q_learning", "FrozenLake-v1", []),
    ],
)
def test_stop_at_return_stops_every_agent(run_dir, algo, env, extra):
    assert main(["train", algo, "--env", env, "--total-steps", "1000000", "--run-dir", str(run_dir),
                 "--set", "eval_every=500", "--set", "eval_episodes=1", "--set", "stop_at_return=-1000",
                 "--set", "torch_threads=1", *extra]) == 0
    records = [json.loads(line) for line in (run_dir / "eval" / "evaluations.jsonl").read_text().splitlines()]
    assert len(records) == 1 and 500 <= records[0]["step"] < 2000
    meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")[1]
    assert meta["counters"]["global_step"] == records[0]["step"]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_cpu_adam_is_fused_and_matches_the_reference_implementation(name):
    torch.manual_seed(0)
    start = torch.randn(64, 32)
    targets = torch.randn(16, 32)
    fused_param, reference_param = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    ours = make_optimizer(name, [fused_param], lr=1e-2, eps=1.5e-4)
    assert ours.defaults["fused"] is True
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    decay = 0.0 if name == "adam" else 0.01
    reference = cls([reference_param], lr=1e-2, eps=1.5e-4, weight_decay=decay, foreach=False)
    for _ in range(20):
        for param, optimizer in ((fused_param, ours), (reference_param, reference)):
            optimizer.zero_grad()
            ((targets @ param.T) ** 2).mean().backward()
            optimizer.step()
    torch.testing.assert_close(fused_param, reference_param, rtol=1e-5, atol=1e-6)
