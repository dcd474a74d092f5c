"""Process-wide tuning of glibc's malloc for training on CPUs.

A PPO minibatch of 256 Atari frame stacks allocates tensors of 7-30 MB (the float input, activations and their
gradients) and frees them again, a few hundred times per update. glibc serves such sizes with fresh ``mmap``
pages, or trims them off the heap when they are freed, so every minibatch pays for page faults and for zeroing
the pages anew. Measured on CPU-2 (2 cores, Sapphire Rapids), one PPO update of 4 epochs x 4 minibatches of
256 (NatureCNN, fp32, 2 threads), 4 updates in each of 3 processes per setting: 1.20-1.50 s (median 1.37)
with 0.8-1.5M minor page faults per process by default, 1.18-1.24 s (median 1.22) with 0.11M with the
settings below (docs/benchmarks.md, session 8).

The settings keep freed memory in the heap for reuse: ``M_MMAP_THRESHOLD`` 32 MiB (glibc's maximum on
64-bit; larger blocks still get their own mapping), ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD`` 256 MiB (the
heap grows in steps of that size; pages count in RSS only once touched). The cost: a process keeps up to 1 GiB
of freed memory instead of returning it to the system at once. PyTorch's CPU performance guide makes the same
point with jemalloc / tcmalloc; this needs no extra library.

``RLKIT_MALLOC_TUNING=0`` in the environment turns it off. Other C libraries (macOS, musl) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS: dict[str, tuple[int, int]] = {
    "mmap_threshold": (M_MMAP_THRESHOLD, 32 * 2**20),
    "trim_threshold": (M_TRIM_THRESHOLD, 2**30),
    "top_pad": (M_TOP_PAD, 256 * 2**20),
}

_applied: dict[str, int] | None = None


def tune_allocator() -> dict[str, int]:
    """Apply ``SETTINGS`` to this process's glibc malloc (once; later calls return the same result).

    Returns the settings that glibc accepted, by name; empty when turned off by ``RLKIT_MALLOC_TUNING=0``,
    or on a platform without glibc's ``mallopt``."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = {}
    if os.environ.get("RLKIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for name, (parameter, value) in SETTINGS.items():
        if mallopt(parameter, value) == 1:
            _applied[name] = value
    return _applied
