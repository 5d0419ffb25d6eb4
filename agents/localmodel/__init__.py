"""Local intent-classifier tier: a small TF-IDF + linear model with calibrated confidence (no Django imports)."""
from __future__ import annotations

from .data import load_csv
from .evaluate import evaluate, format_report
from .model import IntentModel, Prediction
from .train import cross_validate, train_model

__all__ = ["IntentModel", "Prediction", "cross_validate", "evaluate", "format_report", "load_csv", "train_model"]
