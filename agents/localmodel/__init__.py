"""Local intent-classifier tier: a small TF-IDF + linear model with calibrated confidence (no Django imports)."""

from __future__ import annotations

from typing import Any

from .data import load_csv
from .evaluate import evaluate, format_report
from .model import IntentModel, Prediction

_LAZY = {"cross_validate": ".crossval", "train_model": ".train"}


def __getattr__(name: str) -> Any:
    """Training (scikit-learn, SciPy) loads on first use: a worker that only classifies
    imports `agents.localmodel.model` and never pays for them."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IntentModel", "Prediction", "cross_validate", "evaluate", "format_report", "load_csv", "train_model"]
