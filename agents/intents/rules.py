"""The rules tier: each intent's regexes from the pack; trusted only when exactly one matches."""

from __future__ import annotations

from collections.abc import Mapping

from agents.intents.safe_regex import RuleSet, compile_rules
from agents.stages.types import IntentPolicy, TierAnswer

RULE_CONFIDENCE = 0.99


class RulesTier:
    """Match the pack's patterns; an unambiguous hit is a confident answer, anything else abstains."""

    name = "rules"

    def __init__(self) -> None:
        self._key: object = None
        self._compiled: list[tuple[str, RuleSet]] = []

    def _patterns(self, catalog: Mapping[str, IntentPolicy]) -> list[tuple[str, RuleSet]]:
        key = getattr(catalog, "version", None) or id(catalog)
        if key != self._key:
            compiled = []
            for policy in catalog.values():
                if policy.rules:
                    compiled.append((policy.name, compile_rules(policy.rules)))  # RE2: linear in the text
            self._compiled, self._key = compiled, key
        return self._compiled

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None:
        lowered = text.lower()
        hits = [name for name, pattern in self._patterns(catalog) if pattern.search(lowered)]
        if len(hits) != 1:
            return None
        return TierAnswer(intent=hits[0], confidence=RULE_CONFIDENCE, tier=self.name, model="rules")
