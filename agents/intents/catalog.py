"""The intent catalogue as stages see it: loaded from Postgres, cached per process."""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db.models import Count, Max

from agents.models import Intent
from agents.stages.types import IntentPolicy

# How long a worker trusts its cached catalogue before asking Postgres whether it changed;
# an intent edited in the admin reaches every worker within this, with no deploy.
CHECK_EVERY_SECONDS = 2.0


class IntentCatalog(dict[str, IntentPolicy]):
    """Intent name → policy, with a version so tiers can cache what they derive from it."""

    version: object = None


def policy_from(intent: Intent) -> IntentPolicy:
    """The stage-facing view of an Intent row."""
    return IntentPolicy(
        name=intent.name,
        description=intent.description,
        threshold=intent.threshold,
        allowed_actions=tuple(intent.allowed_actions),
        reply_template=intent.reply_template,
        risk=intent.risk,
        always_review=intent.always_review,
        webhook_url=intent.webhook_url,
        rules=tuple(intent.rules),
    )


def build_catalog(intents: Iterable[Intent], version: object = None) -> IntentCatalog:
    """A catalogue of the given intents."""
    catalog = IntentCatalog((i.name, policy_from(i)) for i in intents)
    catalog.version = version
    return catalog


_cache: dict[str, object] = {"catalog": None, "version": None, "checked": 0.0}


def get_catalog() -> IntentCatalog:
    """The active intents, re-read when the table changed (checked every few seconds)."""
    now = time.monotonic()
    catalog = _cache["catalog"]
    if catalog is not None and now - float(_cache["checked"]) < CHECK_EVERY_SECONDS:  # type: ignore[arg-type]
        return catalog  # type: ignore[return-value]
    stats = Intent.objects.filter(is_active=True).aggregate(n=Count("id"), latest=Max("updated_at"))
    version = (stats["n"], stats["latest"])
    if catalog is None or version != _cache["version"]:
        catalog = build_catalog(Intent.objects.filter(is_active=True), version)
        _cache.update(catalog=catalog, version=version)
    _cache["checked"] = now
    return catalog  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget the cached catalogue (tests, and after loading a pack)."""
    _cache.update(catalog=None, version=None, checked=0.0)
