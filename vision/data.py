"""Frame datasets on disk: chunks of K frames as safetensors files plus a JSON manifest.

Layout of a dataset directory (written by ``rlkit collect``)::

    manifest.json            format, env, policy, seed, shapes, label names, chunks, episodes and their split
    chunk_000000.safetensors  obs (K, C, H, W) uint8, labels (K, L) int64, episode (K,) int64,
                              step (K,) int64 (step within its episode), action (K,) int64, reward (K,) float32,
                              color (K, H', W', 3) uint8 with --color

Episodes, not frames, are assigned to the train / val / test splits (``manifest["episodes"][i]["split"]``), so
frames of one episode never appear in two splits. ``FrameDataset`` reads the chunks lazily (memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.checkpoint import save_arrays
from rlkit.errors import RLKitError

FORMAT = "rlkit-frames-v1"
SPLITS = ("train", "val", "test")


_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F16": np.float16,
           "F32": np.float32, "F64": np.float64, "BOOL": np.bool_}


def memmap_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of the arrays in a safetensors file: indexing reads only the rows it touches. A file
    that is empty, truncated or not safetensors is a one-line error."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if file_size < 8 or 8 + size > file_size:
            raise RLKitError(f"{path} is truncated ({file_size} bytes, shorter than its header says).")
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RLKitError(f"{path} is not a safetensors file (its header is not JSON).") from None
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        if 8 + size + stop > file_size:
            raise RLKitError(f"{path} is truncated: array {name!r} ends at byte {8 + size + stop}, the file at "
                             f"{file_size}.")
        shape = tuple(info["shape"])
        if stop == start:
            arrays[name] = np.zeros(shape, dtype=_DTYPES[info["dtype"]])
            continue
        arrays[name] = np.memmap(path, dtype=_DTYPES[info["dtype"]], mode="r", offset=8 + size + start, shape=shape)
    return arrays


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    from rlkit.checkpoint import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1))


class ChunkWriter:
    """Buffers frames and writes a chunk file every ``chunk_size`` frames; ``close`` writes the manifest."""

    def __init__(self, out_dir: str | Path, chunk_size: int, manifest: dict[str, Any]) -> None:
        self.dir = Path(out_dir)
        if (self.dir / "manifest.json").exists():
            raise RLKitError(f"{self.dir} already holds a dataset (manifest.json); pass another --out.")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self.manifest = {"format": FORMAT, **manifest, "chunk_size": chunk_size, "chunks": [], "frames": 0}
        self._buffer: dict[str, list[np.ndarray]] = {}

    def add(self, **arrays: Any) -> None:
        for key, value in arrays.items():
            self._buffer.setdefault(key, []).append(np.asarray(value))
        if len(self._buffer["obs"]) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffer.get("obs"):
            return
        arrays = {key: np.stack(values) for key, values in self._buffer.items()}
        name = f"chunk_{len(self.manifest['chunks']):06d}.safetensors"
        save_arrays(self.dir / name, arrays)
        count = len(arrays["obs"])
        self.manifest["chunks"].append({"file": name, "frames": count, "start": self.manifest["frames"]})
        self.manifest["frames"] += count
        self._buffer = {}

    def close(self, extra: dict[str, Any]) -> Path:
        self.flush()
        self.manifest.update(extra)
        path = self.dir / "manifest.json"
        _atomic_json(path, self.manifest)
        return path


def assign_splits(episode_ids: list[int], seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> dict[int, str]:
    """Episode id -> split: a seeded shuffle, ~10% val and ~10% test, at least one of each with 3+ episodes."""
    ids = list(episode_ids)
    rng = np.random.default_rng(seed + 1_000_003)
    rng.shuffle(ids)
    n = len(ids)
    n_val = max(1, round(fractions[0] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[1] * n)) if n >= 2 else 0
    split = {}
    for i, episode in enumerate(ids):
        split[episode] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return split


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a dataset directory, or a one-line error."""
    data_dir = Path(data_dir)
    path = data_dir / "manifest.json"
    if not data_dir.is_dir():
        raise RLKitError(f"data directory {data_dir} does not exist; create it with `rlkit collect --out {data_dir}`.")
    if not path.is_file():
        raise RLKitError(f"{data_dir} has no manifest.json, so it is not a dataset written by `rlkit collect`.")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise RLKitError(f"{path} is not UTF-8 text (binary or damaged); collect the data again.") from None
    except json.JSONDecodeError as exc:
        raise RLKitError(f"{path} is not valid JSON ({exc}); collect the data again.") from None
    if not isinstance(manifest, dict):
        raise RLKitError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object; collect the data "
                         "again.")
    if manifest.get("format") != FORMAT:
        raise RLKitError(f"{path} is not an {FORMAT} manifest; collect the data again with `rlkit collect`.")
    return manifest


def manifest_hash(data_dir: str | Path) -> str:
    """sha256 of manifest.json (identifies the dataset in encoder cards)."""
    return hashlib.sha256((Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


class FrameDataset(torch.utils.data.Dataset):
    """Frames of one split (or all) of a collected dataset, read lazily from memory-mapped chunks.

    Items are ``(obs uint8 tensor (C, H, W), labels int64 tensor (L,))``; with ``color=True`` the full-colour
    frame is appended. ``labels`` is empty when the dataset has none.
    """

    def __init__(self, data_dir: str | Path, split: str | None = "train", color: bool = False) -> None:
        self.dir = Path(data_dir)
        self.manifest = read_manifest(self.dir)
        if split is not None and split not in SPLITS:
            raise RLKitError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
        if color and not self.manifest.get("color"):
            raise RLKitError(f"{self.dir} has no colour frames; collect it again with --color.")
        self.split, self.color = split, color
        self.label_names: list[str] = list(self.manifest.get("labels") or [])
        self.obs_shape = tuple(self.manifest["obs_shape"])
        keep = {e["id"] for e in self.manifest["episodes"] if split is None or e["split"] == split}
        chunk_ids, offsets = [], []
        self._handles: dict[int, Any] = {}
        for c in range(len(self.manifest["chunks"])):
            episodes = np.asarray(self._open(c)["episode"])
            rows = np.flatnonzero(np.isin(episodes, list(keep)))
            chunk_ids.append(np.full(len(rows), c, dtype=np.int64))
            offsets.append(rows.astype(np.int64))
        self._chunk = np.concatenate(chunk_ids) if chunk_ids else np.zeros(0, np.int64)
        self._row = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)

    def _open(self, c: int) -> Any:
        if c not in self._handles:
            path = self.dir / self.manifest["chunks"][c]["file"]
            if not path.is_file():
                raise RLKitError(f"{path} is missing; the dataset in {self.dir} is incomplete, collect it again.")
            try:
                arrays = memmap_safetensors(path)
            except RLKitError as exc:
                raise RLKitError(f"{exc} The dataset in {self.dir} is damaged; collect it again.") from None
            expected = self.manifest["chunks"][c]["frames"]
            if "obs" not in arrays or len(arrays["obs"]) != expected:
                found = len(arrays["obs"]) if "obs" in arrays else "no"
                raise RLKitError(f"{path} holds {found} frames, the manifest says {expected}; the dataset in "
                                 f"{self.dir} is damaged, collect it again.")
            if arrays["obs"].shape[1:] != self.obs_shape:
                raise RLKitError(f"{path} holds frames of shape {list(arrays['obs'].shape[1:])}, the manifest says "
                                 f"{list(self.obs_shape)}; the dataset in {self.dir} is damaged, collect it again.")
            self._handles[c] = arrays
        return self._handles[c]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the files
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self._row)

    def _read(self, c: int, rows: np.ndarray, key: str) -> np.ndarray:
        arrays = self._open(c)
        if key not in arrays:
            return np.zeros((len(rows), 0), dtype=np.int64)
        return np.asarray(arrays[key][rows])

    def get_batch(self, indices: np.ndarray | list[int], key: str = "obs") -> np.ndarray:
        """Array ``key`` (obs, labels, color, episode, action, ...) for dataset positions ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        chunks, rows = self._chunk[indices], self._row[indices]
        out: np.ndarray | None = None
        for c in np.unique(chunks):
            where = np.flatnonzero(chunks == c)
            values = self._read(int(c), rows[where], key)
            if out is None:
                out = np.empty((len(indices), *values.shape[1:]), dtype=values.dtype)
            out[where] = values
        if out is None:
            raise IndexError("empty index list")
        return out

    def batch(self, indices: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs uint8, labels int64) tensors for ``indices``: faster than stacking items."""
        return torch.from_numpy(self.get_batch(indices, "obs")), torch.from_numpy(self.get_batch(indices, "labels"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        keys = ("obs", "labels", "color") if self.color else ("obs", "labels")
        return tuple(torch.from_numpy(self.get_batch([index], key)[0]) for key in keys)

    def observation_space(self) -> Any:
        import gymnasium as gym

        return gym.spaces.Box(0, 255, self.obs_shape, np.uint8)
