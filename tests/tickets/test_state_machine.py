"""The ticket state machine refuses illegal moves."""

from __future__ import annotations

import pytest

from agents.pipeline.spec import SPEC
from tickets.models import TERMINAL, IllegalTransition, Status

check_transition = SPEC.check


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
    # Every possible move out of each terminal state: only a person's decision or a replay leaves one.
    allowed = {
        Status.RESOLVED: set(),
        Status.AWAITING_REVIEW: {"executing", Status.RESOLVED},  # resume at execute, or dismiss
        Status.DEAD_LETTERED: {s.status for s in SPEC.stages} | {Status.RESOLVED},  # replay, or dismiss
    }
    assert set(allowed) == TERMINAL
    for current, ways_out in allowed.items():
        for new in SPEC.statuses:
            if new in ways_out:
                check_transition(current, new)
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(current, new)


def test_every_stage_moves_on_escalates_or_dead_letters_and_nothing_else():
    for spec in SPEC.stages:
        expected = {spec.next_status, Status.DEAD_LETTERED} | ({SPEC.escalation.status} - {spec.status})
        assert SPEC.transitions[spec.status] == expected, spec.name
