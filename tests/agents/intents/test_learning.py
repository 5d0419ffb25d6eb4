"""The learning loop: versions stored, gated on a holdout, activated atomically, thresholds logged."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents.intents import learning
from agents.intents.blobs import blob_sign, is_signed
from agents.intents.local import LocalModelTier
from agents.intents.localmodel.data import load_csv
from agents.models import Intent, ModelVersion, ThresholdChange
from reviews.models import Decision, Feedback, Reason
from tests.factories import client_with_token, ticket_make

BASE = Path(__file__).resolve().parents[3] / "agents" / "data" / "banking77" / "train.csv"
INTENTS = ["card_arrival", "lost_or_stolen_card", "terminate_account", "exchange_rate", "age_limit", "top_up_failed"]


@pytest.fixture
def small_base(tmp_path, settings, db):
    """A few intents of the real training data, so a model trains in seconds."""
    texts, labels = load_csv(BASE)
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in INTENTS]
    path = tmp_path / "base.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    settings.LEARNING = {"BASE_DATA": str(path), "FOLDS": 3}
    for name in INTENTS:
        Intent.objects.update_or_create(name=name, defaults={"threshold": 0.9, "allowed_actions": ["reply"]})
    Intent.objects.filter(name="lost_or_stolen_card").update(risk="high")
    return rows


def test_a_first_model_is_trained_stored_and_activated_with_its_thresholds(small_base):
    version, activated, why = learning.model_retrain()

    assert activated and why == "no active model to compare with"
    stored = ModelVersion.objects.get(is_active=True)
    assert stored.version == version.version and stored.n_examples > 0
    assert is_signed(bytes(stored.blob))  # HMAC under SECRET_KEY, checked before any load
    assert stored.metrics["accuracy"] > 0.8
    assert stored.holdout_metrics["n"] > 0 and stored.holdout_metrics["candidate"]["accuracy"] > 0.8
    changes = ThresholdChange.objects.filter(model_version=version.version)
    assert changes.exists() and all("cross-validated" in c.reason for c in changes)
    high = Intent.objects.get(name="lost_or_stolen_card")
    assert high.threshold >= 0.9  # high-risk intents keep a floor


def test_a_worse_candidate_is_kept_out_and_the_active_one_stays(small_base):
    first, _, _ = learning.model_retrain()
    texts = [t for t, _ in small_base]
    wrong = [y for _, y in small_base]
    random.Random(1).shuffle(wrong)
    bad_feedback = list(zip(texts, wrong, strict=True)) * 3  # reviewers who label at random, thrice over

    candidate = learning.model_train(base=learning.training_data()[:2], feedback=bad_feedback)
    wins, why = learning.candidate_wins(candidate)

    assert not wins and "worse" in why
    assert ModelVersion.objects.get(is_active=True).version == first.version


@pytest.mark.parametrize(
    ("gained", "lost", "wins"),
    [(1, 3, True), (0, 2, True), (2, 30, False), (0, 12, False)],
)
def test_the_gate_is_paired_and_forgives_what_is_within_noise_on_a_small_slice(settings, gained, lost, wins):
    settings.LEARNING = {"GATE_Z": 2.0, "MAX_REGRESSION": 0.002}
    n = 82  # 10 % of 10 examples per intent: one request is more than a point of accuracy
    hold = {
        "n": n,
        "candidate": {"accuracy": (60 + gained - lost) / n},
        "active": {"accuracy": 60 / n},
        "paired": {"candidate_only": gained, "active_only": lost},
    }

    ok, why = learning.candidate_wins(SimpleNamespace(holdout_metrics=hold))

    assert ok is wins and f"+{gained}/-{lost} requests" in why


def test_thresholds_are_calibrated_on_the_base_data_and_reviewers_decisions_only_train(small_base):
    feedback = [(t, y) for t, y in small_base[:40]]

    version = learning.model_train(base=learning.training_data()[:2], feedback=feedback)

    assert version.n_feedback == 40
    assert version.metrics["n_calibration"] == version.n_examples - 40


def test_activation_is_one_transaction_and_rollback_restores_the_previous_version(small_base):
    first, _, _ = learning.model_retrain()
    second = learning.model_train()
    learning.model_activate(version=second, reason="test")
    assert list(ModelVersion.objects.filter(is_active=True).values_list("version", flat=True)) == [second.version]

    restored = learning.model_rollback()

    assert restored is not None and restored.version == first.version
    assert ModelVersion.objects.get(is_active=True).version == first.version


def test_the_tier_loads_the_active_model_and_picks_up_a_new_one_without_restart(small_base, monkeypatch):
    first, _, _ = learning.model_retrain()
    tier = LocalModelTier()
    answer = tier.classify("my card still has not arrived after two weeks", {})
    assert answer.intent == "card_arrival" and answer.model == f"local:{first.version}"

    second = learning.model_train()
    learning.model_activate(version=second, reason="test")
    monkeypatch.setattr("agents.intents.local.CHECK_EVERY_SECONDS", 0.0)
    assert tier.classify("how old do I need to be", {}).model == f"local:{second.version}"


def test_reviewers_decisions_become_training_data(small_base):
    Feedback.objects.create(
        text="where the heck is my new plastic",
        reason=Reason.LOW_CONFIDENCE,
        human_intent="card_arrival",
        decision=Decision.CORRECT,
        overridden=True,
    )
    Feedback.objects.create(
        text="ignored: dismissed", reason=Reason.LOW_CONFIDENCE, human_intent="", decision=Decision.DISMISS
    )

    _, _, feedback = learning.training_data()

    assert feedback == [("where the heck is my new plastic", "card_arrival")]
    version = learning.model_train()
    assert version.n_feedback == 1


def _decided(
    prefix: str, n: int, *, agent: str, human: str, confidence: float | None, model: str | None = None
) -> None:
    ticket = None
    if model is not None:
        client, _ = client_with_token()
        ticket = ticket_make(client, context={"classify": {"intent": agent, "model": model}})
    for i in range(n):
        Feedback.objects.create(
            ticket=ticket,
            text=f"{prefix}{i}",
            reason=Reason.LOW_CONFIDENCE,
            agent_intent=agent,
            agent_confidence=confidence,
            human_intent=human,
            decision=Decision.APPROVE if agent == human else Decision.CORRECT,
            overridden=agent != human,
        )


def test_thresholds_follow_the_reviewers_within_bounds_and_every_change_is_logged(small_base, settings):
    settings.LEARNING = {**settings.LEARNING, "MIN_DECISIONS": 5}  # thresholds are 0.9, step 0.02
    _decided("a", 10, agent="card_arrival", human="card_arrival", confidence=0.89)  # approved just below
    _decided("b", 10, agent="exchange_rate", human="exchange_rate", confidence=0.95)  # reviewed at or above ...
    _decided("c", 5, agent="exchange_rate", human="card_arrival", confidence=0.95)  # ... and often corrected
    _decided("d", 3, agent="age_limit", human="age_limit", confidence=0.89)  # too few to move age_limit

    changes = {c.intent: c for c in learning.thresholds_follow_reviewers()}

    assert changes["card_arrival"].new < changes["card_arrival"].old
    assert changes["exchange_rate"].new > changes["exchange_rate"].old
    assert "age_limit" not in changes
    assert Intent.objects.get(name="card_arrival").threshold == pytest.approx(0.88)
    assert Intent.objects.get(name="exchange_rate").threshold == pytest.approx(0.92)
    assert ThresholdChange.objects.filter(intent="exchange_rate", reason__contains="overrode 5/15").exists()


def test_corrections_of_escalated_suggestions_far_below_the_threshold_do_not_raise_it(small_base, settings):
    """Escalations are below the threshold by construction: their error rate says nothing about what is automated."""
    settings.LEARNING = {**settings.LEARNING, "MIN_DECISIONS": 5}
    _decided("e", 20, agent="terminate_account", human="card_arrival", confidence=0.4)
    _decided("f", 20, agent="top_up_failed", human="card_arrival", confidence=None)

    assert learning.thresholds_follow_reviewers() == []
    assert Intent.objects.get(name="terminate_account").threshold == pytest.approx(0.9)


def test_a_lowered_threshold_needs_fresh_approvals_just_below_it_to_fall_again(small_base, settings):
    settings.LEARNING = {**settings.LEARNING, "MIN_DECISIONS": 5}
    _decided("g", 10, agent="card_arrival", human="card_arrival", confidence=0.89)

    learning.thresholds_follow_reviewers()
    second = learning.thresholds_follow_reviewers()

    assert Intent.objects.get(name="card_arrival").threshold == pytest.approx(0.88)
    assert second == []


def test_only_decisions_on_the_active_models_or_the_rules_suggestions_move_a_threshold(small_base, settings):
    settings.LEARNING = {**settings.LEARNING, "MIN_DECISIONS": 5}
    active = ModelVersion.objects.create(version="active1", n_examples=1, is_active=True, blob=b"")
    _decided("h", 10, agent="card_arrival", human="card_arrival", confidence=0.89, model=f"local:{active.version}")
    _decided("i", 10, agent="exchange_rate", human="card_arrival", confidence=0.95, model="local:older")
    _decided("j", 10, agent="age_limit", human="age_limit", confidence=0.89, model="rules")

    changes = {c.intent for c in learning.thresholds_follow_reviewers()}

    assert changes == {"card_arrival", "age_limit"}  # an older model's confidences are not comparable


@pytest.mark.pipeline
def test_simulate_learning_streams_through_the_system_answers_escalations_and_plots(pipeline, tmp_path):
    from django.core.management import call_command

    texts, labels = load_csv(BASE)
    keep = {"card_arrival", "lost_or_stolen_card", "terminate_account"}
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in keep]
    random.Random(3).shuffle(rows)
    data = tmp_path / "stream.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(rows[:55])
    out = tmp_path / "curve.png"
    from io import StringIO

    buf = StringIO()
    call_command(
        "simulate_learning",
        data=str(data),
        seed_per_intent=5,
        batch=20,
        limit=40,
        folds=2,
        out=str(out),
        no_worker=True,
        timeout=120,
        reload_wait=0,
        stdout=buf,
    )

    printed = buf.getvalue()
    assert "40 streamed" in printed and "retrained on" in printed
    assert out.exists() and out.stat().st_size > 10_000
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["streamed"] == 40 and summary["retrains"] == 1 and "SUMMARY streamed=40" in printed
    assert 0 <= summary["overall"]["automated"] <= 1
    assert Feedback.objects.filter(human_intent__in=keep).exists()  # escalations were answered
    assert ModelVersion.objects.filter(n_feedback__gt=0).exists()


def test_the_retrain_command_trains_activates_and_rolls_back(small_base):
    from io import StringIO

    from django.core.management import call_command

    out, err = StringIO(), StringIO()
    call_command("retrain", stdout=out, stderr=err)
    first = ModelVersion.objects.get(is_active=True)
    assert first.version in out.getvalue() and "%" in err.getvalue()  # the version, and a progress bar

    skipped = StringIO()
    call_command("retrain", "--if-missing", stdout=skipped)
    assert "nothing to do" in skipped.getvalue() and ModelVersion.objects.count() == 1

    Intent.objects.create(name="pin_blocked", threshold=0.9, allowed_actions=["reply"])
    call_command("retrain", "--force", stdout=StringIO(), stderr=StringIO())
    assert ModelVersion.objects.count() == 2
    call_command("retrain", "--rollback", stdout=(back := StringIO()))
    assert ModelVersion.objects.get(is_active=True).version == first.version and first.version in back.getvalue()


def test_the_first_run_serves_the_quick_recipe_and_queues_the_full_one(small_base, monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    from agents.tasks import retrain_local_model

    queued = []
    monkeypatch.setattr(retrain_local_model, "apply_async", lambda **kw: queued.append(kw))
    call_command("retrain", "--if-missing", stdout=(out := StringIO()), stderr=StringIO())

    first = ModelVersion.objects.get(is_active=True)
    assert first.metrics["recipe"] == "first" and "embedding" not in first.metrics["method"]
    assert queued and "queued for the maintenance worker" in out.getvalue()
    learning.model_retrain()  # what the queued task does: the full recipe, gated against the first model
    assert ModelVersion.objects.filter(metrics__recipe="full").exists()


def test_the_evaluate_command_reports_the_active_model_on_a_labelled_file(small_base, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    learning.model_retrain()
    data = tmp_path / "eval.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(small_base[::7])

    as_json = StringIO()
    call_command("evaluate", "--data", str(data), "--json", stdout=as_json)
    report = json.loads(as_json.getvalue())
    assert report["n_examples"] == len(small_base[::7]) and report["accuracy"] > 0.8
    assert 0 < report["automated_share"] <= 1 and report["automated_precision"] > 0.8
    assert report["model_version"] == ModelVersion.objects.get(is_active=True).version
    assert {"per_intent", "confused_pairs", "macro_f1"} <= set(report)

    text = StringIO()
    call_command("evaluate", "--data", str(data), stdout=text)
    assert "accuracy" in text.getvalue().lower() and str(data) in text.getvalue()


def test_the_evaluate_command_scores_the_whole_local_decision_with_the_thresholds_in_force(small_base, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    from agents.intents.catalog import clear_cache

    learning.model_retrain()
    Intent.objects.update(reply_template="We are on it.")  # decide automates only an intent with a reply
    data = tmp_path / "eval.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(small_base[::7])

    def system() -> dict:
        clear_cache()
        out = StringIO()
        call_command("evaluate", "--data", str(data), "--system", stdout=out)
        return json.loads(out.getvalue())

    report = system()
    assert report["n"] == len(small_base[::7]) and report["accuracy"] > 0.8
    assert 0 < report["automated_share"] <= 1 and report["automated_precision"] > 0.8
    assert report["model_version"] == ModelVersion.objects.get(is_active=True).version
    Intent.objects.update(threshold=1.0)  # nothing is sure enough any more: everything goes to a person
    assert system()["automated_share"] == 0.0


def test_the_evaluate_command_refuses_a_bad_file_clearly(small_base, tmp_path):
    from django.core.management import CommandError, call_command

    learning.model_retrain()
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,card_arrival\n")

    with pytest.raises(CommandError, match="text"):
        call_command("evaluate", "--data", str(bad))
    with pytest.raises(CommandError):
        call_command("evaluate", "--data", str(tmp_path / "missing.csv"))


def test_the_evaluate_command_needs_an_active_model(db, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no active local model"):
        call_command("evaluate", "--data", str(tmp_path / "any.csv"))


def test_a_model_version_the_worker_cannot_load_is_skipped_not_fatal(small_base, caplog):
    first, _, _ = learning.model_retrain()
    tier = LocalModelTier()
    assert tier.classify("my card has not arrived", {}) is not None
    broken = ModelVersion.objects.create(version="broken", n_examples=1, blob=blob_sign(b"not a model"))
    ModelVersion.objects.filter(pk=first.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    tier._checked = float("-inf")

    answer = tier.classify("my card has not arrived", {})

    assert answer is not None and answer.model == f"local:{first.version}"  # the loaded one goes on
    assert "cannot be loaded" in caplog.text
    fresh = LocalModelTier()
    assert fresh.classify("my card has not arrived", {}) is None  # nothing loaded yet: abstain, no crash


def test_a_retrain_replaces_an_active_model_whose_blob_is_refused(small_base):
    first, _, _ = learning.model_retrain()
    blob = bytes(ModelVersion.objects.get(pk=first.pk).blob)
    ModelVersion.objects.filter(pk=first.pk).update(blob=blob[:-1] + bytes([blob[-1] ^ 1]))  # changed in the table

    second, activated, why = learning.model_retrain()

    assert activated and why == "no active model to compare with"
    assert "does not verify" in second.holdout_metrics["active_refused"]
    answer = LocalModelTier().classify("my card still has not arrived after two weeks", {})
    assert answer is not None and answer.model == f"local:{second.version}"
