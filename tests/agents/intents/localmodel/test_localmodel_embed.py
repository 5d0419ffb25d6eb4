"""The static-embedding block: shipped files only, same scores on the fast and the batch path, not pickled."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from agents.intents.localmodel import IntentModel, load_csv
from agents.intents.localmodel.embed import DEFAULT_EMBEDDING, StaticEmbedder, get_embedder
from agents.intents.training import train as train_module
from agents.intents.training.train import train_model

DATA = Path(__file__).resolve().parents[4] / "agents" / "data" / "banking77" / "train.csv"


@pytest.fixture(scope="module")
def subset() -> tuple[list[str], list[str]]:
    """8 intents x 25 examples."""
    texts, labels = load_csv(DATA)
    keep = sorted(set(labels))[10:18]
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in keep]
    random.Random(1).shuffle(rows)
    taken: dict[str, int] = {}
    out = []
    for text, label in rows:
        if taken.get(label, 0) < 25:
            taken[label] = taken.get(label, 0) + 1
            out.append((text, label))
    return [t for t, _ in out], [y for _, y in out]


@pytest.fixture(scope="module", params=[DEFAULT_EMBEDDING, DEFAULT_EMBEDDING + ":meanmax"])
def model(request: pytest.FixtureRequest, subset: tuple[list[str], list[str]]) -> IntentModel:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "EMBEDDING", request.param)
        return train_model(*subset, folds=3)


def test_the_embedder_reads_the_wheels_files_and_gives_unit_vectors_and_zeros_for_nothing():
    embedder = get_embedder()

    vectors = embedder.embed(["my card has not arrived", ""])

    assert get_embedder() is embedder and vectors.shape == (2, 256) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5) and not vectors[1].any()
    assert np.allclose(embedder.embed_one("my card has not arrived"), vectors[0], atol=1e-6)
    with pytest.raises(ValueError):
        StaticEmbedder("somewhere:else")


def test_near_synonyms_are_closer_than_unrelated_requests():
    a, b, c = get_embedder().embed(["my card hasn't arrived yet", "still waiting for my new card", "exchange rate"])

    assert a @ b > a @ c


def test_single_text_path_matches_the_batch_path_with_the_embedding_block(model, subset):
    texts = subset[0][:40]

    batch = model.scores(texts)
    single = np.vstack([model.score_one(t) for t in texts])

    assert model.coef.shape[1] == model._n_sparse + model._embedder.dim
    assert np.allclose(batch, single, atol=1e-4)


def test_the_embedding_is_named_in_the_blob_not_stored_in_it(model, subset):
    blob = model.to_bytes()
    again = IntentModel.from_bytes(blob)

    assert again.embedding == model.embedding and again.version == model.version
    assert len(blob) < 2_000_000  # the 16 MB matrix is not in it
    assert [p.intent for p in again.predict_many(subset[0][:20])] == [
        p.intent for p in model.predict_many(subset[0][:20])
    ]
    assert "embedding" in model.metrics["method"]
