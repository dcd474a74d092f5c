"""glibc malloc tuning (rlkit/allocator.py): applied once, can be turned off, and saves page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# A small conv net's forward + backward on a PPO-sized minibatch (256 Atari frame stacks: a 29 MB float input,
# activations and gradients of 1-13 MB, all freed after each step); report the minor page faults of 6 steps
# after 2 warm-up steps, and what tune_allocator applied.
PROBE = """
import json, resource, sys, torch
from rlkit.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tune" else None
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 8, 4), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 4, 2),
                          torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64 * 9 * 9, 16))
frames = torch.randint(0, 256, (256, 4, 84, 84), dtype=torch.uint8)
def step():
    net(frames.float() / 255).square().mean().backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    step()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "applied": applied,
                  "again": applied is None or tune_allocator() is applied}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_allocator_reuses_freed_memory_instead_of_page_faulting():
    default, tuned = _probe("plain"), _probe("tune")
    assert set(tuned["applied"]) == {"mmap_threshold", "trim_threshold", "top_pad"} and tuned["again"]
    # by default the freed blocks go back to the system and are faulted in again (measured: 110k-270k faults);
    # tuned, the heap keeps them (measured: 0)
    assert tuned["faults"] * 4 < default["faults"], (tuned, default)


def test_allocator_tuning_can_be_turned_off():
    off = _probe("tune", RLKIT_MALLOC_TUNING="0")
    assert off["applied"] == {} and off["again"]
