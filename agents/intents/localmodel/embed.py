"""Static word embeddings shipped inside a PyPI wheel: mean-pooled, L2-normalised sentence vectors.

The weights and the tokenizer come from the `wordllama` package's own files (`weights/` and
`tokenizers/` in the installed wheel), read with `tokenizers` and `safetensors`; nothing is ever
downloaded. wordllama's own loader is not used: 0.4.0.post1 looks for its tokenizer under
`tokenizer/` while the wheel ships it under `tokenizers/`, and then falls back to a download.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

DEFAULT_EMBEDDING = "wordllama:l2_supercat_256"


class StaticEmbedder:
    """Token embedding matrix + tokenizer; a text's vector is the mean of its tokens' rows, L2-normalised.

    A name ending in ":meanmax" appends the (L2-normalised) element-wise max over the tokens: twice the width.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDING) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        source, config, *options = name.split(":")
        if options not in ([], ["meanmax"]):
            raise ValueError(f"unknown embedding options {options!r}")
        self.with_max = options == ["meanmax"]
        if source != "wordllama":
            raise ValueError(f"unknown embedding source {source!r}")
        spec = importlib.util.find_spec("wordllama")  # its files only: importing it costs ~12 MB for nothing
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("the wordllama package (which ships the embedding files) is not installed")
        root = Path(next(iter(spec.submodule_search_locations)))
        stem = config.rsplit("_", 1)[0]  # l2_supercat_256 -> l2_supercat
        weights = root / "weights" / f"{config}.safetensors"
        tokenizer = root / "tokenizers" / f"{stem}_tokenizer_config.json"
        if not weights.exists() or not tokenizer.exists():
            raise FileNotFoundError(f"{name}: {weights} or {tokenizer} is missing from the installed wheel")
        self.name = name
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        with safe_open(str(weights), framework="np") as fh:
            self.matrix = np.ascontiguousarray(fh.get_tensor("embedding.weight"))  # float16: half the memory
        self.dim = int(self.matrix.shape[1]) * (2 if self.with_max else 1)

    def _pool(self, ids: list[int]) -> np.ndarray:
        """The pooled, normalised vector of some token ids."""
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        rows = self.matrix[np.asarray(ids, dtype=np.intp)].astype(np.float32)
        parts = [rows.mean(axis=0), rows.max(axis=0)] if self.with_max else [rows.mean(axis=0)]
        for part in parts:
            norm = float(np.sqrt(part @ part))
            if norm > 0:
                part /= norm
        return np.concatenate(parts) if self.with_max else parts[0]

    def embed_one(self, text: str) -> np.ndarray:
        """One text's vector (float32, unit-length parts; zeros when it has no tokens)."""
        return self._pool(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of many texts, one row each."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            out[i] = self._pool(encoding.ids)
        return out


_LOCK = threading.Lock()
_LOADED: dict[str, StaticEmbedder] = {}


def get_embedder(name: str = DEFAULT_EMBEDDING) -> StaticEmbedder:
    """One embedder per name per process (the matrix is shared by every model that uses it)."""
    with _LOCK:
        if name not in _LOADED:
            _LOADED[name] = StaticEmbedder(name)
        return _LOADED[name]
