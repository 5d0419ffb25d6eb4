"""Candidate sets for the language-model tier: the few intents the true one is almost surely among.

When the local tiers are unsure, Claude is asked to choose among the model's `k` most probable
intents rather than the whole catalogue. `k` is a conformal quantile: on out-of-fold predictions of
the requests the local tiers would *not* automate (the ones Claude is asked about), the smallest `k`
whose top-k holds the true intent for at least `coverage` of them, with the finite-sample correction
(rank ceil((n + 1) x coverage) of n). Fitted inside train_model(), so in the nested cross-validation
it never sees the requests it is measured on.
"""

from __future__ import annotations

import math

import numpy as np

COVERAGE = 0.99
MIN_SIZE = 3


def true_ranks(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1-based rank of the true intent in each row (ties counted pessimistically)."""
    p_true = probs[np.arange(len(y)), y]
    return (probs > p_true[:, None]).sum(axis=1) + (probs == p_true[:, None]).sum(axis=1)


def fit_top_k(probs: np.ndarray, y: np.ndarray, coverage: float = COVERAGE) -> int:
    """The smallest k whose top-k sets cover the true intent of at least `coverage` of these rows."""
    n_classes = probs.shape[1] if probs.ndim == 2 else 0
    if len(y) == 0:
        return max(1, min(MIN_SIZE, n_classes))
    ranks = np.sort(true_ranks(np.asarray(probs, dtype=np.float64), np.asarray(y)))
    position = math.ceil((len(ranks) + 1) * coverage)
    k = n_classes if position > len(ranks) else int(ranks[position - 1])
    return int(max(min(MIN_SIZE, n_classes), min(k, n_classes)))


def coverage_of(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose top-k holds the true intent."""
    return float((true_ranks(probs, y) <= k).mean()) if len(y) else 1.0
