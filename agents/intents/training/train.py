"""Training the intent classifier: features, the linear fits side by side, the cascade, calibration."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

from agents.intents.localmodel.candidates import fit_top_k
from agents.intents.localmodel.model import IntentModel
from agents.intents.localmodel.scores import softmax_rows
from agents.intents.training.ensemble import cascade_metrics, fit_cascade
from agents.intents.training.evaluate import report_from_predictions
from agents.intents.training.thresholds import (  # noqa: F401  (re-exported: the thresholds' home used to be here)
    LOWER,
    MIN_SUPPORT,
    REBALANCE,
    WILSON_Z,
    choose_thresholds,
    expected_calibration_error,
    fit_temperature,
    lowest_threshold,
    wilson_lower,
)

Progress = Callable[[str, int, int], None]

SVM_C = 0.5
# A static sentence embedding appended to the tf-idf features (agents/intents/localmodel/embed.py), or None.
# Mean- and max-pooled wordllama vectors: +1.4 points accuracy, +4.7 points automated share in nested CV.
EMBEDDING: str | None = "wordllama:l2_supercat_256:meanmax"
EMBEDDING_WEIGHT = 1.0
# One-vs-rest: 2.4x faster than "crammer_singer" (10.6 s against 25.3 s of CPU per fit on the full
# training split) for 0.1 point of accuracy; the encoder tier more than makes up for it.
SVM_MULTI_CLASS = "ovr"
# train_model(calibrate=...) needs at least this many flagged examples, else all examples calibrate.
MIN_CALIBRATION = 50
# Folds of the out-of-fold predictions that calibrate a model (its temperatures, cascade, thresholds):
# 3 keeps the first model under a minute; the nested CV's inner folds are the same.
INNER_FOLDS = 3
# Linear fits run side by side (liblinear releases the GIL): the first model in under a minute on 2 cores.
# The second tier: a sentence encoder run only where the cheap tier is unsure (agents/intents/localmodel/head.py, fitted by agents/intents/training/ensemble.py).
ENCODER = os.environ.get("LOCALMODEL_ENCODER", "1") != "0"
TRAIN_WORKERS = int(os.environ.get("LOCALMODEL_TRAIN_WORKERS", "2"))


def method_description(embedding: str | None = EMBEDDING) -> str:
    """One line describing a training recipe (recorded in model.metrics)."""
    scheme = "one-vs-rest" if SVM_MULTI_CLASS == "ovr" else SVM_MULTI_CLASS
    return (
        f"tf-idf word 1-2grams + char_wb 3-5grams (sublinear tf) -> LinearSVC(C={SVM_C}, {scheme}); "
        "confidence = softmax(scores / T), T fitted on out-of-fold scores; global threshold = lowest with OOF "
        f"precision >= target; per-intent thresholds only where a Wilson bound (z={WILSON_Z:g}, >={MIN_SUPPORT} "
        "OOF predictions) shows the intent differs"
        + (f"; + {EMBEDDING_WEIGHT:g} x mean-pooled {embedding} embedding" if embedding else "")
    )


@cache
def _embedded(name: str, text: str) -> np.ndarray:
    """A text's embedding, cached while train_model() runs (its folds embed the same texts many times)."""
    from agents.intents.localmodel.embed import get_embedder

    return get_embedder(name).embed_one(text)


def _features(
    vectorizer: FeatureUnion, texts: Sequence[str], embedding: str | None, fit: bool = False
) -> sp.csr_matrix:
    """tf-idf features, with the weighted embedding block appended when `embedding` is set."""
    tfidf = vectorizer.fit_transform(list(texts)) if fit else vectorizer.transform(list(texts))
    if not embedding:
        return tfidf
    dense = np.vstack([_embedded(embedding, t) for t in texts]) * np.float32(EMBEDDING_WEIGHT)
    return sp.hstack([tfidf, sp.csr_matrix(dense)], format="csr")


def build_vectorizer(n_texts: int = 1000) -> FeatureUnion:
    """The feature extractor: word 1-2grams and char_wb 3-5grams, each tf-idf with sublinear tf."""
    min_df = 2 if n_texts >= 200 else 1  # drop one-off char n-grams, except on tiny data
    return FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32),
            ),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=min_df, dtype=np.float32
                ),
            ),
        ]
    )


# liblinear draws from one process-wide random state: two fits at once would interleave its draws and
# make training irreproducible. The fits take turns; feature extraction and the encoder's heads do not.
_LIBLINEAR = threading.Lock()


def _fit_linear(
    texts: Sequence[str], y: np.ndarray, n_classes: int, seed: int, embedding: str | None
) -> tuple[FeatureUnion, np.ndarray, np.ndarray]:
    """Fit features and a linear SVM; return (vectorizer, coef[n_classes, F], intercept[n_classes])."""
    vectorizer = build_vectorizer(len(texts))
    features = _features(vectorizer, texts, embedding, fit=True)
    present = np.unique(y)
    coef = np.zeros((n_classes, features.shape[1]), dtype=np.float32)
    intercept = np.full(n_classes, -1e3, dtype=np.float32)  # classes absent from this split never win
    if len(present) == 1:
        intercept[present[0]] = 0.0
        return vectorizer, coef, intercept
    clf = LinearSVC(C=SVM_C, multi_class=SVM_MULTI_CLASS, max_iter=5000, random_state=seed)
    with _LIBLINEAR, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(features, y)
    if clf.coef_.shape[0] == 1:
        w, b = clf.coef_[0] / 2, clf.intercept_[0] / 2
        coef[present[0]], intercept[present[0]] = -w, -b
        coef[present[1]], intercept[present[1]] = w, b
    else:
        coef[present] = clf.coef_
        intercept[present] = clf.intercept_
    return vectorizer, coef, intercept


def _raw_scores(
    fitted: tuple[FeatureUnion, np.ndarray, np.ndarray], texts: Sequence[str], embedding: str | None
) -> np.ndarray:
    """Linear scores of texts under a fitted (vectorizer, coef, intercept)."""
    vectorizer, coef, intercept = fitted
    return np.asarray(_features(vectorizer, texts, embedding) @ coef.T, dtype=np.float64) + intercept


def _splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, test) index pairs, with fewer folds (or plain k-fold) when the data is tiny."""
    n_splits = max(2, min(folds, len(y)))
    largest = int(np.bincount(y).max())
    if largest >= 2:
        splitter: StratifiedKFold | KFold = StratifiedKFold(
            n_splits=min(n_splits, largest), shuffle=True, random_state=seed
        )
    else:
        splitter = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the least populated class has only n members"
        return list(splitter.split(np.zeros(len(y)), y))


def _run_jobs(jobs: list[Callable[[], Any]], progress: Progress | None) -> list[Any]:
    """Run the fits TRAIN_WORKERS at a time (liblinear, lbfgs' BLAS and onnxruntime release the GIL)."""
    results: list[Any] = []
    with ThreadPoolExecutor(max_workers=max(1, TRAIN_WORKERS)) as pool:
        for result in pool.map(lambda job: job(), jobs):
            results.append(result)
            if progress:
                progress("fits", len(results), len(jobs))
    return results


@dataclass
class _Fits:
    """Out-of-fold scores of both tiers, each example's fold, and the tiers fitted on everything."""

    oof: np.ndarray
    fold_id: np.ndarray
    linear: tuple[FeatureUnion, np.ndarray, np.ndarray] | None
    head_oof: np.ndarray | None
    head: tuple[np.ndarray, np.ndarray] | None


def out_of_fold_scores(
    texts: Sequence[str], y: np.ndarray, n_classes: int, folds: int, seed: int, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores for every example from a model that did not see it; also each example's fold id."""
    fits = _fit_all(list(texts), y, n_classes, folds, seed, progress, final=False, encoder=False, embedding=EMBEDDING)
    return fits.oof, fits.fold_id


def _fit_all(
    texts: list[str],
    y: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int,
    progress: Progress | None,
    *,
    final: bool,
    encoder: bool,
    embedding: str | None,
) -> _Fits:
    """Out-of-fold scores and (when `final`) the tiers fitted on everything, all fits side by side."""
    from agents.intents.training import ensemble

    splits = _splits(y, folds, seed)
    parts = [tr for tr, _ in splits] + ([np.arange(len(y))] if final else [])
    if embedding:
        for text in texts:  # embed once, before the threads share the cache
            _embedded(embedding, text)
    vectors = ensemble.embed_texts(texts, workers=max(1, TRAIN_WORKERS)) if encoder else None

    def linear(idx: np.ndarray) -> Callable[[], Any]:
        return lambda: _fit_linear([texts[i] for i in idx], y[idx], n_classes, seed, embedding)

    def head(idx: np.ndarray) -> Callable[[], Any]:
        return lambda: ensemble.fit_head(vectors[idx], y[idx], n_classes, seed)  # type: ignore[index]

    jobs = [linear(idx) for idx in parts] + ([head(idx) for idx in parts] if encoder else [])
    fitted = _run_jobs(jobs, progress)
    lin, heads = fitted[: len(parts)], fitted[len(parts) :]
    fits = _Fits(np.zeros((len(texts), n_classes)), np.zeros(len(texts), dtype=int), None, None, None)
    if encoder:
        fits.head_oof = np.zeros((len(texts), n_classes))
    for k, (_, te) in enumerate(splits):
        fits.oof[te] = _raw_scores(lin[k], [texts[i] for i in te], embedding)
        fits.fold_id[te] = k
        if encoder:
            coef, intercept = heads[k]
            fits.head_oof[te] = vectors[te] @ coef.T + intercept  # type: ignore[index]
    if final:
        fits.linear = lin[-1]
        fits.head = heads[-1] if encoder else None
    return fits


def _encode(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted intent list and integer-encoded labels."""
    intents = sorted(set(labels))
    index = {name: i for i, name in enumerate(intents)}
    return intents, np.array([index[label] for label in labels], dtype=int)


def _check(texts: Sequence[str], labels: Sequence[str]) -> None:
    """Validate training inputs."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError("need examples of at least two intents to train")


def train_model(
    texts: list[str],
    labels: list[str],
    *,
    target_precision: float = 0.98,
    folds: int = INNER_FOLDS,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    min_threshold: float = 0.3,
    max_threshold: float = 0.999,
    calibrate: Sequence[bool] | None = None,
    first: bool = False,
) -> IntentModel:
    """Fit on all data; choose global and per-intent thresholds from out-of-fold predictions; record CV metrics.

    `calibrate` (one flag per example) limits the temperature, the thresholds and the recorded metrics to
    the flagged examples' out-of-fold predictions, while every example still trains the model. The
    learning loop flags the curated base data and not the reviewers' decisions: those are the requests
    the model was unsure of, so thresholds fitted on them would be set for a harder mix than the traffic.
    Ignored (all examples calibrate) when fewer than MIN_CALIBRATION are flagged.

    `first`: the first model's quick recipe, to serve while the full one trains: the cheap tier without the
    static-embedding columns (they triple the SVMs' cost), the rest as usual.
    """
    embedding = None if first else EMBEDDING
    args = (target_precision, folds, seed, progress, min_threshold, max_threshold, calibrate, embedding)
    try:
        return _train(texts, labels, *args)
    finally:
        _embedded.cache_clear()
        from agents.intents.training.ensemble import clear_cache

        clear_cache()  # ~2 KB per text: not worth keeping in a long-lived worker


def _train(
    texts: list[str],
    labels: list[str],
    target_precision: float,
    folds: int,
    seed: int,
    progress: Progress | None,
    min_threshold: float,
    max_threshold: float,
    calibrate: Sequence[bool] | None,
    embedding: str | None,
) -> IntentModel:
    """train_model()'s body."""
    _check(texts, labels)
    texts = [str(t) for t in texts]
    intents, y = _encode(labels)
    n_classes = len(intents)
    fits = _fit_all(texts, y, n_classes, folds, seed, progress, final=True, encoder=use_encoder(), embedding=embedding)
    # Temperature, thresholds and the recorded metrics come from the calibration examples' OOF predictions
    # only (all of them unless `calibrate` says otherwise; see the docstring).
    cal = _calibration_mask(calibrate, len(y))
    oof, fold_id, y_all, y = fits.oof[cal], fits.fold_id[cal], y, y[cal]
    temperature = fit_temperature(oof, y)
    probs = softmax_rows(oof / temperature)
    head = None
    if fits.head is not None and fits.head_oof is not None:
        head, probs = fit_cascade(fits, cal, oof / temperature, probs, y)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    global_t, per_intent = choose_thresholds(conf, pred, y, intents, target_precision, min_threshold, max_threshold)

    # Thresholds chosen on the other folds' OOF predictions, applied to this fold's: an estimate on unseen data.
    auto = np.zeros(len(y), dtype=bool)
    n_folds = int(fold_id.max()) + 1
    for k in range(n_folds):
        rest, this = fold_id != k, fold_id == k
        if not this.any():
            continue
        g, pi = choose_thresholds(
            conf[rest], pred[rest], y[rest], intents, target_precision, min_threshold, max_threshold
        )
        t = np.array([pi.get(intent, g) for intent in intents])
        auto[this] = conf[this] >= t[pred[this]]
    report = report_from_predictions([intents[i] for i in y], [intents[i] for i in pred], conf, auto)
    in_sample_t = np.array([per_intent.get(intent, global_t) for intent in intents])
    auto_in = conf >= in_sample_t[pred]
    correct = pred == y
    metrics = {
        "method": method_description(embedding),
        "recipe": "full" if embedding == EMBEDDING else "first",
        "n_examples": len(y_all),
        "n_calibration": len(y),
        "n_intents": n_classes,
        "folds": n_folds,
        "seed": seed,
        "target_precision": target_precision,
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "automated_share": report["automated_share"],
        "automated_precision": report["automated_precision"],
        "automated_share_in_sample": float(auto_in.mean()),
        "automated_precision_in_sample": float(correct[auto_in].mean()) if auto_in.any() else None,
        "temperature": temperature,
        "expected_calibration_error": expected_calibration_error(conf, correct),
        "global_threshold": global_t,
        "n_per_intent_thresholds": len(per_intent),
        "note": (
            "accuracy/macro_f1 are out-of-fold; automated_* apply thresholds chosen on the other folds' "
            "out-of-fold predictions to each fold (the *_in_sample pair uses the final thresholds on all OOF data)"
        ),
    }
    vectorizer, coef, intercept = fits.linear  # type: ignore[misc]
    candidates_k = fit_top_k(probs[~auto_in], y[~auto_in])
    metrics.update(cascade_metrics(head, oof / temperature, probs, y, auto, candidates_k))
    return IntentModel(
        vectorizer=vectorizer,
        coef=coef,
        intercept=intercept,
        intents=intents,
        temperature=temperature,
        global_threshold=global_t,
        thresholds=per_intent,
        metrics=metrics,
        embedding=embedding,
        embedding_weight=EMBEDDING_WEIGHT,
        head=head,
        candidates_k=candidates_k,
    )


def use_encoder() -> bool:
    """Whether train_model() adds the sentence encoder's tier (ENCODER on, and its package installed)."""
    from agents.intents.localmodel.encoder import available

    return ENCODER and available()


def _calibration_mask(calibrate: Sequence[bool] | None, n: int) -> np.ndarray:
    """Which examples calibrate: the flagged ones, or all when too few are flagged."""
    if calibrate is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(calibrate, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"calibrate has {mask.size} flags for {n} examples")
    return mask if mask.sum() >= MIN_CALIBRATION else np.ones(n, dtype=bool)
