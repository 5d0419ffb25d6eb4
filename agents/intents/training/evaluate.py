"""Scoring an IntentModel on labelled data and printing the result."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from agents.intents.localmodel.model import IntentModel


def _safe_div(num: float, den: float) -> float | None:
    """num/den, or None when den is zero."""
    return float(num) / float(den) if den else None


def report_from_predictions(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidences: Sequence[float],
    automated: Sequence[bool],
    thresholds: dict[str, float] | None = None,
    top_confusions: int = 10,
) -> dict:
    """Build an evaluate()-style report from predictions already made."""
    y_true = list(y_true)
    y_pred = list(y_pred)
    conf = np.asarray(confidences, dtype=float)
    auto = np.asarray(automated, dtype=bool)
    n = len(y_true)
    if not (len(y_pred) == n == len(conf) == len(auto)):
        raise ValueError("y_true, y_pred, confidences and automated must have the same length")
    correct = np.array([t == p for t, p in zip(y_true, y_pred, strict=False)], dtype=bool)
    labels = sorted(set(y_true) | set(y_pred))
    support = Counter(y_true)
    predicted = Counter(y_pred)
    hits = Counter(t for t, ok in zip(y_true, correct, strict=False) if ok)
    auto_n = Counter(p for p, a in zip(y_pred, auto, strict=False) if a)
    auto_ok = Counter(p for p, a, ok in zip(y_pred, auto, correct, strict=False) if a and ok)
    rows = []
    f1s = []
    for label in labels:
        precision = _safe_div(hits[label], predicted[label])
        recall = _safe_div(hits[label], support[label])
        p, r = precision or 0.0, recall or 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        f1s.append(f1)
        rows.append(
            {
                "intent": label,
                "support": support[label],
                "predicted": predicted[label],
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "automated": auto_n[label],
                "automated_precision": _safe_div(auto_ok[label], auto_n[label]),
                "threshold": None if thresholds is None else thresholds.get(label),
            }
        )
    confusions = Counter((t, p) for t, p, ok in zip(y_true, y_pred, correct, strict=False) if not ok)
    return {
        "n_examples": n,
        "accuracy": _safe_div(int(correct.sum()), n),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "automated_share": _safe_div(int(auto.sum()), n),
        "automated_precision": _safe_div(int((auto & correct).sum()), int(auto.sum())),
        "n_automated": int(auto.sum()),
        "mean_confidence": float(conf.mean()) if n else None,
        "per_intent": rows,
        "confused_pairs": [
            {"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(top_confusions)
        ],
    }


def evaluate(model: IntentModel, texts: list[str], labels: list[str]) -> dict:
    """Accuracy, macro-F1, automated share and its precision under the model's thresholds, per-intent rows, top confused pairs."""
    if len(texts) != len(labels):
        raise ValueError("texts and labels must have the same length")
    preds = model.predict_many(list(texts))
    y_pred = [p.intent for p in preds]
    conf = [p.confidence for p in preds]
    automated = [p.confidence >= model.threshold_for(p.intent) for p in preds]
    thresholds = {intent: model.threshold_for(intent) for intent in model.intents}
    report = report_from_predictions(labels, y_pred, conf, automated, thresholds)
    report["model_version"] = model.version
    report["global_threshold"] = model.global_threshold
    return report


def _fmt(value: float | None, pct: bool = True) -> str:
    """Format a ratio as a percentage (or '-' when undefined)."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.3f}"


def format_report(report: dict) -> str:
    """Human-readable text table of an evaluate() report."""
    lines = [
        f"examples            {report['n_examples']}",
        f"accuracy            {_fmt(report['accuracy'])} %",
        f"macro-F1            {_fmt(report['macro_f1'])} %",
        f"automated share     {_fmt(report['automated_share'])} %  ({report['n_automated']} requests)",
        f"automated precision {_fmt(report['automated_precision'])} %",
    ]
    for key, label in (("target_precision", "target precision"), ("global_threshold", "global threshold")):
        if report.get(key) is not None:
            lines.append(f"{label:<20}{_fmt(report[key], pct=False)}")
    rows = report.get("per_intent") or []
    if rows:
        width = max(len("intent"), *(len(r["intent"]) for r in rows))
        lines.append("")
        lines.append(f"{'intent':<{width}}  support   prec   rec    f1   auto  auto-prec  thresh")
        for r in sorted(rows, key=lambda r: (r["f1"], r["intent"])):
            lines.append(
                f"{r['intent']:<{width}}  {r['support']:>7}  {_fmt(r['precision']):>5}  {_fmt(r['recall']):>5}"
                f"  {_fmt(r['f1']):>5}  {r['automated']:>5}  {_fmt(r['automated_precision']):>9}"
                f"  {_fmt(r.get('threshold'), pct=False):>6}"
            )
    pairs = report.get("confused_pairs") or []
    if pairs:
        lines.append("")
        lines.append("most confused (true -> predicted: count)")
        for pair in pairs:
            lines.append(f"  {pair['true']} -> {pair['predicted']}: {pair['count']}")
    return "\n".join(lines)
