"""The trained intent classifier: features, linear scores, calibrated confidence, thresholds."""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .scores import softmax_rows

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: the vectorizer pickled apart, beside plain-data blocks for one text
if TYPE_CHECKING:
    from .head import EncoderHead


@dataclass(frozen=True)
class Prediction:
    """One classified request: best intent, its calibrated probability and the top-3 alternatives."""

    intent: str
    confidence: float
    alternatives: list[tuple[str, float]]
    # The intents Claude is asked to choose among when the local tiers are unsure (conformal top-k).
    candidates: tuple[tuple[str, float], ...] = ()
    encoded: bool = False  # whether the sentence encoder ran (the cheap tier was unsure)


_WHITE_SPACES = re.compile(r"\s\s+")


def _lean_blocks(vectorizer: Any) -> list[dict[str, Any]] | None:
    """What the single-text path needs of each tf-idf block — analyzer settings, vocabulary, idf,
    column offset — as plain data, or None when the features are not plain tf-idf. Stored in the
    model's bytes, so a worker classifies without importing scikit-learn (or SciPy: ~100 MB)."""
    if isinstance(vectorizer, _LazyVectorizer):
        return None
    parts = getattr(vectorizer, "transformer_list", None)
    if parts is not None:
        if getattr(vectorizer, "transformer_weights", None):
            return None
        parts = [t for _, t in parts]
    else:
        parts = [vectorizer]
    blocks, offset = [], 0
    for part in parts:
        if not (
            type(part).__name__ == "TfidfVectorizer"
            and part.use_idf
            and part.sublinear_tf
            and part.norm == "l2"
            and not part.binary
            and part.lowercase
            and part.analyzer in ("word", "char_wb")
            and part.preprocessor is None
            and part.tokenizer is None
            and part.strip_accents is None
            and part.stop_words is None
            and hasattr(part, "idf_")
        ):
            return None
        idf = np.asarray(part.idf_, dtype=np.float64)
        blocks.append(
            {
                "analyzer": part.analyzer,
                "ngram_range": tuple(part.ngram_range),
                "token_pattern": part.token_pattern,
                "vocabulary": dict(part.vocabulary_),
                "idf": idf,
                "offset": offset,
            }
        )
        offset += len(idf)
    return blocks


def _analyzer(block: dict[str, Any]) -> Any:
    """scikit-learn's analyzer for the block, written out (lowercase, then word or char_wb n-grams);
    tests/agents/intents/localmodel check it against scikit-learn's on the whole training split."""
    low, high = block["ngram_range"]
    if block["analyzer"] == "word":
        pattern = re.compile(block["token_pattern"])

        def words(doc: str) -> list[str]:
            tokens = pattern.findall(doc.lower())
            grams = list(tokens) if low == 1 else []
            for n in range(max(low, 2), min(high, len(tokens)) + 1):
                grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
            return grams

        return words

    def chars(doc: str) -> list[str]:
        grams: list[str] = []
        for word in _WHITE_SPACES.sub(" ", doc.lower()).split():
            word = f" {word} "
            for n in range(low, high + 1):
                offset = 0
                grams.append(word[offset : offset + n])
                while offset + n < len(word):
                    offset += 1
                    grams.append(word[offset : offset + n])
                if offset == 0:  # a word shorter than n counts once
                    break
        return grams

    return chars


class _LazyVectorizer:
    """The scikit-learn vectorizer of a loaded model, unpickled on first use (batch scoring,
    evaluation), so a worker that only classifies one request at a time never imports it."""

    def __init__(self, data: bytes):
        self.data = data
        self._loaded: Any = None

    def get(self) -> Any:
        if self._loaded is None:
            self._loaded = pickle.loads(self.data)
        return self._loaded

    def transform(self, texts: list[str]) -> Any:
        return self.get().transform(texts)

    def __reduce__(self) -> Any:  # pickles as the vectorizer itself
        return (pickle.loads, (self.data,))


@dataclass
class IntentModel:
    """A trained intent classifier with calibrated confidence and per-intent thresholds."""

    vectorizer: Any
    coef: np.ndarray
    intercept: np.ndarray
    intents: list[str]
    temperature: float
    global_threshold: float
    thresholds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    version: str = ""
    # Optional dense block after the tf-idf columns: `embedding_weight` x a static sentence embedding
    # (agents/intents/localmodel/embed.py), named here, loaded once per process, never pickled with the model.
    embedding: str | None = None
    embedding_weight: float = 1.0
    lean: list[dict[str, Any]] | None = None  # _lean_blocks(vectorizer); derived when not given
    # Optional second tier (agents/intents/localmodel/head.py): a sentence encoder's head, run only where the
    # cheap confidence is below its cascade threshold; and the size of the candidate set for Claude.
    head: EncoderHead | None = None
    candidates_k: int = 3

    def __post_init__(self) -> None:
        """Normalise array types and derive the version tag when none was given."""
        self.coef = np.ascontiguousarray(self.coef, dtype=np.float32)
        self.intercept = np.asarray(self.intercept, dtype=np.float32).ravel()
        self._coef_t = np.ascontiguousarray(self.coef.T)
        if self.lean is None:
            self.lean = _lean_blocks(self.vectorizer)
        self._blocks = (
            None if self.lean is None else [(_analyzer(b), b["vocabulary"], b["idf"], b["offset"]) for b in self.lean]
        )
        self._embedder = None
        self._n_sparse = self.coef.shape[1]
        if self.embedding:
            from .embed import get_embedder

            self._embedder = get_embedder(self.embedding)
            self._n_sparse -= self._embedder.dim
        if not self.version:
            self.version = hashlib.sha256(self._payload()).hexdigest()[:12]

    def scores(self, texts: list[str]) -> np.ndarray:
        """Raw (uncalibrated) linear scores, one row per text, one column per intent."""
        features = self.vectorizer.transform(texts)
        scores = np.asarray(features @ self._coef_t[: self._n_sparse], dtype=np.float64) + self.intercept
        if self._embedder is not None:
            dense = self._embedder.embed(list(texts)) * np.float32(self.embedding_weight)
            scores += dense @ self._coef_t[self._n_sparse :]
        return scores

    def score_one(self, text: str) -> np.ndarray:
        """Raw linear scores of one text, bypassing sklearn's per-call overhead when the features allow it."""
        if self._blocks is None:
            return self.scores([text])[0]
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for analyzer, vocabulary, idf, offset in self._blocks:
            ids = [j for j in map(vocabulary.get, analyzer(text)) if j is not None]
            if not ids:
                continue
            idx, counts = np.unique(np.array(ids, dtype=np.intp), return_counts=True)
            val = (np.log(counts) + 1.0) * idf[idx]
            val /= np.sqrt(val @ val)
            indices.append(idx + offset)
            values.append(val.astype(np.float32))
        scores = self.intercept.astype(np.float64)
        if indices:
            idx = np.concatenate(indices)
            scores += np.concatenate(values) @ self._coef_t[idx]
        if self._embedder is not None:
            dense = self._embedder.embed_one(text) * np.float32(self.embedding_weight)
            scores += dense @ self._coef_t[self._n_sparse :]
        return scores

    def cheap_probabilities(self, texts: list[str]) -> np.ndarray:
        """The cheap tier's calibrated probabilities (temperature-scaled softmax), one row per text."""
        return softmax_rows(self.scores(texts) / self.temperature)

    def probabilities(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities of the cascade, one row per text, and which rows were encoded."""
        z = self.scores(texts) / self.temperature
        probs = softmax_rows(z.copy())
        band = np.zeros(len(texts), dtype=bool)
        encoder = _encoder() if self.head is not None else None
        if self.head is not None and encoder is not None:
            band = probs.max(axis=1) < self.head.cascade_threshold
            if band.any():
                embedded = encoder.embed([t for t, b in zip(texts, band, strict=True) if b])
                probs[band] = self.head.combine(z[band], embedded)
        return probs, band

    def _prediction(self, row: np.ndarray, encoded: bool = False) -> Prediction:
        """Turn one probability row into a Prediction: top-3 alternatives and the candidate set."""
        k = min(max(3, self.candidates_k), row.shape[0])
        top = np.argpartition(-row, k - 1)[:k]
        top = top[np.argsort(-row[top], kind="stable")]
        alternatives = [(self.intents[i], float(row[i])) for i in top]
        return Prediction(
            intent=alternatives[0][0],
            confidence=alternatives[0][1],
            alternatives=alternatives[:3],
            candidates=tuple(alternatives[: self.candidates_k]),
            encoded=encoded,
        )

    def predict(self, text: str) -> Prediction:
        """Classify one request: the cheap tier, then the encoder's ensemble where the cheap tier is unsure."""
        z = self.score_one(text) / self.temperature
        p = z - z.max()
        np.exp(p, out=p)
        p /= p.sum()
        if self.head is not None and p.max() < self.head.cascade_threshold and (encoder := _encoder()) is not None:
            return self._prediction(self.head.combine(z[None, :], encoder.embed_one(text)[None, :])[0], True)
        return self._prediction(p)

    def predict_many(self, texts: list[str]) -> list[Prediction]:
        """Classify many requests in one vectorised pass (the encoder batched over the unsure ones)."""
        if not texts:
            return []
        probs, band = self.probabilities(list(texts))
        return [self._prediction(row, bool(b)) for row, b in zip(probs, band, strict=True)]

    def threshold_for(self, intent: str) -> float:
        """Confidence needed to automate a prediction of this intent (per-intent, else global)."""
        return float(self.thresholds.get(intent, self.global_threshold))

    def is_automated(self, prediction: Prediction) -> bool:
        """Whether a prediction is confident enough to be handled without a human or an LLM."""
        return prediction.confidence >= self.threshold_for(prediction.intent)

    def _state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model, except the version tag."""
        state = {
            "format": FORMAT_VERSION,
            "vectorizer": self.vectorizer.data
            if isinstance(self.vectorizer, _LazyVectorizer)
            else pickle.dumps(self.vectorizer, protocol=pickle.HIGHEST_PROTOCOL),
            "lean": self.lean,
            "coef": self.coef,
            "intercept": self.intercept,
            "intents": list(self.intents),
            "temperature": float(self.temperature),
            "global_threshold": float(self.global_threshold),
            "thresholds": {k: float(v) for k, v in self.thresholds.items()},
            "metrics": self.metrics,
        }
        if self.embedding:  # only then, so models without one keep their version tags
            state.update(embedding=self.embedding, embedding_weight=float(self.embedding_weight))
        if self.head is not None:
            state["head"] = self.head.state()
        if self.candidates_k != 3:
            state["candidates_k"] = int(self.candidates_k)
        return state

    def _payload(self) -> bytes:
        """Deterministic pickle of the state (the version tag is its hash)."""
        return pickle.dumps(self._state(), protocol=pickle.HIGHEST_PROTOCOL)

    def to_bytes(self) -> bytes:
        """Serialise to compressed bytes (zlib over pickle); only load bytes you produced yourself."""
        state = self._state()
        state["version"] = self.version
        return zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> IntentModel:
        """Rebuild a model from to_bytes() output (trusted input only: it unpickles)."""
        try:
            state = pickle.loads(zlib.decompress(data))
        except (zlib.error, pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"not a serialized IntentModel: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") not in (1, FORMAT_VERSION):
            raise ValueError("not a serialized IntentModel (unknown format)")
        legacy = state["format"] == 1  # the vectorizer inline (imports scikit-learn); lean blocks derived
        return cls(
            vectorizer=state["vectorizer"] if legacy else _LazyVectorizer(state["vectorizer"]),
            lean=None if legacy else state["lean"],
            coef=state["coef"],
            intercept=state["intercept"],
            intents=list(state["intents"]),
            temperature=state["temperature"],
            global_threshold=state["global_threshold"],
            thresholds=dict(state["thresholds"]),
            metrics=dict(state["metrics"]),
            version=state.get("version", ""),
            embedding=state.get("embedding"),
            embedding_weight=state.get("embedding_weight", 1.0),
            head=_head_from(state.get("head")),
            candidates_k=int(state.get("candidates_k", 3)),
        )


def _encoder() -> Any:
    """The process's sentence encoder, or None where its package is not installed (the cheap answer stands)."""
    from .encoder import available, get_encoder

    if not available():
        _warn_once()
        return None
    return get_encoder()


@functools.cache
def _warn_once() -> None:
    log.warning("the sentence encoder is not installed (requirements-encoder.txt): cheap tier only")


def _head_from(state: dict[str, Any] | None) -> EncoderHead | None:
    """The second tier from its stored state (None for models without one)."""
    if state is None:
        return None
    from .head import EncoderHead

    return EncoderHead(**state)
