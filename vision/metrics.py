"""Scores for pretraining and probes: F1 (macro / weighted), confusion matrices, R2, Fréchet distance, and the
AtariARI filter of low-entropy labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rlkit.errors import RLKitError

ENTROPY_THRESHOLD = 0.6
"""AtariARI's ``remove_low_entropy_labels`` default (``get_episodes(entropy_threshold=0.6)``), in nats."""


def label_entropy(values: np.ndarray) -> float:
    """Entropy in nats (natural log) of the empirical distribution of ``values`` (0 for a constant label)."""
    _, counts = np.unique(np.asarray(values), return_counts=True)
    p = counts / max(counts.sum(), 1)
    return float(0.0 - (p * np.log(p)).sum())  # 0.0 - 0.0, not -0.0, for a constant label


def informative_labels(
    names: list[str], labels: np.ndarray, threshold: float = ENTROPY_THRESHOLD, source: str = "the dataset"
) -> tuple[list[str], dict[str, float]]:
    """AtariARI's ``remove_low_entropy_labels``: (names of the labels whose value entropy over ``labels`` (N, L)
    is at least ``threshold`` nats, entropy of every label). A label below it (a constant or nearly constant
    byte) is scored ~1 by a predictor that ignores the pixels, so means leave it out; ``threshold`` 0 keeps every
    label. None left is a one-line error naming ``source``."""
    entropy = {name: label_entropy(labels[:, i]) for i, name in enumerate(names)}
    kept = [name for name in names if entropy[name] >= threshold]
    if names and not kept:
        values = ", ".join(f"{name} {value:.3f}" for name, value in entropy.items())
        raise RLKitError(f"every label of {source} has a value entropy below {threshold} nats over its {len(labels)} "
                         f"frames ({values}), so none is left to score; collect more varied frames or lower "
                         "entropy_threshold (0 keeps every label).")
    return kept, entropy


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int = 256) -> np.ndarray:
    """``classes x classes`` counts, rows = true value, columns = predicted value."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: int = 256) -> dict[str, float]:
    """Accuracy, macro F1 and support-weighted F1 over the classes present in ``y_true`` or ``y_pred``
    (scikit-learn's ``f1_score`` conventions; AtariARI reports the weighted one)."""
    matrix = confusion_matrix(y_true, y_pred, classes)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = max(support.sum(), 1.0)
    return {
        "accuracy": float(tp.sum() / total),
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "f1_weighted": float((f1 * support).sum() / total),
    }


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (1 when the predictions are exact, 0 for predicting the mean)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    residual = ((y_true - y_pred) ** 2).sum()
    total = ((y_true - y_true.mean()) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else float(residual == 0)


def save_confusion_png(matrix: np.ndarray, path: str | Path, title: str) -> None:
    """A log-scaled image of the rows / columns of ``matrix`` that are not all zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = np.flatnonzero(matrix.sum(0) + matrix.sum(1))
    sub = matrix[np.ix_(used, used)]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(np.log1p(sub), cmap="viridis", interpolation="nearest")
    ticks = np.linspace(0, len(used) - 1, min(len(used), 8)).astype(int) if len(used) else []
    ax.set_xticks(ticks, [str(used[t]) for t in ticks])
    ax.set_yticks(ticks, [str(used[t]) for t in ticks])
    ax.set_xlabel("predicted value")
    ax.set_ylabel("true value")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N x D):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)``, the trace term via symmetric eigendecompositions."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_root
    return float(value.clamp(min=0))
