"""Training, thresholds and serialisation of the local intent model (pure, no database)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from agents.intents.localmodel import IntentModel, Prediction, load_csv
from agents.intents.training.evaluate import evaluate
from agents.intents.training.train import choose_thresholds, lowest_threshold, train_model

DATA = Path(__file__).resolve().parents[4] / "agents" / "data" / "banking77" / "train.csv"
MIN_T, MAX_T = 0.3, 0.999


@pytest.fixture(scope="module")
def subset() -> tuple[list[str], list[str]]:
    """10 intents x 30 examples from the shipped training split."""
    texts, labels = load_csv(DATA)
    keep = sorted(set(labels))[:10]
    by_intent: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=False):
        if label in keep:
            by_intent.setdefault(label, []).append(text)
    rng = random.Random(0)
    out_t: list[str] = []
    out_l: list[str] = []
    for label in keep:
        chosen = rng.sample(by_intent[label], 30)
        out_t += chosen
        out_l += [label] * len(chosen)
    return out_t, out_l


@pytest.fixture(scope="module")
def model(subset: tuple[list[str], list[str]]) -> IntentModel:
    """A model trained on the subset (3 folds keeps the test quick)."""
    texts, labels = subset
    calls: list[tuple[str, int, int]] = []
    m = train_model(
        texts, labels, folds=3, min_threshold=MIN_T, max_threshold=MAX_T, progress=lambda *a: calls.append(a)
    )
    assert calls and calls[-1][0] == "fits" and calls[-1][1] == calls[-1][2]  # every fit done
    return m


def test_round_trip_gives_identical_predictions(model: IntentModel, subset: tuple[list[str], list[str]]) -> None:
    texts = subset[0][:40] + ["where is my new card", "I want my money back", ""]
    clone = IntentModel.from_bytes(model.to_bytes())
    assert clone.version == model.version and len(model.version) == 12
    assert clone.intents == model.intents
    assert clone.thresholds == model.thresholds and clone.global_threshold == model.global_threshold
    assert clone.metrics == model.metrics
    assert clone.predict_many(texts) == model.predict_many(texts)


def test_fast_single_path_matches_sklearn(model: IntentModel, subset: tuple[list[str], list[str]]) -> None:
    assert model._blocks is not None  # plain tf-idf features: predict() skips sklearn's per-call overhead
    texts = subset[0][:30] + ["", "zzzz qqqq", "Where's my CARD?!"]
    batch = model.scores(texts)
    for text, row in zip(texts, batch, strict=False):
        np.testing.assert_allclose(model.score_one(text), row, atol=1e-4)


def test_from_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        IntentModel.from_bytes(b"not a model")


def test_thresholds_within_bounds(model: IntentModel) -> None:
    assert MIN_T <= model.global_threshold <= MAX_T
    for intent, t in model.thresholds.items():
        assert intent in model.intents
        assert MIN_T <= t <= MAX_T
    for intent in model.intents:
        assert model.threshold_for(intent) == model.thresholds.get(intent, model.global_threshold)
    assert model.threshold_for("no_such_intent") == model.global_threshold


def test_metrics_recorded(model: IntentModel) -> None:
    m = model.metrics
    assert m["n_examples"] == 300 and m["n_intents"] == 10 and m["folds"] == 3
    assert m["target_precision"] == 0.98
    for key in ("accuracy", "macro_f1", "automated_share"):
        assert 0.0 <= m[key] <= 1.0
    assert m["accuracy"] > 0.8  # 10 well-separated intents
    assert json.loads(json.dumps(m)) == m  # stored as JSON by the learning loop
    report = evaluate(model, ["where is my card"], ["card_arrival"])
    json.dumps(report)


def test_predict_confidence_and_alternatives(model: IntentModel, subset: tuple[list[str], list[str]]) -> None:
    p = model.predict("I still have not received my card")
    assert isinstance(p, Prediction)
    assert 0.0 <= p.confidence <= 1.0
    assert p.intent in model.intents
    assert len(p.alternatives) == 3
    assert p.alternatives[0] == (p.intent, p.confidence)
    probs = [q for _, q in p.alternatives]
    assert probs == sorted(probs, reverse=True)
    many = model.predict_many(subset[0][:25])
    assert len(many) == 25 and model.predict_many([]) == []
    for text, q in zip(subset[0][:25], many, strict=False):
        single = model.predict(text)
        assert single.intent == q.intent
        assert single.confidence == pytest.approx(q.confidence, abs=1e-6)
        # same probabilities; near-ties among the runners-up may be ordered differently by float rounding
        assert [x for _, x in single.alternatives] == pytest.approx([x for _, x in q.alternatives], abs=1e-6)
    # the model fits its training data
    assert evaluate(model, *subset)["accuracy"] > 0.95


def test_extra_examples_and_subset_of_intents() -> None:
    texts = ["card never arrived", "where is my card", "card not delivered yet", "card still missing"] * 3
    texts += ["refund please", "I want a refund", "money back for this", "refund my purchase"] * 3
    labels = ["card_arrival"] * 12 + ["request_refund"] * 12
    m = train_model(texts, labels, folds=2)
    assert train_model(texts, labels, folds=2).version == m.version  # deterministic for the same data and seed
    assert m.intents == ["card_arrival", "request_refund"]
    assert m.predict("my card has not arrived").intent == "card_arrival"
    assert len(m.predict("refund").alternatives) == 2
    with pytest.raises(ValueError):
        train_model(["a", "b"], ["x", "x"])


@pytest.mark.parametrize("per_intent", [1, 2, 3])
def test_tiny_data_trains(per_intent: int) -> None:
    texts = [f"{w} {i}" for w in ("card", "refund", "pin") for i in range(per_intent)]
    labels = [lab for lab in ("card_arrival", "request_refund", "pin_blocked") for _ in range(per_intent)]
    m = train_model(texts, labels, folds=5)
    assert m.intents == ["card_arrival", "pin_blocked", "request_refund"]
    assert 0.3 <= m.global_threshold <= 0.999
    assert 0.0 <= m.predict("card").confidence <= 1.0


def test_lowest_threshold() -> None:
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert lowest_threshold(conf, correct, 1.0, 0.3, 0.999) == 0.9
    assert lowest_threshold(conf, correct, 0.8, 0.3, 0.999) == 0.7
    assert lowest_threshold(conf, correct, 0.5, 0.3, 0.999) == 0.6  # everything clears: least confident example
    assert lowest_threshold(conf, correct, 0.5, 0.65, 0.999) == 0.7  # the floor excludes 0.6
    assert lowest_threshold(np.array([0.9, 0.8]), np.array([False, True]), 0.98, 0.3, 0.999) is None
    assert lowest_threshold(conf, correct, 1.0, 0.3, 0.999, min_support=4) is None


def test_choose_thresholds_guard() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    intents = [f"i{k}" for k in range(10)] + ["rare"]
    pred = rng.integers(0, 10, n)
    pred[:20] = 10  # "rare": only 20 predictions, too few for a threshold of its own
    conf = rng.uniform(0.3, 1.0, n)
    y = pred.copy()
    bad = (pred == 1) & (conf < 0.8) & (rng.uniform(size=n) < 0.3)  # i1 is unreliable below 0.8
    y[bad] = 0
    g, per = choose_thresholds(conf, pred, y, intents, 0.98, 0.3, 0.999)
    assert 0.3 <= g < 0.6
    assert per["i1"] >= 0.75  # raised for the unreliable intent
    assert "rare" not in per
    for intent, t in per.items():
        assert 0.3 <= t <= 0.999
        assert intent == "i1" or t <= g  # nothing else is made stricter


def test_calibrate_limits_temperature_thresholds_and_metrics_to_the_flagged_examples(
    subset: tuple[list[str], list[str]],
) -> None:
    texts, labels = subset
    flags = [i % 3 != 0 for i in range(len(texts))]

    flagged = train_model(texts, labels, folds=3, calibrate=flags)
    unflagged_too = train_model(texts, labels, folds=3)

    assert flagged.metrics["n_calibration"] == sum(flags) and flagged.metrics["n_examples"] == len(texts)
    assert unflagged_too.metrics["n_calibration"] == len(texts)
    assert np.allclose(flagged.coef, unflagged_too.coef)  # every example still trains the model
    assert flagged.temperature != unflagged_too.temperature


def test_calibrate_falls_back_to_every_example_when_too_few_are_flagged(subset: tuple[list[str], list[str]]) -> None:
    texts, labels = subset

    model = train_model(texts, labels, folds=3, calibrate=[i < 10 for i in range(len(texts))])

    assert model.metrics["n_calibration"] == len(texts)
    with pytest.raises(ValueError, match="flags"):
        train_model(texts, labels, folds=3, calibrate=[True])
