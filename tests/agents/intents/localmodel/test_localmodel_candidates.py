"""Conformal top-k candidate sets."""

from __future__ import annotations

import numpy as np

from agents.intents.localmodel.candidates import coverage_of, fit_top_k, true_ranks


def test_true_ranks_count_from_one():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])
    assert true_ranks(probs, np.array([0, 2, 0])).tolist() == [1, 2, 3]


def test_fit_top_k_is_the_conformal_quantile_of_the_true_ranks():
    rng = np.random.default_rng(0)
    n, classes = 1000, 20
    probs = rng.dirichlet(np.ones(classes), size=n)
    order = np.argsort(-probs, axis=1)
    ranks = np.where(rng.random(n) < 0.95, 1, rng.integers(2, 11, size=n))  # 5 % of truths at ranks 2-10
    y = order[np.arange(n), ranks - 1]

    k = fit_top_k(probs, y, coverage=0.99)

    # the smallest k covering ceil((n + 1) x 0.99) = 991 of the 1,000 (the finite-sample correction)
    assert coverage_of(probs, y, k) >= 0.991 and coverage_of(probs, y, k - 1) < 0.991
    assert 3 <= k <= 10


def test_fit_top_k_never_asks_for_more_intents_than_there_are():
    probs = np.full((5, 4), 0.25)
    assert fit_top_k(probs, np.arange(5) % 4, coverage=0.999) == 4
