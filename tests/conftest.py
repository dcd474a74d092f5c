"""Shared test setup: one torch thread (the suite shares a small CPU) and a temporary run directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A not-yet-existing run directory inside pytest's temporary directory."""
    return tmp_path / "run"


@pytest.fixture(autouse=True)
def _one_thread():
    """``rlkit train`` calls ``torch.set_num_threads``; restore one thread after each test."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _nothing_written_to_the_working_directory():
    """Tests write under tmp_path: a file left in the directory pytest runs from (a probe.json once was, and
    got committed) fails the test that wrote it."""
    before = set(os.listdir("."))
    yield
    created = sorted(set(os.listdir(".")) - before)
    assert not created, f"the test wrote {created} into {os.getcwd()}; write under tmp_path instead"
