"""Helpers for the rule and dashboard tests: which metric names the product exports, which an
expression refers to."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents import metrics  # noqa: F401 - define the event metrics
from project.metrics import PipelineStateCollector
from tickets.webhooks import delivery  # noqa: F401 - defines the callbacks' metric

SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"\b(?:pipeline|django)_[a-zA-Z0-9_]+")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def exported_names() -> set[str]:
    """Every sample name a scrape can show: event metrics, state gauges (needs the database)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineStateCollector(cache_seconds=0))  # type: ignore[arg-type]
    text = generate_latest(REGISTRY).decode() + generate_latest(registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    return {f"{name}{suffix}" for name in families for suffix in SUFFIXES}


def referenced_names(expr: str) -> set[str]:
    """The pipeline_* and django_* metric names an expression reads (not labels, not strings)."""
    expr = _LABEL_LISTS.sub("", _STRING.sub('""', expr))
    expr = re.sub(r"\{[^}]*\}", "", expr)
    return set(_NAME.findall(expr))
