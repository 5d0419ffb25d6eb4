"""The learning loop: train the local model on the base data plus reviewers' decisions, gate it on a
held-back slice, activate it atomically, and let per-intent thresholds follow the reviewers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.intents.blobs import BlobRefused, blob_sign, model_load
from agents.intents.localmodel.data import in_holdout, load_csv
from agents.intents.localmodel.model import IntentModel
from agents.intents.training.evaluate import evaluate
from agents.intents.training.train import train_model
from agents.models import Intent, ModelVersion, Risk, ThresholdChange
from agents.people import review_queue

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def learning_settings() -> dict[str, Any]:
    """settings.LEARNING over the defaults."""
    defaults = {
        "BASE_DATA": str(Path(settings.BASE_DIR) / "agents" / "data" / "banking77" / "train.csv"),
        "TARGET_PRECISION": 0.98,
        "FOLDS": 3,  # the out-of-fold predictions that calibrate (agents.intents.training.train.INNER_FOLDS)
        "HOLDOUT_PERCENT": 10,
        "MAX_REGRESSION": 0.002,  # a candidate may be this much worse on the holdout and still win
        "GATE_Z": 2.0,  # ... or lose up to this many standard deviations of the paired difference
        "THRESHOLD_MIN": 0.3,
        "THRESHOLD_MIN_HIGH_RISK": 0.9,
        "THRESHOLD_MAX": 0.999,
        "THRESHOLD_STEP": 0.02,
        "MIN_DECISIONS": 20,
        "LOWER_BELOW_OVERRIDE_RATE": 0.02,
        "RAISE_ABOVE_OVERRIDE_RATE": 0.05,
    }
    return {**defaults, **getattr(settings, "LEARNING", {})}


def feedback_rows() -> list[tuple[str, str]]:
    """(text, intent) pairs people decided in the review queue."""
    rows = review_queue().feedback_training_rows()
    return [(str(r["text"]), str(r["intent"])) for r in rows if r.get("text") and r.get("intent")]


def training_data(extra: Iterable[tuple[str, str]] | None = None) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The curated base data, and reviewers' decisions (or `extra`) on intents it knows."""
    texts, labels = load_csv(learning_settings()["BASE_DATA"])
    known = set(labels)
    rows = feedback_rows() if extra is None else list(extra)
    return texts, labels, [(t, i) for t, i in rows if i in known]


def model_train(
    *,
    base: tuple[list[str], list[str]] | None = None,
    feedback: list[tuple[str, str]] | None = None,
    progress: Progress | None = None,
    first: bool = False,
) -> ModelVersion:
    """Train a candidate on the base data (less a held-back slice) plus every reviewer decision;
    measure it and the active model on that slice of the curated base data (`first`: the quick recipe)."""
    cfg = learning_settings()
    if base is None or feedback is None:
        texts, labels, rows = training_data()
        base, feedback = (base or (texts, labels)), (rows if feedback is None else feedback)
    held = [in_holdout(t, cfg["HOLDOUT_PERCENT"]) for t in base[0]]
    train_x = [t for t, h in zip(base[0], held, strict=True) if not h] + [t for t, _ in feedback]
    train_y = [y for y, h in zip(base[1], held, strict=True) if not h] + [y for _, y in feedback]
    hold_x = [t for t, h in zip(base[0], held, strict=True) if h]
    hold_y = [y for y, h in zip(base[1], held, strict=True) if h]
    n_base = len(train_x) - len(feedback)
    model = train_model(
        train_x,
        train_y,
        target_precision=cfg["TARGET_PRECISION"],
        folds=cfg["FOLDS"],
        progress=progress,
        calibrate=[True] * n_base + [False] * len(feedback),  # thresholds for the traffic, not for escalations
        first=first,
    )
    holdout: dict[str, Any] = {
        "n": len(hold_x),
        "candidate": _summary(evaluate(model, hold_x, hold_y)) if hold_x else {},
    }
    try:
        active = model_active()
    except BlobRefused as exc:
        # Workers refuse it too (they abstain): a candidate that cannot be compared with it replaces it.
        log.warning("no comparison with the active model: %s", exc)
        holdout["active_refused"] = str(exc)
        active = None
    if active is not None and hold_x:
        holdout["active"] = _summary(evaluate(active[1], hold_x, hold_y))
        holdout["active_version"] = active[0].version
        holdout["paired"] = _paired(model, active[1], hold_x, hold_y)
    tag = model.version
    while ModelVersion.objects.filter(version=tag).exists():  # the same data can give the same bytes
        tag = f"{model.version}-{timezone.now():%H%M%S%f}"
    return ModelVersion.objects.create(
        version=tag,
        n_examples=len(train_x),
        n_feedback=len(feedback),
        metrics=model.metrics,
        holdout_metrics=holdout,
        blob=blob_sign(model.to_bytes()),
    )


def _paired(candidate: IntentModel, active: IntentModel, texts: list[str], labels: list[str]) -> dict[str, int]:
    """On the same held-back requests: how many only the candidate gets right, and how many only the active model."""
    new = [p.intent == y for p, y in zip(candidate.predict_many(texts), labels, strict=True)]
    old = [p.intent == y for p, y in zip(active.predict_many(texts), labels, strict=True)]
    return {
        "candidate_only": sum(n and not o for n, o in zip(new, old, strict=True)),
        "active_only": sum(o and not n for n, o in zip(new, old, strict=True)),
    }


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "automated_share", "automated_precision")
    return {k: report[k] for k in keys if k in report}


def model_active() -> tuple[ModelVersion, IntentModel] | None:
    """The active version and its loaded model, or None."""
    version = ModelVersion.objects.filter(is_active=True).first()
    if version is None:
        return None
    return version, model_load(version.blob, version=version.version)


def candidate_wins(candidate: ModelVersion) -> tuple[bool, str]:
    """Activate only what is not worse than the active model on the held-back slice."""
    hold = candidate.holdout_metrics
    if "active" not in hold:
        return True, "no active model to compare with"
    cfg = learning_settings()
    new, old = hold["candidate"]["accuracy"], hold["active"]["accuracy"]
    allowed = cfg["MAX_REGRESSION"]
    paired = hold.get("paired")
    if paired is not None:
        # Paired on the same requests (a one-sided sign test): worse only when the candidate loses clearly
        # more requests than it gains, so a slice of a few hundred does not reject a better model on noise.
        lost, gained = paired["active_only"], paired["candidate_only"]
        margin = max(allowed * hold["n"], cfg["GATE_Z"] * (lost + gained) ** 0.5)
        if lost - gained <= margin:
            return True, f"holdout accuracy {new:.4f} vs active {old:.4f} (+{gained}/-{lost} requests)"
        return False, f"holdout accuracy {new:.4f} is worse than active {old:.4f} (+{gained}/-{lost} requests)"
    if new + allowed >= old:
        return True, f"holdout accuracy {new:.4f} vs active {old:.4f}"
    return False, f"holdout accuracy {new:.4f} is worse than active {old:.4f}"


@transaction.atomic
def model_activate(*, version: ModelVersion, reason: str) -> None:
    """Make `version` the one active model, in one transaction; adopt its per-intent thresholds."""
    ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now(), notes=reason)
    model = model_load(version.blob, version=version.version)
    cfg = learning_settings()
    for intent in Intent.objects.select_for_update().filter(name__in=model.intents):
        floor = cfg["THRESHOLD_MIN_HIGH_RISK"] if intent.risk == Risk.HIGH else cfg["THRESHOLD_MIN"]
        new = round(min(cfg["THRESHOLD_MAX"], max(floor, model.threshold_for(intent.name))), 4)
        _threshold_set(
            intent,
            new,
            f"model {version.version}: cross-validated at {cfg['TARGET_PRECISION']:.0%} precision",
            version.version,
        )


def _threshold_set(intent: Intent, new: float, reason: str, model_version: str = "") -> ThresholdChange | None:
    if abs(intent.threshold - new) < 1e-9:
        return None
    change = ThresholdChange.objects.create(
        intent=intent.name, old=intent.threshold, new=new, reason=reason, model_version=model_version
    )
    intent.threshold = new
    intent.save(update_fields=["threshold", "updated_at"])
    return change


def model_retrain(
    *, progress: Progress | None = None, force: bool = False, first: bool = False
) -> tuple[ModelVersion, bool, str]:
    """Train a candidate and activate it when it is not worse; returns (version, activated, why)."""
    candidate = model_train(progress=progress, first=first)
    wins, why = candidate_wins(candidate)
    if wins or force:
        model_activate(version=candidate, reason=why if wins else f"forced: {why}")
        return candidate, True, why
    ModelVersion.objects.filter(pk=candidate.pk).update(notes=f"not activated: {why}")
    return candidate, False, why


def model_rollback() -> ModelVersion | None:
    """Re-activate the version active before the current one."""
    previous = (
        ModelVersion.objects.filter(is_active=False, activated_at__isnull=False).order_by("-activated_at").first()
    )
    if previous is not None:
        model_activate(version=previous, reason="rollback")
    return previous


def thresholds_follow_reviewers() -> list[ThresholdChange]:
    """Lower an intent's threshold where reviewers keep approving, raise it where they override.

    Only decisions the threshold actually bears on count. Escalated suggestions sit below the
    threshold, so how often people correct those says nothing about what is automated: lower by one
    step only when people approve the suggestions just below it (confidence in [t - step, t));
    raise only when they correct suggestions at or above it (reviewed for another reason: policy,
    the customer asked for a person). Decisions without a confidence are ignored, and so are those on
    another local model's suggestions: confidences of different models are not comparable.
    """
    cfg = learning_settings()
    rows = list(review_queue().decision_confidences())
    active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
    rows = [r for r in rows if not str(r.get("model") or "").startswith("local:") or r["model"] == f"local:{active}"]
    intents = {i.name: i for i in Intent.objects.filter(name__in={r["intent"] for r in rows})}
    step = cfg["THRESHOLD_STEP"]
    bands: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        intent = intents.get(row["intent"])
        if intent is None or row["confidence"] is None:
            continue
        conf, t = float(row["confidence"]), intent.threshold
        band = "above" if conf >= t else "near" if conf >= t - step else None
        if band is not None:
            counts = bands.setdefault(intent.name, {"near": [0, 0], "above": [0, 0]})[band]
            counts[0] += 1
            counts[1] += int(bool(row["wrong"]))
    changes = []
    for name, counts in sorted(bands.items()):
        change = _threshold_follow(intents[name], counts, cfg)
        if change is not None:
            changes.append(change)
    return changes


def _threshold_follow(intent: Intent, counts: dict[str, list[int]], cfg: dict[str, Any]) -> ThresholdChange | None:
    """One step down or up for one intent, from its decisions near and above its threshold."""
    floor = cfg["THRESHOLD_MIN_HIGH_RISK"] if intent.risk == Risk.HIGH else cfg["THRESHOLD_MIN"]
    (n_above, wrong_above), (n_near, wrong_near) = counts["above"], counts["near"]
    if n_above >= cfg["MIN_DECISIONS"] and wrong_above / n_above >= cfg["RAISE_ABOVE_OVERRIDE_RATE"]:
        new = min(cfg["THRESHOLD_MAX"], intent.threshold + cfg["THRESHOLD_STEP"])
        reason = f"reviewers overrode {wrong_above}/{n_above} ({wrong_above / n_above:.1%}) at or above the threshold"
    elif n_near >= cfg["MIN_DECISIONS"] and wrong_near / n_near <= cfg["LOWER_BELOW_OVERRIDE_RATE"]:
        new = max(floor, intent.threshold - cfg["THRESHOLD_STEP"])
        reason = f"reviewers overrode {wrong_near}/{n_near} ({wrong_near / n_near:.1%}) just below the threshold"
    else:
        return None
    return _threshold_set(intent, round(new, 4), reason)
