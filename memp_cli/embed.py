"""The embedding seam: memp's embedded default model, and any `llm` embedding model by name."""

from __future__ import annotations

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


class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors."""

    model_id: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector per text."""
        ...


class OnnxEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, run with onnxruntime and tokenized with `tokenizers`: no torch, no download."""

    model_id = DEFAULT_EMBED_MODEL

    def __init__(self, folder: Path = MODEL_DIR) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import onnxruntime

        model_file = _model_file(folder)
        # The session is made on a thread of its own: onnxruntime releases the GIL while it builds one (~60-90 ms of
        # a fresh recall), so the tokenizer loads, and the caller reads its store, meanwhile. Its first use waits.
        # A pool's worker, not a daemon: a process that ends before using the session waits for it, rather than
        # exiting while onnxruntime's native code still runs; shutdown(wait=False) lets the worker end once it is made.
        loader = ThreadPoolExecutor(1, thread_name_prefix="memp-model-load")
        self._loading = loader.submit(_load_session, onnxruntime, model_file)
        loader.shutdown(wait=False)
        self._tokenizer = _tokenizer(folder)

    @property
    def _session(self) -> Any:
        return self._loading.result()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return L2-normalised mean-pooled vectors, as sentence-transformers computes them."""
        # One text per run: the int8 graph quantises activations with one scale per input tensor, so in a padded
        # batch a text's vector depended on its batchmates (cosine 0.98-0.99 to itself embedded alone). One at a
        # time every text gets the same vector wherever it is embedded. Many texts run on several threads at once
        # (onnxruntime releases the GIL and its sessions take concurrent runs): one core each.
        workers = min(len(texts), threads())
        if workers <= 1:
            return [self._one(text) for text in texts]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self._one, texts))

    def _one(self, text: str) -> list[float]:
        import numpy as np

        ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
        (hidden,) = self._session.run(
            None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )
        pooled = hidden[0].mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).tolist()


def _model_file(folder: Path) -> Path:
    model_file = folder / "model.onnx"
    if not model_file.exists():
        raise ModelError(f"embedded model missing: {model_file} (reinstall memp)")
    return model_file


def _tokenizer(folder: Path) -> Any:
    """Return the model's WordPiece tokenizer: [CLS] text [SEP], at most MAX_TOKENS ids, no padding."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception for a missing or damaged file
        raise ModelError(f"embedded tokenizer unreadable: {path}: {exc} (reinstall memp)") from exc
    # The shipped file truncates and pads to 128 (the HF export's defaults); sentence-transformers runs this model
    # with max_seq_length 256, special tokens included, and one text per run needs no padding.
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def threads() -> int:
    """Return how many texts memp embeds at once: $MEMP_THREADS, else one per core."""
    try:
        return max(1, int(os.environ.get("MEMP_THREADS") or os.cpu_count() or 1))
    except ValueError:
        return 1


def limit_blas_threads() -> None:
    """Keep numpy's BLAS to one thread in memp's own process; call before numpy is imported (the CLI does)."""
    # Agents run many memp processes at once; OpenBLAS starting a thread per core in each of them made a 20 ms
    # product take 100+ ms under contention. Only the `memp` command calls this: a program importing memp_cli
    # keeps its own environment. A value the user set is left alone.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    # One thread inside each run and none across graph branches: agents call memp in parallel, and many texts run
    # side by side instead (threads()).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def cache_dir() -> Path:
    """Return where memp keeps files it derives on this machine: $MEMP_CACHE, else a cache folder in the app dir."""
    if os.environ.get("MEMP_CACHE"):
        return Path(os.environ["MEMP_CACHE"])
    import typer  # its own copy of click's get_app_dir: importing click as well would cost ~13 ms

    return Path(typer.get_app_dir("memp")) / "cache"


def _derived(model_file: Path, kind: str, version: str = "") -> Path | None:
    """Return where this machine keeps a file derived from the model (keyed by the model file and `version`)."""
    try:
        stat = model_file.stat()
        # Named by the model file's size and mtime in plain text: hashing them would load OpenSSL (~5 ms) for nothing.
        key = f"{stat.st_size}-{stat.st_mtime_ns}" + (f"-{version}" if version else "")
        return cache_dir() / f"memp-minilm-{key}.{kind}"
    except OSError:
        return None


def _load_session(onnxruntime: Any, model_file: Path) -> Any:
    """Return an inference session, from this machine's optimised ORT-format copy of the model when there is one.

    Parsing and optimising the ONNX file takes ~0.16 s of every fresh `memp recall`; the ORT-format copy, written
    on first use (derived locally, nothing downloaded), loads in ~0.05 s. It is keyed by onnxruntime version and
    model file, since optimised graphs are specific to both and to the CPU.
    """
    cached = _derived(model_file, "ort", onnxruntime.__version__)
    providers = ["CPUExecutionProvider"]
    if cached is None:
        return onnxruntime.InferenceSession(str(model_file), _options(onnxruntime), providers=providers)
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

        from .models import with_backoff

        # Raises ModelError naming the model once the retries are spent.
        batch = with_backoff(lambda: list(self._model.embed_multi(list(texts))), f"embedding model {self.model_id}")
        vectors = np.asarray(batch, dtype=np.float32)
        if vectors.size == 0:
            return []
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.clip(norms, 1e-12, None)).tolist()


def is_default(name: str | None) -> bool:
    """Return True when `name` means memp's embedded model."""
    return name is None or name == DEFAULT_EMBED_MODEL or name in DEFAULT_EMBED_ALIASES


def get_embedder(name: str | None = None) -> Embedder:
    """Return a cached embedder: the embedded model loads directly, skipping llm's plugin loading."""
    # One embedder for every name of the embedded model (`get_embedder()` and `get_embedder(None)` were two cache
    # entries: ingest loaded the model, its tokenizer and its session twice, ~0.15 s).
    return _embedder(None if is_default(name) else name)


@lru_cache(maxsize=4)
def _embedder(name: str | None) -> Embedder:
    if name is None:
        return OnnxEmbedder()
    return LlmEmbedder(name)


def resolve_embed_model(store: Store, requested: str | None) -> str:
    """Return the embedding model for this store: the one asked for, else the one that built it, else the default."""
    name = requested or os.environ.get("MEMP_EMBED_MODEL")
    recorded = store.settings.embed_model()
    if name is None:
        return recorded[0] if recorded else DEFAULT_EMBED_MODEL
    embedder_id = DEFAULT_EMBED_MODEL if is_default(name) else get_embedder(name).model_id
    store.settings.check_embed_model(embedder_id)
    return embedder_id
