"""The system figure: rules tier, then the local model, then the decide policy, on held-out folds.

For each outer fold of the nested cross-validation, `train_model()` sees only the other folds (as in
`cross_validate()`, so the model, its temperature and its thresholds never saw the fold); the held-out
requests then go through the real stage functions — parse, classify (tiers: rules, then that fold's
model) and decide — with a catalogue built from the intent pack whose thresholds are the fold model's,
clamped as `agents.learning.model_activate()` clamps them. The rules were written looking at all of
the training data, so the rules' part of the figure is in-sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .model import IntentModel
from .train import fold_models

DEFAULT_PACK = Path(__file__).resolve().parents[1] / "packs" / "banking77.yaml"
# As agents.learning's defaults: the floors and cap model_activate() applies to a model's thresholds.
THRESHOLD_MIN, THRESHOLD_MIN_HIGH_RISK, THRESHOLD_MAX = 0.3, 0.9, 0.999


class FoldModelTier:
    """The local-model tier over one in-memory model (what LocalModelTier does with the active version)."""

    name = "local"

    def __init__(self, model: IntentModel) -> None:
        self.model = model

    def classify(self, text: str, catalog: Mapping[str, Any]) -> Any:
        from agents.stages.types import TierAnswer

        p = self.model.predict(text)
        return TierAnswer(intent=p.intent, confidence=p.confidence, tier=self.name, model="local:cv")


def load_pack(path: str | Path) -> list[dict[str, Any]]:
    """The pack's intents with its defaults applied."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    defaults = data.get("defaults") or {}
    return [{**defaults, **entry} for entry in data["intents"]]


def catalog_for(pack: Sequence[dict[str, Any]], model: IntentModel) -> dict[str, Any]:
    """IntentPolicy per pack intent, thresholds taken from the model as model_activate() would."""
    from agents.stages.types import IntentPolicy

    catalog = {}
    for entry in pack:
        risk = entry.get("risk", "low")
        threshold = float(entry.get("threshold", 0.9))
        if entry["name"] in model.intents:
            floor = THRESHOLD_MIN_HIGH_RISK if risk == "high" else THRESHOLD_MIN
            threshold = round(min(THRESHOLD_MAX, max(floor, model.threshold_for(entry["name"]))), 4)
        catalog[entry["name"]] = IntentPolicy(
            name=entry["name"],
            description=entry.get("description", ""),
            threshold=threshold,
            allowed_actions=tuple(entry.get("allowed_actions") or ()),
            reply_template=(entry.get("reply_template") or "").strip(),
            risk=risk,
            always_review=bool(entry.get("always_review", False)),
            rules=tuple(entry.get("rules") or ()),
        )
    return catalog


def run_stages(text: str, catalog: Mapping[str, Any], tiers: Sequence[Any]) -> dict[str, Any]:
    """parse → classify → decide on one request, as the pipeline runs them (no LLM configured)."""
    from agents.stages.classify import classify
    from agents.stages.decide import decide
    from agents.stages.parse import parse
    from agents.stages.types import StageContext, TicketInput

    ctx = StageContext(catalog=catalog, tiers=tiers)
    ticket = TicketInput(id="cv-0", client_id=0, customer_ref="", channel="cv", subject="", body=text, priority=0)
    parsed = parse(ticket, ctx)
    if parsed.escalate:
        return {"intent": "", "tier": "", "automated": False, "escalate": parsed.escalate}
    context: dict[str, Any] = {"parse": parsed.output}
    classified = classify(TicketInput(**{**ticket.__dict__, "context": context}), ctx)
    context["classify"] = classified.output
    decided = decide(TicketInput(**{**ticket.__dict__, "context": context}), ctx)
    out = classified.output
    return {
        "intent": out["intent"],
        "tier": out["tier"],
        "automated": decided.escalate is None,
        "escalate": decided.escalate,
    }


def system_cross_validate(
    texts: list[str],
    labels: list[str],
    *,
    pack: str | Path = DEFAULT_PACK,
    target_precision: float = 0.98,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Automated share and precision of rules → model → decide, and of the model alone, pooled over held-out folds."""
    from agents.tiers.rules import RulesTier

    entries = load_pack(pack)
    rows: list[dict[str, Any]] = []
    for _, te, model in fold_models(
        texts, labels, target_precision=target_precision, folds=folds, seed=seed, progress=progress
    ):
        catalog = catalog_for(entries, model)
        tiers = [RulesTier(), FoldModelTier(model)]
        for i in te:
            row = run_stages(texts[i], catalog, tiers)
            p = model.predict(texts[i])
            row.update(label=labels[i], model_intent=p.intent, model_automated=model.is_automated(p))
            rows.append(row)
    return summarise(rows)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Shares and precisions of the system, its rules part, and the model alone."""
    n = len(rows)

    def share(mask: np.ndarray, correct: np.ndarray) -> dict[str, float | int | None]:
        return {
            "n": int(mask.sum()),
            "share": float(mask.mean()) if n else 0.0,
            "precision": float(correct[mask].mean()) if mask.any() else None,
        }

    label = np.array([r["label"] for r in rows])
    intent = np.array([r["intent"] for r in rows])
    auto = np.array([r["automated"] for r in rows], dtype=bool)
    tier = np.array([r["tier"] for r in rows])
    model_auto = np.array([r["model_automated"] for r in rows], dtype=bool)
    model_correct = np.array([r["model_intent"] for r in rows]) == label
    correct = intent == label
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["automated"]:
            reasons[str(r["escalate"])] = reasons.get(str(r["escalate"]), 0) + 1
    return {
        "n": n,
        "system": share(auto, correct),
        "system_by_rules": share(auto & (tier == "rules"), correct),
        "system_by_model": share(auto & (tier == "local"), correct),
        "model_alone": share(model_auto, model_correct),
        "model_accuracy": float(model_correct.mean()) if n else 0.0,
        "classify_accuracy": float(correct.mean()) if n else 0.0,
        "escalations": reasons,
    }
