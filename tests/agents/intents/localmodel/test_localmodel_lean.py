"""A worker classifies without scikit-learn: the single-text path runs on plain data stored in the
model's bytes, and gives what scikit-learn's features give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.intents.localmodel import IntentModel, load_csv
from agents.intents.localmodel.model import _analyzer, _lean_blocks
from agents.intents.training.train import build_vectorizer, train_model

ROOT = Path(__file__).resolve().parents[4]
TRAIN = ROOT / "agents" / "data" / "banking77" / "train.csv"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_csv(TRAIN)[0] + ["", "   ", "Ünïcode  CAFÉ\ttabs\nnewlines", "a", "£5,000 refund!!", "x" * 300]


def test_the_written_out_analyzers_match_scikit_learns_on_the_whole_training_split(texts):
    vectorizer = build_vectorizer(len(texts)).fit(texts)
    parts = [part for _, part in vectorizer.transformer_list]

    for part, block in zip(parts, _lean_blocks(vectorizer), strict=True):
        ours, theirs = _analyzer(block), part.build_analyzer()
        mismatched = [t for t in texts if ours(t) != theirs(t)]
        assert not mismatched, (block["analyzer"], mismatched[:3])


def test_a_loaded_model_scores_one_text_as_the_batch_path_does(texts):
    texts_, labels = load_csv(TRAIN)
    keep = [i for i, y in enumerate(labels) if y in {"card_arrival", "exchange_rate", "pin_blocked", "age_limit"}]
    model = train_model([texts_[i] for i in keep], [labels[i] for i in keep], folds=2)
    loaded = IntentModel.from_bytes(model.to_bytes())

    assert loaded.version == model.version
    sample = texts[::97]
    batch = loaded.scores(sample)  # scikit-learn's transform, unpickled on first use
    one = np.vstack([loaded.score_one(t) for t in sample])
    assert np.allclose(one, batch, atol=1e-4)


def test_a_worker_that_classifies_never_imports_scikit_learn(tmp_path):
    texts_, labels = load_csv(TRAIN)
    keep = [i for i, y in enumerate(labels) if y in {"card_arrival", "exchange_rate", "pin_blocked"}]
    blob = tmp_path / "model.bin"
    blob.write_bytes(train_model([texts_[i] for i in keep], [labels[i] for i in keep], folds=2).to_bytes())
    script = (
        "import sys; from agents.intents.localmodel.model import IntentModel; "
        f"m = IntentModel.from_bytes(open({str(blob)!r}, 'rb').read()); "
        "p = m.predict('my card has still not arrived'); "
        "print(p.intent, 'sklearn' in sys.modules, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["card_arrival", "False", "False"], out.stderr


def test_a_model_stored_in_the_first_format_still_loads(texts):
    import pickle
    import zlib

    texts_, labels = load_csv(TRAIN)
    keep = [i for i, y in enumerate(labels) if y in {"card_arrival", "exchange_rate", "pin_blocked"}]
    model = train_model([texts_[i] for i in keep], [labels[i] for i in keep], folds=2)
    state = {**model._state(), "format": 1, "vectorizer": model.vectorizer, "version": model.version}
    del state["lean"]
    old = zlib.compress(pickle.dumps(state))  # what an active model from before the upgrade holds

    loaded = IntentModel.from_bytes(old)

    assert loaded.predict("my card has still not arrived").intent == "card_arrival"
    assert np.allclose(loaded.score_one(texts[5]), model.score_one(texts[5]))
