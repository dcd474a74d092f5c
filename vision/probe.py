"""``rlkit probe``: the AtariARI linear-probe protocol (Anand et al. 2019) on a frozen encoder.

Features of the train / val / test splits are computed once with the frozen encoder (eval mode) and
standardised with the train mean / std. One linear classifier per label over the 256 byte values is trained
with Adam on train, early-stopped on val loss (per label), and scored on test: accuracy, support-weighted F1
(the AtariARI figure) and macro F1. The same is done for a randomly initialised encoder of the same
architecture, side by side.

As in AtariARI, labels whose value entropy over all frames is below 0.6 nats are not probed (a constant byte
scores F1 1 without looking at the pixels; ``remove_low_entropy_labels``), and test frames whose observation is
byte-identical to a train or val one are left out (``remove_duplicates``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlkit.checkpoint import write_text_atomic
from rlkit.errors import RLKitError
from rlkit.vision.data import FrameDataset, manifest_hash
from rlkit.vision.metrics import ENTROPY_THRESHOLD, f1_scores, informative_labels

CLASSES = 256


@torch.no_grad()
def extract_features(
    encoder: nn.Module, dataset: FrameDataset, batch_size: int = 256, indices: np.ndarray | None = None
) -> np.ndarray:
    """Frozen features (N, D) of every frame of ``dataset``, or of the frames at ``indices``."""
    encoder.eval()
    device = next(encoder.parameters()).device
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    out = []
    for start in range(0, len(indices), batch_size):
        obs, _ = dataset.batch(indices[start : start + batch_size])
        out.append(encoder(obs.to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(encoder, "features_dim", 0)), np.float32)


def train_linear_probes(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    lr: float = 3e-3,
    batch_size: int = 256,
    max_epochs: int = 100,
    patience: int = 10,
    seed: int = 0,
) -> nn.Linear:
    """One linear 256-way classifier per label (stored as one Linear with L*256 outputs), each label's rows
    kept from its epoch of lowest val loss; stops when no label improved for ``patience`` epochs."""
    x_train, y_train = (torch.as_tensor(a) for a in train)
    x_val, y_val = (torch.as_tensor(a) for a in val)
    labels = y_train.shape[1]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = nn.Linear(x_train.shape[1], labels * CLASSES)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    best_loss = torch.full((labels,), float("inf"))
    best_weight, best_bias = probe.weight.detach().clone(), probe.bias.detach().clone()
    since = epochs = 0
    while epochs < max_epochs:
        epochs += 1
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = probe(x_train[idx]).view(len(idx), labels, CLASSES)
            loss = F.cross_entropy(logits.reshape(-1, CLASSES), y_train[idx].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = probe(x_val).view(len(x_val), labels, CLASSES)
            per_label = F.cross_entropy(logits.permute(0, 2, 1), y_val, reduction="none").mean(0)
            improved = per_label < best_loss - 1e-6
            best_loss = torch.where(improved, per_label, best_loss)
            rows = improved.repeat_interleave(CLASSES)
            best_weight[rows] = probe.weight[rows]
            best_bias[rows] = probe.bias[rows]
        since = 0 if improved.any() else since + 1
        if since >= patience:
            break
    with torch.no_grad():
        probe.weight.copy_(best_weight)
        probe.bias.copy_(best_bias)
    probe.epochs_run = epochs
    return probe


def probe_features(
    features: dict[str, np.ndarray], labels: dict[str, np.ndarray], names: list[str], seed: int = 0,
    print_fn: Any = None, **kwargs: Any
) -> dict[str, dict[str, float]]:
    """Train probes on ``features["train"]`` (early stop on val), score on test: label -> scores."""
    mean = features["train"].mean(0, keepdims=True)
    std = features["train"].std(0, keepdims=True) + 1e-6
    norm = {k: ((v - mean) / std).astype(np.float32) for k, v in features.items()}
    probe = train_linear_probes(
        (norm["train"], labels["train"]), (norm["val"], labels["val"]), seed=seed, **kwargs
    )
    if print_fn is not None:
        print_fn(f"  probes trained for {probe.epochs_run} epochs (early stopping on val)")
    with torch.no_grad():
        pred = probe(torch.as_tensor(norm["test"])).view(len(norm["test"]), len(names), CLASSES).argmax(-1).numpy()
    return {name: f1_scores(labels["test"][:, i], pred[:, i]) for i, name in enumerate(names)}


def load_probe_encoder(
    target: str, encoder_name: str | None, observation_space: Any, seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, dict]:
    """(encoder, card) for a saved encoder file, or a random one of ``encoder_name`` when target is 'random';
    ``overrides`` are encoder kwargs that read the same weights differently (``features=layer3``)."""
    from rlkit.vision.encoders import make_encoder
    from rlkit.vision.io import load_encoder, read_card

    if target == "random":
        if not encoder_name:
            raise RLKitError("--encoder random needs --encoder-name NAME (e.g. nature_cnn).")
        torch.manual_seed(seed)
        encoder = make_encoder(encoder_name, observation_space, **(overrides or {}))
        return encoder, dict(encoder.spec)
    card = read_card(target)
    if encoder_name and encoder_name != card["encoder"]:
        raise RLKitError(f"{target} holds a {card['encoder']} encoder, not {encoder_name}; drop --encoder-name.")
    encoder = load_encoder(target, observation_space, overrides)
    return encoder, encoder.card


def observation_digests(dataset: FrameDataset, frames_per_read: int = 1024) -> list[bytes]:
    """A 128-bit BLAKE2b digest of each frame's whole observation (the uint8 stack the encoder sees), reading
    ``frames_per_read`` frames at a time (a 50k-frame Atari dataset is 1.4 GB)."""
    digests: list[bytes] = []
    for start in range(0, len(dataset), frames_per_read):
        obs = dataset.get_batch(np.arange(start, min(start + frames_per_read, len(dataset))), "obs")
        digests.extend(hashlib.blake2b(frame.tobytes(), digest_size=16).digest() for frame in obs)
    return digests


def unique_test_frames(datasets: dict[str, FrameDataset]) -> np.ndarray:
    """Positions of the test frames whose observation is not byte-identical to any train or val observation
    (AtariARI's ``remove_duplicates``)."""
    seen = set(observation_digests(datasets["train"])) | set(observation_digests(datasets["val"]))
    return np.array([i for i, d in enumerate(observation_digests(datasets["test"])) if d not in seen], np.int64)


def run_probe(
    target: str,
    data_dir: str | Path,
    encoder_name: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    baseline: bool = True,
    print_fn: Any = print,
    overrides: dict[str, Any] | None = None,
    entropy_threshold: float = ENTROPY_THRESHOLD,
    **kwargs: Any,
) -> dict[str, Any]:
    """Probe ``target`` (encoder file or 'random') and a random encoder of the same architecture; print the
    table and write probe.json (next to the encoder file, or in ``out``). ``overrides`` (encoder kwargs that
    leave the weights as they are, such as ``features``) apply to both columns. Labels whose value entropy over
    all frames is below ``entropy_threshold`` nats are dropped (0 keeps every label), and so are test frames
    duplicating a train or val observation (AtariARI)."""
    from rlkit.vision.encoders import make_encoder

    datasets = {split: FrameDataset(data_dir, split) for split in ("train", "val", "test")}
    all_names = datasets["train"].label_names
    if not all_names:
        raise RLKitError(f"{data_dir} has no labels to probe (frames only); collect an env with labels (Atari).")
    empty = [s for s, d in datasets.items() if len(d) == 0]
    if empty:
        raise RLKitError(f"{data_dir} has no frames in split(s) {', '.join(empty)}; collect more episodes.")
    space = datasets["train"].observation_space()
    encoder, card = load_probe_encoder(target, encoder_name, space, seed, overrides)
    labels = {s: d.get_batch(np.arange(len(d)), "labels") for s, d in datasets.items()}
    all_labels = np.concatenate([labels[s] for s in datasets])
    names, entropy = informative_labels(all_names, all_labels, entropy_threshold, source=str(data_dir))
    dropped = [n for n in all_names if n not in names]
    if dropped:
        print_fn(f"dropped {len(dropped)} low-entropy label(s) (value entropy over all {len(all_labels)} frames "
                 f"< {entropy_threshold} nats, AtariARI): "
                 + ", ".join(f"{n} {entropy[n]:.3f}" for n in dropped))
    columns_kept = [all_names.index(n) for n in names]
    test_rows = unique_test_frames(datasets)
    duplicates = len(datasets["test"]) - len(test_rows)
    if len(test_rows) == 0:
        raise RLKitError(f"all {duplicates} test frames of {data_dir} are byte-identical to train or val frames, "
                         "so nothing is left to test on; collect more (or more varied) episodes.")
    print_fn(f"removed {duplicates} of {len(datasets['test'])} test frames whose observation is identical to a "
             "train or val one (AtariARI remove_duplicates)")
    labels = {s: y[:, columns_kept] for s, y in labels.items()}
    labels["test"] = labels["test"][test_rows]
    rows = {"train": None, "val": None, "test": test_rows}
    encoders = {"encoder": encoder}
    if baseline and target != "random":
        torch.manual_seed(seed + 1)
        encoders["random"] = make_encoder(card["encoder"], space, **card.get("encoder_kwargs", {}))
    results: dict[str, Any] = {}
    for key, module in encoders.items():
        start = time.time()
        features = {s: extract_features(module, d, indices=rows[s]) for s, d in datasets.items()}
        print_fn(f"{key}: features of {sum(len(f) for f in features.values())} frames in {time.time() - start:.0f}s")
        start = time.time()
        results[key] = probe_features(features, labels, names, seed=seed, print_fn=print_fn, **kwargs)
        print_fn(f"  in {time.time() - start:.0f}s")
    columns = list(results)
    title = {"encoder": "pretrained" if target != "random" else f"random {card['encoder']}", "random": "random init"}
    header = f"{'label':16s}" + "".join(f" {title[c] + ' F1':>16s}" for c in columns)
    lines = [header]
    for name in names:
        lines.append(f"{name:16s}" + "".join(f" {results[c][name]['f1_weighted']:16.3f}" for c in columns))
    means = {c: float(np.mean([results[c][n]["f1_weighted"] for n in names])) for c in columns}
    lines.append(f"{'mean':16s}" + "".join(f" {means[c]:16.3f}" for c in columns))
    print_fn(f"linear probes on {data_dir} (train/val/test frames {len(datasets['train'])}/{len(datasets['val'])}/"
             f"{len(test_rows)}; test F1 weighted over 256 values, AtariARI protocol; mean over the "
             f"{len(names)} labels kept), encoder {card['encoder']} from {target}:")
    for line in lines:
        print_fn(line)
    record = {
        "encoder": str(target), "encoder_name": card["encoder"], "data": str(Path(data_dir).resolve()),
        "manifest_sha256": manifest_hash(data_dir), "labels": names, "seed": seed, "overrides": overrides or {},
        "entropy_threshold": entropy_threshold, "entropy": entropy, "dropped_labels": dropped,
        "test_duplicates_removed": duplicates, "mean_f1": means, "scores": results,
        "card": {k: v for k, v in card.items() if k != "config"},
    }
    out_dir = Path(out) if out else (Path(target).parent if target != "random" else Path("."))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "probe.json"
    write_text_atomic(path, json.dumps(record, indent=1))
    print_fn(f"wrote {path}")
    record["path"] = str(path)
    return record
