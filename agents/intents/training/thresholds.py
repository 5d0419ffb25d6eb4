"""Calibration and thresholds: a temperature on out-of-fold scores, the lowest confidence that keeps a
target precision, per-intent thresholds where a Wilson bound shows an intent differs, calibration error."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

# An intent gets its own threshold only with at least this many OOF predictions ...
MIN_SUPPORT = 30
# ... and only when a Wilson bound at this z shows it differs from the global threshold: lower when the
# lower bound still clears the target, higher when the upper bound at the global threshold misses it.
WILSON_Z = 3.0
# After the per-intent overrides, re-solve the global threshold so the aggregate precision meets the target.
REBALANCE = False
# Whether an intent may get a threshold below the global one.
LOWER = True


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(scores / T)."""
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = scores / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))

    result = minimize_scalar(nll, bounds=(math.log(1e-3), math.log(1e2)), method="bounded")
    return float(math.exp(result.x))


def wilson_lower(successes: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Wilson score lower bound of a binomial proportion (vectorised)."""
    n = np.maximum(np.asarray(n, dtype=float), 1e-12)
    p = np.asarray(successes, dtype=float) / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


def lowest_threshold(
    conf: np.ndarray,
    correct: np.ndarray,
    target: float,
    min_threshold: float,
    max_threshold: float,
    *,
    z: float = 0.0,
    min_support: int = 1,
) -> float | None:
    """Lowest t in [min_threshold, max_threshold] with precision (Wilson bound at z) of {conf >= t} >= target; None if none."""
    conf = np.asarray(conf, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order]
    n = np.arange(1, len(c) + 1)
    hits = np.cumsum(ok)
    # Only cut where the next confidence differs: a threshold includes every tie.
    last_of_tie = np.r_[c[1:] != c[:-1], True] if len(c) else np.zeros(0, dtype=bool)
    bound = wilson_lower(hits, n, z) if z > 0 else hits / n
    valid = last_of_tie & (bound >= target) & (n >= min_support) & (c >= min_threshold) & (c <= max_threshold)
    # Candidate thresholds at or above max_threshold: the cap itself, if the set above it is precise enough.
    above_cap = c >= max_threshold
    candidates = []
    if valid.any():
        candidates.append(float(c[np.nonzero(valid)[0].max()]))
    k = int(above_cap.sum())
    if k and k >= min_support and (wilson_lower(hits[k - 1], k, z) if z > 0 else hits[k - 1] / k) >= target:
        candidates.append(float(max_threshold))
    if not candidates:
        return None
    return max(min_threshold, min(candidates))


def choose_thresholds(
    conf: np.ndarray,
    pred: np.ndarray,
    y: np.ndarray,
    intents: Sequence[str],
    target: float,
    min_threshold: float,
    max_threshold: float,
) -> tuple[float, dict[str, float]]:
    """Global threshold over all predictions, then per-intent thresholds with a small-sample guard."""
    correct = pred == y
    global_t = lowest_threshold(conf, correct, target, min_threshold, max_threshold)
    if global_t is None:
        global_t = max_threshold
    per_intent: dict[str, float] = {}
    for k, intent in enumerate(intents):
        mask = pred == k
        if mask.sum() < MIN_SUPPORT:
            continue  # too little evidence: threshold_for() falls back to the global threshold
        c, ok = conf[mask], correct[mask]
        above = c >= global_t
        n_above, hits_above = int(above.sum()), int(ok[above].sum())
        upper = 1.0 - float(wilson_lower(n_above - hits_above, n_above, WILSON_Z)) if n_above else 1.0
        if upper < target:
            # Clearly below target at the global threshold: stricter (point estimate; the safe direction).
            strict = lowest_threshold(c, ok, target, min_threshold, max_threshold)
            per_intent[intent] = float(max_threshold) if strict is None else max(strict, global_t)
            continue
        # Go below the global threshold only on strong evidence (Wilson lower bound clears the target).
        lenient = lowest_threshold(c, ok, target, min_threshold, max_threshold, z=WILSON_Z, min_support=MIN_SUPPORT)
        if LOWER and lenient is not None and lenient < global_t:
            per_intent[intent] = lenient
    if per_intent and REBALANCE:
        global_t = _rebalanced_global(conf, pred, correct, intents, per_intent, target, min_threshold, max_threshold)
    return float(global_t), per_intent


def _rebalanced_global(
    conf: np.ndarray,
    pred: np.ndarray,
    correct: np.ndarray,
    intents: Sequence[str],
    per_intent: dict[str, float],
    target: float,
    min_threshold: float,
    max_threshold: float,
) -> float:
    """Global threshold for intents without their own, so that all automated OOF predictions together meet the target."""
    own = np.array([intent in per_intent for intent in intents])
    t_own = np.array([per_intent.get(intent, np.inf) for intent in intents])
    fixed = own[pred] & (conf >= t_own[pred])
    base_n, base_hits = int(fixed.sum()), int(correct[fixed].sum())
    rest = ~own[pred]
    c, ok = conf[rest], correct[rest]
    order = np.argsort(-c, kind="stable")
    c, ok = c[order], ok[order]
    n = base_n + np.arange(1, len(c) + 1)
    hits = base_hits + np.cumsum(ok)
    last_of_tie = np.r_[c[1:] != c[:-1], True] if len(c) else np.zeros(0, dtype=bool)
    valid = last_of_tie & (hits >= target * n) & (c >= min_threshold) & (c <= max_threshold)
    if valid.any():
        return float(c[np.nonzero(valid)[0].max()])
    return float(max_threshold)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of top-1 confidence over equal-width bins."""
    conf = np.asarray(conf, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(conf[m].mean() - correct[m].mean())
    return float(total / max(len(conf), 1))
