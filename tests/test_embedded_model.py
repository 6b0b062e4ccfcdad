"""The embedded model (onnxruntime + tokenizers): its reference vectors, one vector per text, its session cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import llm
import numpy as np
import pytest
from conftest import EXAMPLES

from memp_cli.embed import MAX_TOKENS, MODEL_DIR, OnnxEmbedder, _derived, _tokenizer, limit_blas_threads

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
TRICKY = [
    "Café crème brûlée — naïve résumé",
    "日本語のテキスト中文",
    "İstanbul ǅ ﬁ ½ ①",
    "emoji 😀👍🏽 zero\u200bwidth",
    "tab\tnew\nline\r\x00nul\ufffd",
    "a" * 150,
    "\u0085next\u2028sep\u00a0nbsp",
    "",
    "word " * 400,
]


def example_tasks() -> list[str]:
    return [json.loads(line)["task"] for f in sorted(EXAMPLES.glob("*.jsonl")) for line in f.open()]


def thirty() -> list[str]:
    texts = list(dict.fromkeys(example_tasks() + REFERENCE["texts"] + TRICKY))[:30]
    return texts + [f"move box {i} to shelf {i + 1}" for i in range(30 - len(texts))]


def test_vectors_match_sentence_transformers() -> None:
    ours = np.asarray(OnnxEmbedder().embed(REFERENCE["texts"]))
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() < 1e-5
    cos = (ours * np.asarray(REFERENCE["vectors"])).sum(axis=1)
    assert cos.min() > 0.98, cos


def test_tokenizer_adds_cls_and_sep_and_truncates_to_the_model_window() -> None:
    tokenizer = _tokenizer(MODEL_DIR)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    # As sentence-transformers tokenizes: lower-cased word pieces between [CLS] and [SEP], no padding.
    assert tokenizer.encode("Restart nginx").tokens == ["[CLS]", "restart", "ng", "##in", "##x", "[SEP]"]
    assert tokenizer.encode("").ids == [cls, sep]
    long = tokenizer.encode("word " * 400).ids
    # The shipped tokenizer.json says 128; sentence-transformers runs the model on 256, special tokens included.
    assert len(long) == MAX_TOKENS == 256 and long[0] == cls and long[-1] == sep
    assert tokenizer.token_to_id("[PAD]") not in long


def test_a_text_gets_the_identical_vector_alone_in_a_batch_reordered_and_on_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = thirty()
    assert len(set(texts)) == 30
    model = OnnxEmbedder()
    monkeypatch.setenv("MEMP_THREADS", "1")
    alone = [model.embed([t])[0] for t in texts]
    batch = model.embed(texts)
    assert batch == alone  # equality, not closeness: the store must not depend on how texts were grouped
    order = list(reversed(range(30)))[::2] + list(range(30))[::2]
    reordered = model.embed([texts[i] for i in order])
    assert reordered == [alone[i] for i in order]
    monkeypatch.setenv("MEMP_THREADS", "3")
    assert model.embed(texts) == alone
    assert OnnxEmbedder().embed(texts[::-1]) == alone[::-1]  # a second session, as a later process has


def test_session_cache_is_written_once_and_rebuilt_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime  # type: ignore[import-untyped]

    monkeypatch.setenv("MEMP_CACHE", str(tmp_path / "cache"))
    path = _derived(MODEL_DIR / "model.onnx", "ort", onnxruntime.__version__)
    assert path is not None and path.parent == tmp_path / "cache"
    text = "put a mug in the sink"
    built = OnnxEmbedder().embed([text])[0]  # optimised from model.onnx, ORT copy written
    assert path.exists() and path.read_bytes()[4:8] == b"ORTM"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert OnnxEmbedder().embed([text])[0] == built  # loaded from the copy: the same vector
    path.write_bytes(b"\x00" * 16)
    assert OnnxEmbedder().embed([text])[0] == built
    assert path.read_bytes()[4:8] == b"ORTM"


def test_no_writable_cache_still_embeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "restart nginx"
    cached = OnnxEmbedder().embed([text])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEMP_CACHE", str(blocker / "cache"))
    assert OnnxEmbedder().embed([text]) == cached


def test_llm_plugin_embeds_with_the_same_runner(fake_chat) -> None:  # type: ignore[no-untyped-def]
    model = llm.get_embedding_model("memp-minilm")
    texts = ["restart the web server", "bake a chocolate cake"]
    assert list(model.embed_multi(texts)) == OnnxEmbedder().embed(texts)
    assert model.embed("restart the web server") == OnnxEmbedder().embed(["restart the web server"])[0]


def test_blas_threads_are_limited_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    limit_blas_threads()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the user's own setting wins


def test_using_memp_as_a_library_leaves_the_environment_alone() -> None:
    code = (
        "import os\nfrom memp_cli.embed import get_embedder\nget_embedder().embed(['restart nginx', 'a mug'])\n"
        "print([v for v in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS') if v in os.environ])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
