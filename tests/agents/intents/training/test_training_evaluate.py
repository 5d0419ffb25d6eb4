"""evaluate(), format_report() and load_csv() on tiny hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.intents.localmodel import IntentModel, load_csv
from agents.intents.training.evaluate import evaluate, format_report


class FixedVectorizer:
    """Maps a text to a one-hot row over a fixed vocabulary of whole texts."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = {t: i for i, t in enumerate(vocab)}

    def transform(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, self.vocab[text]] = 1.0
        return out


def tiny_model() -> IntentModel:
    """Three intents; each text scores its intent with a chosen margin, so confidences are known."""
    vocab = ["a1", "a2", "b1", "b2", "c1"]
    # columns: intents a, b, c; rows: texts
    scores = np.array(
        [
            [5.0, 0.0, 0.0],  # a1 -> a, very confident
            [0.5, 0.0, 0.0],  # a2 -> a, unsure
            [0.0, 5.0, 0.0],  # b1 -> b, very confident
            [5.0, 0.0, 0.0],  # b2 -> a (wrong), very confident
            [0.0, 0.0, 0.2],  # c1 -> c, unsure
        ]
    )
    return IntentModel(
        vectorizer=FixedVectorizer(vocab),
        coef=scores.T,
        intercept=np.zeros(3),
        intents=["a", "b", "c"],
        temperature=1.0,
        global_threshold=0.9,
        thresholds={"c": 0.3},
        metrics={},
    )


def test_evaluate_hand_made_case() -> None:
    model = tiny_model()
    texts = ["a1", "a2", "b1", "b2", "c1"]
    labels = ["a", "a", "b", "b", "c"]
    r = evaluate(model, texts, labels)
    assert r["n_examples"] == 5
    assert r["accuracy"] == pytest.approx(4 / 5)
    # a: P=2/3 R=1 F1=0.8; b: P=1 R=1/2 F1=2/3; c: P=R=F1=1
    assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    # automated: a1 (0.987 >= 0.9), b1, b2 (wrong), c1 (0.38 >= c's 0.3); not a2 (0.45 < 0.9)
    assert r["n_automated"] == 4
    assert r["automated_share"] == pytest.approx(4 / 5)
    assert r["automated_precision"] == pytest.approx(3 / 4)
    rows = {row["intent"]: row for row in r["per_intent"]}
    assert rows["a"]["support"] == 2 and rows["a"]["predicted"] == 3 and rows["a"]["automated"] == 2
    assert rows["a"]["automated_precision"] == pytest.approx(1 / 2)
    assert rows["c"]["threshold"] == 0.3 and rows["b"]["threshold"] == 0.9
    assert r["confused_pairs"] == [{"true": "b", "predicted": "a", "count": 1}]
    text = format_report(r)
    assert "accuracy            80.0 %" in text and "b -> a: 1" in text


def test_prediction_probabilities_known() -> None:
    p = tiny_model().predict("c1")
    e = np.exp(0.2)
    assert p.intent == "c"
    assert p.confidence == pytest.approx(e / (e + 2))
    assert [a for a, _ in p.alternatives][0] == "c"
    assert p.alternatives[1][1] == p.alternatives[2][1] == pytest.approx(1 / (e + 2))


def test_load_csv_ok(tmp_path: Path) -> None:
    f = tmp_path / "ok.csv"
    f.write_text('text,category\nhello there,greet\n"a, quoted one",other\n\n', encoding="utf-8")
    assert load_csv(f) == (["hello there", "a, quoted one"], ["greet", "other"])


@pytest.mark.parametrize(
    "content",
    ["", "text,label\nhi,greet\n", "message,category\nhi,greet\n", "text,category\n", "text,category\n,greet\n"],
)
def test_load_csv_rejects_bad_files(tmp_path: Path, content: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError):
        load_csv(f)
