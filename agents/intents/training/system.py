"""The system figure: the deployed local decision (rules as evidence, the local model's cascade, then
the decide policy) on held-out folds.

For each outer fold of the nested cross-validation, `train_model()` sees only the other folds (so the
model, its cascade, its temperatures, its thresholds and its candidate-set size never saw the fold);
the held-out requests then go through the real stage functions — parse, classify (tiers: rules, then
that fold's model) and decide — with a catalogue built from the intent pack whose thresholds are the
fold model's, clamped as `agents.intents.learning.model_activate()` clamps them. The rules tier only answers
where no model does (agents/stages/classify.py), so every automated request in the figure was
decided by a model that had not seen it: the figure is out of sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.intents.localmodel.model import IntentModel
from agents.intents.training.crossval import fold_models

DEFAULT_PACK = Path(__file__).resolve().parents[2] / "packs" / "banking77.yaml"
# As agents.intents.learning's defaults: the floors and cap model_activate() applies to a model's thresholds.
THRESHOLD_MIN, THRESHOLD_MIN_HIGH_RISK, THRESHOLD_MAX = 0.3, 0.9, 0.999


class FoldModelTier:
    """The local-model tier over one in-memory model (what LocalModelTier does with the active version)."""

    name = "local"

    def __init__(self, model: IntentModel, tag: str = "cv") -> None:
        self.model = model
        self.tag = tag
        self.last: Any = None  # the last Prediction, so scoring does not predict twice

    def classify(self, text: str, catalog: Mapping[str, Any]) -> Any:
        from agents.stages.types import TierAnswer

        p = self.last = self.model.predict(text)
        alternatives = tuple((i, round(float(q), 4)) for i, q in p.candidates or p.alternatives)
        return TierAnswer(p.intent, p.confidence, self.name, f"local:{self.tag}", alternatives)


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
        return {"intent": "", "tier": "", "automated": False, "escalate": parsed.escalate, "candidates": []}
    context: dict[str, Any] = {"parse": parsed.output}
    cpu = time.process_time()
    classified = classify(TicketInput(**{**ticket.__dict__, "context": context}), ctx)
    cpu = time.process_time() - cpu
    context["classify"] = classified.output
    decided = decide(TicketInput(**{**ticket.__dict__, "context": context}), ctx)
    out = classified.output
    return {
        "intent": out["intent"],
        "tier": out["tier"],
        "automated": decided.escalate is None,
        "escalate": decided.escalate,
        "candidates": list(out.get("candidates") or []),
        "cpu_ms": 1000 * cpu,
    }


def score_system(
    texts: Sequence[str], labels: Sequence[str], catalog: Mapping[str, Any], model: IntentModel, tag: str = "cv"
) -> list[dict[str, Any]]:
    """One row per request: what the deployed tiers (the model, rules where it does not answer) and decide did."""
    from agents.intents.rules import RulesTier

    local = FoldModelTier(model, tag)
    tiers = [RulesTier(), local]
    model.predict(texts[0] if texts else "warm up")  # load the encoder before the clock runs
    rows = []
    for text, label in zip(texts, labels, strict=True):
        local.last = None
        row = run_stages(text, catalog, tiers)
        p = local.last or model.predict(text)  # the tier was not asked when parse escalated
        row.update(label=label, model_intent=p.intent, model_automated=model.is_automated(p), encoded=p.encoded)
        rows.append(row)
    return rows


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
    """Automated share and precision of the deployed decision, and of the model alone, pooled over held-out folds."""
    entries = load_pack(pack)
    rows: list[dict[str, Any]] = []
    per_fold = []
    for k, te, model in fold_models(
        texts, labels, target_precision=target_precision, folds=folds, seed=seed, progress=progress
    ):
        fold_rows = score_system([texts[i] for i in te], [labels[i] for i in te], catalog_for(entries, model), model)
        per_fold.append({"fold": k, **_fold_line(model, summarise(fold_rows))})
        rows += fold_rows
    report = summarise(rows)
    report["per_fold"] = per_fold
    return report


def _fold_line(model: IntentModel, summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("encoded_share", "cheap_accuracy", "candidates_k", "candidates_coverage_unsure", "cascade")
    return {
        "system": summary["system"],
        "accuracy": summary["classify_accuracy"],
        **{k: model.metrics.get(k) for k in keys},
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Shares and precisions of the system and of each tier's part in it, the model alone, cost, candidates."""
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
    encoded = np.array([r.get("encoded", False) for r in rows], dtype=bool)
    model_auto = np.array([r["model_automated"] for r in rows], dtype=bool)
    model_correct = np.array([r["model_intent"] for r in rows]) == label
    correct = intent == label
    covered = np.array([r["label"] in r["candidates"] for r in rows], dtype=bool)
    sizes = np.array([len(r["candidates"]) for r in rows])
    cpu = np.array([r.get("cpu_ms", 0.0) for r in rows])
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["automated"]:
            reasons[str(r["escalate"])] = reasons.get(str(r["escalate"]), 0) + 1
    unsure = ~auto
    return {
        "n": n,
        "accuracy": float(correct.mean()) if n else 0.0,
        "automated_share": float(auto.mean()) if n else 0.0,
        "automated_precision": float(correct[auto].mean()) if auto.any() else None,
        "system": share(auto, correct),
        "system_by_rules": share(auto & (tier == "rules"), correct),
        "system_by_model": share(auto & (tier == "local") & ~encoded, correct),
        "system_by_encoder": share(auto & (tier == "local") & encoded, correct),
        "model_alone": share(model_auto, model_correct),
        "model_accuracy": float(model_correct.mean()) if n else 0.0,
        "classify_accuracy": float(correct.mean()) if n else 0.0,
        "encoded_share": float(encoded.mean()) if n else 0.0,
        "candidates_coverage_escalated": float(covered[unsure].mean()) if unsure.any() else None,
        "candidates_mean_size_escalated": float(sizes[unsure].mean()) if unsure.any() else None,
        "cpu_ms_mean": float(cpu.mean()) if n else 0.0,
        "cpu_ms_p99": float(np.percentile(cpu, 99)) if n else 0.0,
        "escalations": reasons,
    }
