"""Honest (nested) cross-validation: outer folds whose models never saw them, each calibrated by an
inner cross-validation on its own training part only."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from agents.intents.localmodel.model import IntentModel
from agents.intents.training.evaluate import evaluate, report_from_predictions
from agents.intents.training.thresholds import expected_calibration_error
from agents.intents.training.train import INNER_FOLDS, _check, _encode, _splits, method_description, train_model


def fold_models(
    texts: list[str],
    labels: list[str],
    *,
    target_precision: float = 0.98,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    inner_folds: int = INNER_FOLDS,
) -> Iterator[tuple[int, np.ndarray, IntentModel]]:
    """The outer folds of a nested CV: `(k, held-out indices, model trained on the rest)`, the model's
    own thresholds chosen by an inner CV on its training part only."""
    _, y = _encode(labels)
    splits = _splits(y, folds, seed)
    for k, (tr, te) in enumerate(splits):

        def inner(stage: str, done: int, total: int, k: int = k) -> None:
            if progress:
                progress(f"fold {k + 1}/{len(splits)}: {stage}", done, total)

        model = train_model(
            [texts[i] for i in tr],
            [labels[i] for i in tr],
            target_precision=target_precision,
            folds=inner_folds,
            seed=seed,
            progress=inner,
        )
        yield k, te, model


def cross_validate(
    texts: list[str],
    labels: list[str],
    *,
    target_precision: float = 0.98,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Honest CV report: accuracy, macro_f1, automated_share and automated_precision at the target, per-intent table."""
    _check(texts, labels)
    texts = [str(t) for t in texts]
    labels = list(labels)
    y_true: list[str] = []
    y_pred: list[str] = []
    conf: list[float] = []
    auto: list[bool] = []
    per_fold = []
    for k, te, model in fold_models(
        texts, labels, target_precision=target_precision, folds=folds, seed=seed, progress=progress
    ):
        held_texts = [texts[i] for i in te]
        held_labels = [labels[i] for i in te]
        fold_report = evaluate(model, held_texts, held_labels)
        preds = model.predict_many(held_texts)
        y_true += held_labels
        y_pred += [p.intent for p in preds]
        conf += [p.confidence for p in preds]
        auto += [model.is_automated(p) for p in preds]
        per_fold.append(
            {
                "fold": k,
                "n_examples": len(te),
                "accuracy": fold_report["accuracy"],
                "automated_share": fold_report["automated_share"],
                "automated_precision": fold_report["automated_precision"],
                "global_threshold": model.global_threshold,
                "temperature": model.metrics["temperature"],
                "n_per_intent_thresholds": len(model.thresholds),
            }
        )
    report = report_from_predictions(y_true, y_pred, conf, auto)
    correct = np.array([t == p for t, p in zip(y_true, y_pred, strict=False)])
    report.update(
        {
            "method": method_description(),
            "folds": len(per_fold),
            "inner_folds": INNER_FOLDS,
            "seed": seed,
            "target_precision": target_precision,
            "expected_calibration_error": expected_calibration_error(np.array(conf), correct),
            "per_fold": per_fold,
            "protocol": (
                f"nested: for each of {len(per_fold)} outer folds, train_model() on the other folds "
                f"(temperature and thresholds from its own {INNER_FOLDS}-fold out-of-fold predictions), "
                "then predict the held-out fold; figures pool the held-out predictions"
            ),
        }
    )
    return report
