"""Local intent-classifier tier as a worker serves it: a small TF-IDF + linear model with calibrated
confidence, and the encoder head where it is unsure (no Django imports). Training and evaluation live
in `agents/intents/training/`, which nothing on the request path imports."""

from __future__ import annotations

from .data import load_csv
from .model import IntentModel, Prediction

__all__ = ["IntentModel", "Prediction", "load_csv"]
