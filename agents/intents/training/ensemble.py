"""Fitting the costlier second tier (agents/intents/localmodel/head.py): a linear head on a sentence encoder's
vector, a logit-space ensemble with the cheap tier, and the cascade threshold below which it runs.

The cheap tier's calibrated probability decides first: at or above `cascade_threshold` its answer
stands. Below it the request is encoded, and the answer is `softmax((w * s1 / T1 + (1 - w) * s2 / T2) / Te)`
with s1 the cheap scores, s2 the head's. Every constant is fitted on out-of-fold predictions inside
`train_model()`; the shares and costs measured: docs/local-model.md, "The second tier's cascade".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from agents.intents.localmodel.candidates import coverage_of
from agents.intents.localmodel.head import EncoderHead
from agents.intents.localmodel.scores import softmax_rows

HEAD_C = 50.0  # inverse L2 strength of the head's logistic regression (unit-length inputs)
WEIGHTS = (0.3, 0.4, 0.5, 0.6)  # the cheap tier's share of the ensemble, chosen on out-of-fold NLL
CASCADE_PRECISION = 0.995  # the cheap answer stands where its own out-of-fold precision reaches this ...
# ... but the encoder runs for at most this share of requests, which bounds the local tiers' mean CPU
# per request (the nested cross-validation that chose it: docs/local-model.md).
MAX_ENCODED_SHARE = 0.35


# Embeddings of the base training data, precomputed (`python -m agents.intents.localmodel.encoder CSV OUT`):
# the first model is trained in under a minute instead of spending ~40 s of CPU encoding 10,000 texts.
TABLE = Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.minilm.npz"
_CACHE: dict[str, np.ndarray] = {}  # text -> embedding, while training runs (folds embed the same texts)


def embed_texts(texts: Sequence[str], workers: int = 2) -> np.ndarray:
    """Embeddings of many texts: from the precomputed table, else batched on `workers` threads."""
    from agents.intents.localmodel.encoder import get_encoder, read_table, table_key

    todo = sorted({t for t in texts if t not in _CACHE})
    if todo:
        table = read_table(TABLE)
        for text in todo:
            vector = table.get(table_key(text))
            if vector is not None:
                _CACHE[text] = vector
        todo = [t for t in todo if t not in _CACHE]
    if todo:
        encoder = get_encoder()
        chunks = [todo[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for chunk, vectors in zip(chunks, pool.map(encoder.embed, chunks), strict=True):
                _CACHE.update(zip(chunk, vectors, strict=True))
    return np.vstack([_CACHE[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def clear_cache() -> None:
    """Forget cached embeddings (~1.5 KB each): not worth keeping in a long-lived worker."""
    _CACHE.clear()


def fit_head(embeddings: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on the embeddings: (coef[n_classes, dim], intercept[n_classes])."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    coef = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float32)
    intercept = np.full(n_classes, -1e3, dtype=np.float32)  # classes absent from this split never win
    if len(present) == 1:
        intercept[present[0]] = 0.0
        return coef, intercept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=HEAD_C, max_iter=500, random_state=seed).fit(embeddings, y)
    if clf.coef_.shape[0] == 1:
        coef[present[1]], intercept[present[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[present], intercept[present] = clf.coef_, clf.intercept_
    return coef, intercept


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))))


def fit_ensemble(
    cheap_logits: np.ndarray, head_scores: np.ndarray, y: np.ndarray, fit_temperature: object
) -> tuple[float, float, float]:
    """(T2, w, Te) from out-of-fold scores: the head's temperature, then the weight and the ensemble's."""
    t2 = float(fit_temperature(head_scores, y))  # type: ignore[operator]
    head = head_scores / t2
    best: tuple[float, float, float] | None = None
    for w in WEIGHTS:
        z = w * cheap_logits + (1 - w) * head
        te = float(fit_temperature(z, y))  # type: ignore[operator]
        nll = _nll(softmax_rows(z / te), y)
        if best is None or nll < best[0]:
            best = (nll, w, te)
    assert best is not None
    return t2, best[1], best[2]


def cascade_threshold(conf: np.ndarray, correct: np.ndarray, lowest_threshold: object) -> float:
    """The cheap confidence at and above which the cheap answer stands: precise enough on its own, or
    the encoder's cost budget spent (the least sure MAX_ENCODED_SHARE of requests are encoded)."""
    t = lowest_threshold(conf, correct, CASCADE_PRECISION, 0.0, 1.0)  # type: ignore[operator]
    budget = float(np.quantile(conf, MAX_ENCODED_SHARE)) if len(conf) else math.inf
    return min(float(t) if t is not None else math.inf, budget)


def fit_cascade(
    fits: Any, cal: np.ndarray, cheap_logits: np.ndarray, cheap: np.ndarray, y: np.ndarray
) -> tuple[EncoderHead, np.ndarray]:
    """Fit the second tier's constants on out-of-fold scores; return it and the cascade's probabilities."""
    from agents.intents.training.thresholds import fit_temperature, lowest_threshold

    head_oof = fits.head_oof[cal]  # type: ignore[index]
    t2, w, te = fit_ensemble(cheap_logits, head_oof, y, fit_temperature)
    conf = cheap.max(axis=1)
    threshold = cascade_threshold(conf, cheap.argmax(axis=1) == y, lowest_threshold)
    coef, intercept = fits.head  # type: ignore[misc]
    head = EncoderHead(coef, intercept, t2, w, te, threshold)
    band = conf < threshold
    probs = cheap.copy()
    probs[band] = softmax_rows((w * cheap_logits[band] + (1 - w) * head_oof[band] / t2) / te)
    return head, probs


def cascade_metrics(
    head: EncoderHead | None, cheap_logits: np.ndarray, probs: np.ndarray, y: np.ndarray, auto: np.ndarray, k: int
) -> dict[str, Any]:
    """What the cascade and the candidate sets did on the out-of-fold predictions."""
    band = np.zeros(len(y), dtype=bool)
    if head is not None:
        band = softmax_rows(cheap_logits).max(axis=1) < head.cascade_threshold
    return {
        "encoded_share": float(band.mean()) if len(y) else 0.0,
        "cheap_accuracy": float((cheap_logits.argmax(axis=1) == y).mean()) if len(y) else 0.0,
        "candidates_k": k,
        "candidates_coverage_unsure": coverage_of(probs[~auto], y[~auto], k),
        "cascade": None
        if head is None
        else {k_: v for k_, v in head.state().items() if k_ not in ("coef", "intercept")},
    }
