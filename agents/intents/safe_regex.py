"""Intent rules people write, matched with RE2: time linear in the text, whatever the rule says.

Python's `re` backtracks: one careless rule saved in the admin (`(a+)+$`, `(\\w+\\s?)*x`) can cost a
worker minutes per ticket. RE2 (google-re2) never backtracks. It has no look-arounds and no
back-references, so the one look-around the packs use by convention, a leading guard
`^(?!.*x)` / `^(?=.*x)`, is compiled to a pattern of its own that must not / must match. RE2's
`\\w`, `\\d`, `\\s` and `\\b` are ASCII; for letters of other scripts write `\\pL`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import re2

_log = logging.getLogger(__name__)

MAX_RULE_CHARS = 2_000
# RE2's compiled program size (instructions); the packs' largest rule is under 2,000.
MAX_PROGRAM_SIZE = 20_000
_GUARDS = {"^(?!": False, "^(?=": True}  # the guard's opening → whether the text must match it


class RuleError(ValueError):
    """A rule RE2 cannot take, or one too large; the message says which and why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True  # a rule answers yes or no: no groups to track
    options.log_errors = False
    options.max_mem = 8 << 20
    return options


_OPTIONS = _options()


def compile_pattern(pattern: str) -> re2._Regexp:
    """One RE2 pattern, case-insensitive, bounded in size; RuleError when RE2 refuses it."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise RuleError(f"{pattern!r} does not compile under RE2: {exc}") from exc
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise RuleError(f"{pattern!r} is too large ({compiled.programsize} > {MAX_PROGRAM_SIZE} instructions)")
    return compiled


def _group_end(text: str, start: int) -> int:
    """Index of the `)` closing the group opened at `text[start]`, skipping escapes and classes."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 1
        elif ch == "[":
            i = _class_end(text, i)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise RuleError(f"{text!r} has an unbalanced parenthesis")


def _class_end(text: str, start: int) -> int:
    i = start + 1
    if i < len(text) and text[i] == "^":
        i += 1
    if i < len(text) and text[i] == "]":
        i += 1  # a `]` first in a class is a literal
    while i < len(text) and text[i] != "]":
        i += 2 if text[i] == "\\" else 1
    return i


def _has_top_level_bar(text: str) -> bool:
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 1
        elif ch == "[":
            i = _class_end(text, i)
        elif ch in "()":
            depth += 1 if ch == "(" else -1
        elif ch == "|" and depth == 0:
            return True
        i += 1
    return False


@dataclass(frozen=True)
class Rule:
    """A compiled rule: `main` must match; each guard must match (True) or must not (False)."""

    source: str
    main: re2._Regexp
    guards: tuple[tuple[re2._Regexp, bool], ...] = ()

    def search(self, text: str) -> bool:
        if not all(bool(pattern.search(text)) == wanted for pattern, wanted in self.guards):
            return False
        return bool(self.main.search(text))


def parse_rule(source: str) -> Rule:
    """Compile one rule; leading `^(?!…)` / `^(?=…)` guards become patterns of their own."""
    if not isinstance(source, str) or not source:
        raise RuleError("a rule is a non-empty string")
    if len(source) > MAX_RULE_CHARS:
        raise RuleError(f"a rule is at most {MAX_RULE_CHARS} characters (this one has {len(source)})")
    guards, rest = [], source
    while rest[:4] in _GUARDS:
        end = _group_end(rest, 1)
        guards.append((compile_pattern("^(?:" + rest[4:end] + ")"), _GUARDS[rest[:4]]))
        rest = "^" + rest[end + 1 :]
    if guards and _has_top_level_bar(rest[1:]):
        raise RuleError(f"{source!r}: wrap what follows a leading look-ahead in (?:...) when it has a top-level |")
    return Rule(source=source, main=compile_pattern(rest), guards=tuple(guards))


def validate_rule(source: str) -> None:
    """Raise RuleError unless `source` is a rule the rules tier can run in linear time."""
    parse_rule(source)


class RuleSet:
    """An intent's rules: `search(text)` is true when any of them matches."""

    def __init__(self, rules: Iterable[Rule], *, join: bool = True) -> None:
        rules = list(rules)
        plain = [r.source for r in rules if not r.guards] if join else []
        # The unguarded rules run as one alternation: one pass over the text for all of them.
        self._joined = compile_pattern("|".join(f"(?:{s})" for s in plain)) if plain else None
        self._each = [r for r in rules if r.guards or not join]

    def search(self, text: str) -> bool:
        if self._joined is not None and self._joined.search(text):
            return True
        return any(rule.search(text) for rule in self._each)


def compile_rules(sources: Iterable[str]) -> RuleSet:
    """The rules that compile; a bad one (saved before validation existed) is logged and skipped,
    so it silences itself instead of failing every ticket."""
    rules = []
    for source in sources:
        try:
            rules.append(parse_rule(source))
        except RuleError as exc:
            _log.warning("intent rule skipped: %s", exc)
    try:
        return RuleSet(rules)
    except RuleError as exc:  # each compiles alone, but together they are too large
        _log.warning("intent rules run one by one: %s", exc)
        return RuleSet(rules, join=False)
