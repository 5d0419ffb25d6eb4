"""The ticket state machine refuses illegal moves."""

from __future__ import annotations

import pytest

from tickets.models import IllegalTransition, Status, check_transition


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("received", "parsing"),
        ("parsing", "classifying"),
        ("classifying", "deciding"),
        ("deciding", "executing"),
        ("executing", "resolved"),
        ("deciding", "escalating"),
        ("escalating", "awaiting_review"),
        ("classifying", "dead_lettered"),
        ("awaiting_review", "executing"),
        ("dead_lettered", "executing"),
    ],
)
def test_legal_moves_pass(current, new):
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("received", "resolved"),
        ("parsing", "executing"),
        ("resolved", "parsing"),
        ("resolved", "dead_lettered"),
        ("awaiting_review", "parsing"),
        ("classifying", "parsing"),
        ("dead_lettered", "awaiting_review"),
        ("executing", "deciding"),
    ],
)
def test_illegal_moves_are_refused(current, new):
    with pytest.raises(IllegalTransition):
        check_transition(current, new)


def test_terminal_states_have_no_way_out_but_review_and_replay():
    assert Status.RESOLVED.value == "resolved"
    with pytest.raises(IllegalTransition):
        check_transition(Status.RESOLVED, Status.EXECUTING)
