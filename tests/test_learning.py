"""End-to-end learning: DQN with the classic preset solves CartPole-v1 (about a minute on one core)."""

from __future__ import annotations

import json

import pytest

from rlkit.checkpoint import load_checkpoint
from rlkit.cli import main


@pytest.mark.slow
def test_dqn_solves_cartpole(run_dir):
    code = main(["train", "dqn", "--env", "CartPole-v1", "--seed", "0", "--set", "torch_threads=1",
                 "--set", "stop_at_return=475", "--run-dir", str(run_dir)])
    assert code == 0
    records = [json.loads(line) for line in (run_dir / "eval" / "evaluations.jsonl").read_text().splitlines()]
    best = max(r["mean"] for r in records)
    assert best >= 475, [(r["step"], r["mean"]) for r in records]
    assert all(r["episodes"] == 10 for r in records)  # classic preset: 10 evaluation episodes
    _, meta = load_checkpoint(run_dir / "checkpoints" / "best.safetensors")
    assert meta["counters"]["best_eval"] == pytest.approx(best)
    assert meta["counters"]["global_step"] <= 50_000
