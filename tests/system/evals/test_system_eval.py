"""The whole local decision (rules as evidence → the local model's cascade → decide), scored on a fixed
slice of train.csv the model is not trained on, against the figures committed in `figures.json`.

The slice is the learning loop's held-back 10 % (a hash of each text: `in_holdout(text, 10)`); the
model is trained, with the product's recipe, on the other 90 %. The build fails when the automated
share or its precision drops by more than half a point. The mean CPU per request is recorded with the
figures but not asserted: it moves with the machine and whatever else runs on it (a run here measured
3.0 ms against 0.93 ms committed from a quieter, faster machine), so it is the benchmark's to report
(docs/performance.md), not a test's. After a deliberate change, rewrite the figures with
`EVALS_UPDATE=1 python -m pytest -m evals tests/system/evals` and commit them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agents.intents.localmodel import load_csv
from agents.intents.localmodel.data import in_holdout
from agents.intents.training.system import DEFAULT_PACK, catalog_for, load_pack, score_system, summarise
from agents.intents.training.train import train_model

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "agents" / "data" / "banking77" / "train.csv"
FIGURES = Path(__file__).with_name("figures.json")
HOLDOUT_PERCENT = 10
POINTS = 0.005  # the automated share and its precision may not fall by more than half a point
RUNS = 3  # the recorded CPU figure is the least of three passes: the machine may be shared

pytestmark = pytest.mark.evals


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    texts, labels = load_csv(DATA)
    held = [in_holdout(t, HOLDOUT_PERCENT) for t in texts]
    train = [(t, y) for t, y, h in zip(texts, labels, held, strict=True) if not h]
    test = [(t, y) for t, y, h in zip(texts, labels, held, strict=True) if h]
    model = train_model([t for t, _ in train], [y for _, y in train])
    catalog = catalog_for(load_pack(DEFAULT_PACK), model)
    runs = [summarise(score_system([t for t, _ in test], [y for _, y in test], catalog, model)) for _ in range(RUNS)]
    first = runs[0]
    return {
        "n": first["n"],
        "accuracy": first["accuracy"],
        "automated_share": first["automated_share"],
        "automated_precision": first["automated_precision"],
        "encoded_share": first["encoded_share"],
        "candidates_coverage_escalated": first["candidates_coverage_escalated"],
        "cpu_ms_mean": min(r["cpu_ms_mean"] for r in runs),
        "model_version": model.version,
    }


@pytest.fixture(scope="module")
def committed(measured: dict[str, Any]) -> dict[str, Any]:
    if os.environ.get("EVALS_UPDATE") == "1":
        FIGURES.write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return json.loads(FIGURES.read_text(encoding="utf-8"))


def test_the_slice_is_the_one_the_figures_were_measured_on(measured, committed):
    assert measured["n"] == committed["n"]


def test_the_automated_share_has_not_dropped_by_more_than_half_a_point(measured, committed):
    assert measured["automated_share"] >= committed["automated_share"] - POINTS, measured


def test_the_precision_of_the_automated_share_has_not_dropped_by_more_than_half_a_point(measured, committed):
    assert measured["automated_precision"] >= committed["automated_precision"] - POINTS, measured
