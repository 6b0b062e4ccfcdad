"""The embedding seam: memp's embedded default model, and any `llm` embedding model by name."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ModelError

if TYPE_CHECKING:
    from .store import Store

DEFAULT_EMBED_MODEL = "memp-minilm"
DEFAULT_EMBED_ALIASES = ("all-MiniLM-L6-v2-int8",)
MODEL_DIR = Path(__file__).resolve().parent / "model"
# all-MiniLM-L6-v2 was trained on sequences of up to 256 word pieces; longer input only dilutes the mean.
MAX_TOKENS = 256
BATCH_TOKENS = 2048


class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors."""

    model_id: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector per text."""
        ...


class OnnxEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, run with onnxruntime and tokenizers: no torch, no download."""

    model_id = DEFAULT_EMBED_MODEL

    def __init__(self, folder: Path = MODEL_DIR) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model_file = folder / "model.onnx"
        if not model_file.exists():
            raise ModelError(f"embedded model missing: {model_file} (reinstall memp)")
        self._session = _load_session(onnxruntime, model_file)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()  # the shipped tokenizer.json pads to 128; batches are padded here instead

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return L2-normalised mean-pooled vectors, as sentence-transformers computes them."""
        import numpy as np

        encoded = self._tokenizer.encode_batch(list(texts))
        out: list[list[float]] = [[] for _ in texts]
        # Similar lengths batched together, and batches capped in tokens, not texts: short task texts go through
        # many at a time, and a batch of long ones cannot blow up the attention buffers (memory stays ~300 MB).
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(encoded[order[end]].ids) <= BATCH_TOKENS:
                end += 1
            group = order[start:end]
            width = len(encoded[group[-1]].ids)
            ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                n = len(encoded[i].ids)
                ids[row, :n] = encoded[i].ids
                mask[row, :n] = 1
            (hidden,) = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            for row, i in enumerate(group):
                out[i] = pooled[row].tolist()
            start = end
        return out


def _options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    # Agents call memp in parallel; one intra-op thread each avoids oversubscribing small machines.
    options.intra_op_num_threads = int(os.environ.get("MEMP_THREADS", "1"))
    options.log_severity_level = 3
    return options


def cache_dir() -> Path:
    """Return where memp keeps files it derives on this machine: $MEMP_CACHE, else a cache folder in the app dir."""
    if os.environ.get("MEMP_CACHE"):
        return Path(os.environ["MEMP_CACHE"])
    import click

    return Path(click.get_app_dir("memp")) / "cache"


def _load_session(onnxruntime: Any, model_file: Path) -> Any:
    """Return an inference session, from this machine's optimised ORT-format copy of the model when there is one.

    Parsing and optimising the ONNX file takes ~0.16 s of every fresh `memp recall`; the ORT-format copy, written
    on first use (derived locally, nothing downloaded), loads in ~0.05 s. It is keyed by onnxruntime version and
    model file, since optimised graphs are specific to both and to the CPU.
    """
    stat = model_file.stat()
    key = f"{onnxruntime.__version__}-{stat.st_size}-{stat.st_mtime_ns}"
    cached = cache_dir() / f"memp-minilm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.ort"
    providers = ["CPUExecutionProvider"]
    if cached.exists():
        options = _options(onnxruntime)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.load_model_format", "ORT")
        try:
            return onnxruntime.InferenceSession(str(cached), options, providers=providers)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            cached.unlink(missing_ok=True)
    options = _options(onnxruntime)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        options.optimized_model_filepath = str(tmp)
        options.add_session_config_entry("session.save_model_format", "ORT")
    except OSError:
        options = _options(onnxruntime)  # no writable cache: load from ONNX every time
    session = onnxruntime.InferenceSession(str(model_file), options, providers=providers)
    if tmp.exists():
        os.replace(tmp, cached)  # atomic: concurrent first runs each write their own, the last rename wins
    return session


class LlmEmbedder:
    """Any embedding model `llm` knows, by id or alias, with llm's keys honoured."""

    def __init__(self, name: str) -> None:
        import llm

        try:
            self._model = llm.get_embedding_model(name)
        except llm.UnknownModelError as exc:
            raise ModelError(f"unknown embedding model: {name} (see `llm embed-models`)") from exc
        self.model_id = self._model.model_id

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return llm's vectors, normalised so cosine search treats every model alike."""
        import numpy as np

        from .distill import with_retries

        try:
            vectors = np.asarray(with_retries(lambda: list(self._model.embed_multi(list(texts)))), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - plugins raise anything; say which model failed
            raise ModelError(f"embedding model {self.model_id} failed: {exc}") from exc
        if vectors.size == 0:
            return []
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.clip(norms, 1e-12, None)).tolist()


def is_default(name: str | None) -> bool:
    """Return True when `name` means memp's embedded model."""
    return name is None or name == DEFAULT_EMBED_MODEL or name in DEFAULT_EMBED_ALIASES


@lru_cache(maxsize=4)
def get_embedder(name: str | None = None) -> Embedder:
    """Return a cached embedder: the embedded model loads directly, skipping llm's plugin loading."""
    if is_default(name):
        return OnnxEmbedder()
    assert name is not None
    return LlmEmbedder(name)


def resolve_embed_model(store: Store, requested: str | None) -> str:
    """Return the embedding model for this store: the one asked for, else the one that built it, else the default."""
    name = requested or os.environ.get("MEMP_EMBED_MODEL")
    recorded = store.embed_model()
    if name is None:
        return recorded[0] if recorded else DEFAULT_EMBED_MODEL
    embedder_id = DEFAULT_EMBED_MODEL if is_default(name) else get_embedder(name).model_id
    store.check_embed_model(embedder_id)
    return embedder_id
