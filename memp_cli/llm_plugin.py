"""Registers memp's embedded model with `llm`, so `llm embed -m memp-minilm` works too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import llm

from .embed import DEFAULT_EMBED_ALIASES, DEFAULT_EMBED_MODEL, get_embedder


class MempMiniLM(llm.EmbeddingModel):
    """all-MiniLM-L6-v2 as int8 ONNX, shipped inside memp_cli."""

    model_id = DEFAULT_EMBED_MODEL
    batch_size = 32

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        """Return a vector per item, loading the model once per process."""
        texts = [i.decode("utf-8") if isinstance(i, bytes) else i for i in items]
        yield from get_embedder(DEFAULT_EMBED_MODEL).embed(texts)


@llm.hookimpl
def register_embedding_models(register: Any) -> None:
    """Register memp-minilm and its alias with llm."""
    register(MempMiniLM(), aliases=DEFAULT_EMBED_ALIASES)
