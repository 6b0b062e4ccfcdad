"""memp's embedded model run in numpy: the same int8 graph as the ONNX file, for a few texts in a fresh process.

onnxruntime costs ~0.14 s before its first vector in a new process (import ~45 ms, session ~90 ms even from the
optimised ORT copy); this path costs ~25 ms. It reads the weights out of the shipped model.onnx (a minimal protobuf
walk, no onnx package) once per machine into a flat cache file that later processes map into memory. It computes what
onnxruntime computes for one text: int8 weights per output channel, activations quantised to uint8 per text before
each weight matrix (DynamicQuantizeLinear), exact-erf GELU, mean pooling. Tests hold the two to the same vectors.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelError

LAYERS = 6
HEADS = 12
HIDDEN = 384
# MatMulInteger node names in the exported graph -> the role of its weight matrix.
ROLES = {
    "attention/self/query": "q",
    "attention/self/key": "k",
    "attention/self/value": "v",
    "attention/output/dense": "o",
    "intermediate/dense": "i",
    "output/dense": "f",
}
PARAMS = {
    "attention.self.query.bias": "q.b",
    "attention.self.key.bias": "k.b",
    "attention.self.value.bias": "v.b",
    "attention.output.dense.bias": "o.b",
    "attention.output.LayerNorm.weight": "ln1.g",
    "attention.output.LayerNorm.bias": "ln1.b",
    "intermediate.dense.bias": "i.b",
    "output.dense.bias": "f.b",
    "output.LayerNorm.weight": "ln2.g",
    "output.LayerNorm.bias": "ln2.b",
}
# ONNX TensorProto data types memp's model uses -> numpy dtypes.
DTYPES = {1: "<f4", 2: "u1", 3: "i1", 6: "<i4", 7: "<i8"}
ALIGN = 64
# Rows of a weight matrix whose integer products float32 still sums exactly: 384 * 255 * 127 < 2**24.
EXACT_ROWS = 384
# The layout of the weight file this module writes; part of its cache file's name.
FORMAT = "2"


# -- reading the ONNX file ---------------------------------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, Any]]:
    """Yield (field number, value) of one protobuf message: ints for varints, memoryviews for the rest."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ModelError(f"model.onnx: unsupported protobuf wire type {wire}")
        yield key >> 3, value


def _packed_varints(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, j = [], 0
    while j < len(value):
        v, j = _varint(value, j)
        out.append(v)
    return out


def _tensor(buf: memoryview) -> tuple[str, Any]:
    """Return (name, array) of a TensorProto: raw data, or the typed float_data / int32_data fields."""
    import numpy as np

    name, dims, dtype = "", [], 0
    raw: Any = None
    floats: list[bytes] = []
    ints: list[int] = []
    for field, value in _fields(buf):
        if field == 1:
            dims.extend(_packed_varints(value))
        elif field == 2:
            dtype = value
        elif field == 4:
            floats.append(bytes(value))
        elif field in (5, 7):
            ints.extend(_packed_varints(value))
        elif field == 8:
            name = bytes(value).decode()
        elif field == 9:
            raw = value
    if dtype not in DTYPES:
        return name, None
    if raw is not None:
        array = np.frombuffer(raw, dtype=DTYPES[dtype])
    elif floats:
        array = np.frombuffer(b"".join(floats), dtype="<f4")
    else:
        # int32_data holds small ints as varints, negatives as their 64-bit two's complement.
        array = np.asarray([v - (1 << 64) if v >= 1 << 63 else v for v in ints], dtype=np.int64).astype(DTYPES[dtype])
    return name, array.reshape(dims)


def read_onnx(model_file: Path) -> dict[str, Any]:
    """Return the weights of memp's exported model by role (l0.q.w, l0.q.s, emb.word.q, ...)."""
    import numpy as np

    data = memoryview(model_file.read_bytes())
    graph = next((v for f, v in _fields(data) if f == 7), None)
    if graph is None:
        raise ModelError(f"{model_file}: no graph")
    tensors: dict[str, Any] = {}
    matmuls: list[tuple[str, str]] = []
    for field, value in _fields(graph):
        if field == 5:
            name, array = _tensor(value)
            tensors[name] = array
        elif field == 1:
            inputs, name, op = [], "", ""
            for f, v in _fields(value):
                if f == 1:
                    inputs.append(bytes(v).decode())
                elif f == 3:
                    name = bytes(v).decode()
                elif f == 4:
                    op = bytes(v).decode()
            if op == "MatMulInteger":
                matmuls.append((name, inputs[1]))
    out: dict[str, Any] = {}
    for name, weight in matmuls:
        parts = name.split("/")  # /model/encoder/layer.N/<role path>/MatMul_quant
        layer, role = parts[3].split(".")[1], ROLES["/".join(parts[4:-1])]
        base = weight[: -len("_quantized")]
        if np.any(tensors[base + "_zero_point"]):
            raise ModelError(f"{model_file}: expected symmetric int8 weights")
        # Stored transposed (outputs x inputs), for the product W @ x.T (see _qmatmul).
        out[f"l{layer}.{role}.w"] = np.ascontiguousarray(tensors[weight].astype(np.float32).T)
        out[f"l{layer}.{role}.s"] = tensors[base + "_scale"].astype(np.float32)
    for name, array in tensors.items():
        if name.startswith("model.encoder.layer."):
            layer, rest = name[len("model.encoder.layer.") :].split(".", 1)
            out[f"l{layer}.{PARAMS[rest]}"] = array
    for part in ("word", "position", "token_type"):
        prefix = f"model.embeddings.{part}_embeddings.weight"
        out[f"emb.{part}.q"] = tensors[prefix + "_quantized"]
        out[f"emb.{part}.s"] = tensors[prefix + "_scale"]
        out[f"emb.{part}.z"] = tensors[prefix + "_zero_point"]
    out["emb.ln.g"] = tensors["model.embeddings.LayerNorm.weight"]
    out["emb.ln.b"] = tensors["model.embeddings.LayerNorm.bias"]
    if len([k for k in out if k.endswith(".w")]) != 6 * LAYERS:
        raise ModelError(f"{model_file}: not the expected MiniLM-L6 graph")
    for layer in range(LAYERS):
        # Query, key and value read the same input, quantised the same way: one matrix product serves all three.
        p = f"l{layer}."
        for part in ("w", "s", "b"):
            out[f"{p}qkv.{part}"] = np.concatenate([out.pop(f"{p}{r}.{part}") for r in "qkv"], axis=0)
    return out


# -- the flat weight file ----------------------------------------------------------------------------------------


def write_weights(weights: dict[str, Any], path: Path) -> None:
    """Write the weights as one file: an 8-byte header length, a JSON index, then each array 64-byte aligned."""
    index, offset = {}, 0
    for name, array in weights.items():
        index[name] = [array.dtype.str, list(array.shape), offset]
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header = json.dumps(index).encode()
    start = -(-(8 + len(header)) // ALIGN) * ALIGN
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        for name, array in weights.items():
            out.seek(start + index[name][2])
            out.write(array.tobytes())
        out.truncate(start + offset)
    os.replace(tmp, path)  # atomic: a concurrent first run sees the whole file or none


def map_weights(path: Path) -> dict[str, Any]:
    """Return the arrays of a weight file, mapped read-only (pages load as the model touches them)."""
    import numpy as np

    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        index = json.loads(f.read(size))
    start = -(-(8 + size) // ALIGN) * ALIGN
    with path.open("rb") as f:
        # Plain arrays over an mmap: np.memmap views would run Python hooks on every operation of the forward pass.
        raw = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
    out = {}
    for name, (dtype, shape, offset) in index.items():
        count = math.prod(shape) * np.dtype(dtype).itemsize
        out[name] = raw[start + offset : start + offset + count].view(dtype).reshape(shape)
    return out


# -- the forward pass --------------------------------------------------------------------------------------------


def _erf(x: Any) -> Any:
    """Return erf(x) elementwise (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: below float32 noise here)."""
    import numpy as np

    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(
        -a * a
    )
    return np.sign(x) * y


def _layer_norm(x: Any, gain: Any, bias: Any) -> Any:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / (var + 1e-12) ** 0.5 * gain + bias


def _qmatmul(x: Any, weight: Any, scale: Any) -> Any:
    """Return x @ W.T as onnxruntime computes x @ W: x quantised to uint8 over the whole text, int8 W, rescaled.

    `weight` is W transposed (outputs x inputs), as the weight file holds it.
    """
    import numpy as np

    lo = min(x.min(), np.float32(0))
    hi = max(x.max(), np.float32(0))
    step = (hi - lo) / np.float32(255) or np.float32(1)
    zero = np.clip(np.rint(-lo / step), 0, 255)
    q = np.clip(np.rint(x / step) + zero, 0, 255) - zero
    # W @ q.T rather than q @ W.T: for a text's few rows OpenBLAS is ~20% faster this way round.
    if weight.shape[1] <= EXACT_ROWS:
        acc = (weight @ q.T).T
    else:
        # onnxruntime sums the integer products exactly (int32); float32 holds integers exactly only up to 2**24, and
        # 1,536 products of up to 255 * 127 can pass that. Split q = 16 * high + low: each half's sums stay below
        # 2**24, both go through one matrix product, and they are recombined in float64.
        high = np.floor(q / 16)
        both = (weight @ np.concatenate([high, q - 16 * high]).T).T
        acc = 16 * both[: len(q)].astype(np.float64) + both[len(q) :]
    return acc.astype(np.float32) * (step * scale)


class NumpyMiniLM:
    """The embedded model's forward pass over mapped weights: one text at a time, like onnxruntime is run.

    Batching texts here would not pay: the float32 products cost more than onnxruntime's int8 kernels do per text.
    """

    def __init__(self, weights: dict[str, Any]) -> None:
        self.w = weights

    def _embeddings(self, ids: Any) -> Any:
        import numpy as np

        w = self.w

        def table(part: str, rows: Any) -> Any:
            q = w[f"emb.{part}.q"][rows].astype(np.float32)
            return (q - np.float32(w[f"emb.{part}.z"])) * w[f"emb.{part}.s"]

        n = len(ids)
        x = table("word", ids) + table("token_type", np.zeros(n, dtype=np.int64)) + table("position", np.arange(n))
        return _layer_norm(x, w["emb.ln.g"], w["emb.ln.b"])

    def vector(self, ids: list[int]) -> Any:
        """Return the mean-pooled, L2-normalised vector of one tokenised text."""
        import numpy as np

        w = self.w
        h = self._embeddings(np.asarray(ids, dtype=np.int64))
        n, size = len(ids), HIDDEN // HEADS
        for layer in range(LAYERS):
            p = f"l{layer}."

            def dense(x: Any, role: str, p: str = p) -> Any:
                return _qmatmul(x, w[p + role + ".w"], w[p + role + ".s"]) + w[p + role + ".b"]

            heads = dense(h, "qkv").reshape(n, 3, HEADS, size).transpose(1, 2, 0, 3)
            scores = heads[0] @ heads[1].transpose(0, 2, 1) / np.float32(math.sqrt(size))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ heads[2]).transpose(1, 0, 2).reshape(n, HIDDEN)
            h = _layer_norm(dense(context, "o") + h, w[p + "ln1.g"], w[p + "ln1.b"])
            inner = dense(h, "i")
            inner = 0.5 * inner * (1.0 + _erf(inner / np.float32(math.sqrt(2.0))))
            h = _layer_norm(dense(inner, "f") + h, w[p + "ln2.g"], w[p + "ln2.b"])
        pooled = h.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)


def load(model_file: Path, cache: Path | None) -> NumpyMiniLM:
    """Return the numpy model, from this machine's weight file when there is one (written on first use)."""
    if cache is not None and cache.exists():
        try:
            return NumpyMiniLM(map_weights(cache))
        except (OSError, ValueError, KeyError):
            cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, never fatal
    weights = read_onnx(model_file)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_weights(weights, cache)
            return NumpyMiniLM(map_weights(cache))
        except OSError:
            pass  # no writable cache: use the weights just read
    return NumpyMiniLM(weights)
