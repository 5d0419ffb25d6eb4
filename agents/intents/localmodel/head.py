"""The second tier as a worker serves it: a linear head on a sentence encoder's vector, ensembled in
logit space with the cheap tier where the cheap tier is unsure (the cascade). Fitted by
`agents/intents/training/ensemble.py`; how it was chosen and what it costs: docs/local-model.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores import softmax_rows


@dataclass
class EncoderHead:
    """What the second tier needs besides the encoder itself (which is named, never pickled)."""

    coef: np.ndarray  # n_classes x encoder dim
    intercept: np.ndarray
    temperature: float  # T2, the head's own
    weight: float  # w, the cheap tier's share
    ensemble_temperature: float  # Te
    cascade_threshold: float  # cheap confidence below which the encoder runs

    def __post_init__(self) -> None:
        self.coef = np.ascontiguousarray(self.coef, dtype=np.float32)
        self.intercept = np.asarray(self.intercept, dtype=np.float32).ravel()

    def combine(self, cheap_logits: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Ensemble probabilities from the cheap tier's tempered scores and the texts' embeddings."""
        head = (embeddings @ self.coef.T + self.intercept) / self.temperature
        z = self.weight * cheap_logits + (1.0 - self.weight) * head
        return softmax_rows(np.asarray(z, dtype=np.float64) / self.ensemble_temperature)

    def state(self) -> dict[str, object]:
        return {
            "coef": self.coef,
            "intercept": self.intercept,
            "temperature": float(self.temperature),
            "weight": float(self.weight),
            "ensemble_temperature": float(self.ensemble_temperature),
            "cascade_threshold": float(self.cascade_threshold),
        }
