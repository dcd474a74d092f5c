"""Checkpoints: one safetensors file of tensors plus JSON metadata in its header, written atomically.

Loading never unpickles: tensors come from safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as save_numpy_file
from safetensors.torch import load_file, save_file

from rlkit.errors import RLKitError

FORMAT = "rlkit-checkpoint-v1"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes the file 0600 (and safetensors replaces it with a file of its own): it gets the
        # permissions open() would give it, after the writer is done with it
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as handle:  # on disk before the rename, so a crash leaves the old file or the new
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename): a crash leaves the old file or the new."""
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write tensors and JSON-serialisable metadata to ``path`` atomically (temp file + rename)."""
    header = {"format": FORMAT, "metadata": json.dumps(metadata)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def read_safetensors_header(path: str | Path, what: str, missing_hint: str, corrupt_hint: str) -> dict[str, str]:
    """The string metadata of a safetensors file, or a one-line error naming ``what`` it should be and the fix."""
    path = Path(path)
    if not path.is_file():
        raise RLKitError(f"{what} {path} does not exist; {missing_hint}.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RLKitError(f"{what} {path} is corrupt or not a safetensors file ({exc}); {corrupt_hint}.") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, or a one-line error if it is not an rlkit checkpoint."""
    header = read_safetensors_header(path, "checkpoint", "pass a run directory or a .safetensors checkpoint",
                                     "use another checkpoint")
    if header.get("format") != FORMAT:
        raise RLKitError(f"{path} is not an rlkit checkpoint (no {FORMAT} header); pass one written by rlkit train.")
    try:
        metadata = json.loads(header.get("metadata", ""))
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise RLKitError(f"checkpoint {path} has damaged metadata (not a JSON object); use another checkpoint.")
    return metadata


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint written by ``save_checkpoint``."""
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RLKitError(f"checkpoint {path} is corrupt ({exc}); use another checkpoint.") from None
    return tensors, metadata


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Atomically save numpy arrays (e.g. a replay buffer) as safetensors, with optional string metadata."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {**(metadata or {}), "format": FORMAT}
    _atomic_write(Path(path), lambda tmp: save_numpy_file(arrays, tmp, metadata=header))


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim") -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer state dict into tensors + JSON (param groups, scalar state)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "optim"
) -> None:
    """Inverse of ``optimizer_tensors``. The moments and step counters come from the checkpoint; every
    hyperparameter (eps, betas, weight decay, fused / capturable kernels) stays the one ``optimizer`` was built
    with, from the resumed run's config and device, so a ``--set`` on resume takes effect and a run saved on one
    device resumes on another."""
    saved_groups = meta["param_groups"]
    saved_sizes = [len(group["params"]) for group in saved_groups]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise RLKitError(
            f"the checkpoint's optimizer has parameter groups of {saved_sizes} tensors, this agent's {sizes}; "
            "resume with the run's own encoder settings (freeze, encoder_lr_scale)."
        )
    groups = [
        {**saved, **{key: value for key, value in current.items() if key != "params"}}
        for saved, current in zip(saved_groups, optimizer.param_groups, strict=True)
    ]
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
