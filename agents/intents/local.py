"""The local-model tier: the active ModelVersion, loaded once per process, swapped when it changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from agents.intents.blobs import BlobRefused, model_load
from agents.intents.localmodel.model import IntentModel
from agents.models import ModelVersion
from agents.stages.types import IntentPolicy, TierAnswer

log = logging.getLogger(__name__)

# How often a worker asks which version is active; activation reaches every worker within this.
CHECK_EVERY_SECONDS = 5.0


class LocalModelTier:
    """Classify with the active local model; abstain when none is active."""

    name = "local"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: IntentModel | None = None
        self._version: str | None = None
        self._checked = float("-inf")

    def current(self) -> IntentModel | None:
        """The active model, reloaded only when another version has been activated."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_SECONDS:
            return self._model
        with self._lock:
            if now - self._checked < CHECK_EVERY_SECONDS:
                return self._model
            active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
            if active != self._version:
                blob = ModelVersion.objects.filter(version=active).values_list("blob", flat=True).first()
                try:
                    self._model = model_load(blob, version=active or "") if blob is not None else None
                except Exception as exc:
                    # A version this code cannot load, or whose signature does not verify (never
                    # unpickled: agents/intents/blobs.py), must not fail every classify (and dead-letter
                    # every ticket): keep what was loaded and verified before, or abstain so the tiers
                    # below answer, and say so at each check.
                    keeping = self._version or "none"
                    if isinstance(exc, BlobRefused):
                        log.error("%s; keeping %s", exc, keeping)
                    else:
                        log.exception("local model %s cannot be loaded; keeping %s", active, keeping)
                    if self._model is None:
                        self._version = None
                    self._checked = now
                    return self._model
                self._version = active
            self._checked = now
        return self._model

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None:
        model = self.current()
        if model is None:
            return None
        prediction = model.predict(text)
        return TierAnswer(
            intent=prediction.intent,
            confidence=float(prediction.confidence),
            tier=self.name,
            model=f"local:{self._version}",
            # The candidate set (conformal top-k): what Claude chooses among if this answer is not sure enough.
            alternatives=tuple((i, round(float(p), 4)) for i, p in prediction.candidates or prediction.alternatives),
        )
