"""Loading an intent pack (YAML or JSON) into the Intent table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from agents.intents.safe_regex import RuleError, validate_rule
from agents.models import Intent, Risk

TOOLS = frozenset({"reply", "webhook"})
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ALLOWED_PLACEHOLDERS = frozenset({"customer_ref", "ticket_ref"})


class PackError(ValueError):
    """The pack is malformed; the message names the intent and the problem."""


def _check(entry: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    name = entry.get("name")
    if not name or not re.fullmatch(r"[A-Za-z0-9_.?-]{1,100}", str(name)):
        raise PackError(f"intent name {name!r} must be 1-100 characters of letters, digits and _ . ? -")
    merged = {**defaults, **entry}
    for rule in merged.get("rules") or []:
        try:
            validate_rule(rule)
        except RuleError as exc:
            raise PackError(f"{name}: {exc}") from exc
    actions = merged.get("allowed_actions") or []
    if not set(actions) <= TOOLS:
        raise PackError(f"{name}: allowed_actions {sorted(set(actions) - TOOLS)} are not tools")
    threshold = float(merged.get("threshold", 0.9))
    if not 0 < threshold <= 1:
        raise PackError(f"{name}: threshold {threshold} is not in (0, 1]")
    if merged.get("risk", "low") not in Risk.values:
        raise PackError(f"{name}: risk must be one of {Risk.values}")
    bad = set(PLACEHOLDER.findall(merged.get("reply_template") or "")) - ALLOWED_PLACEHOLDERS
    if bad:
        raise PackError(f"{name}: reply_template uses unknown placeholders {sorted(bad)}")
    return {
        "description": merged.get("description") or "",
        "examples": list(merged.get("examples") or []),
        "rules": list(merged.get("rules") or []),
        "threshold": threshold,
        "risk": merged.get("risk", "low"),
        "always_review": bool(merged.get("always_review", False)),
        "allowed_actions": list(actions),
        "reply_template": (merged.get("reply_template") or "").strip(),
    }


def read_pack(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and validate a pack file; returns intent name → fields."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("intents"), list):
        raise PackError("a pack is a mapping with a list under 'intents'")
    defaults = data.get("defaults") or {}
    intents: dict[str, dict[str, Any]] = {}
    for entry in data["intents"]:
        fields = _check(entry, defaults)
        if entry["name"] in intents:
            raise PackError(f"intent {entry['name']} appears twice")
        intents[entry["name"]] = fields
    return intents


@transaction.atomic
def intent_pack_load(path: str | Path) -> tuple[int, int]:
    """Create or update every intent of the pack; keeps operator-set webhook URLs. Returns (created, updated)."""
    intents = read_pack(path)
    existing = {i.name: i for i in Intent.objects.select_for_update()}
    created = updated = 0
    for name, fields in intents.items():
        if name in existing:
            Intent.objects.filter(pk=existing[name].pk).update(**fields, is_active=True)
            updated += 1
        else:
            Intent.objects.create(name=name, **fields)
            created += 1
    # update() skips auto_now: touch every row so workers' catalogue caches see the change.
    from django.utils import timezone

    Intent.objects.filter(name__in=intents).update(updated_at=timezone.now())
    return created, updated
