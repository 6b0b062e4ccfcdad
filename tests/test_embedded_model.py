"""The embedded model's two runners (onnxruntime, numpy) and its plain-Python tokenizer, against their references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, SHARED

from memp_cli.embed import MAX_TOKENS, MODEL_DIR, MiniLM, OnnxEmbedder
from memp_cli.wordpiece import Vocabulary, WordPiece

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


def real_texts() -> list[str]:
    """Return slices of real agent logs: issue texts, code, shell output, web pages."""
    texts = []
    for f in sorted((SHARED / "mini-swe-agent").rglob("*.traj.json"))[:20]:
        for message in json.loads(f.read_text())["messages"]:
            content = message["content"] if isinstance(message["content"], str) else json.dumps(message["content"])
            texts += [content[i : i + 400] for i in range(0, min(len(content), 2000), 400)]
    log = (SHARED / "react-webshop" / "WebShop_ipynb_cell7_output.txt").read_text()
    texts += [log[i : i + 300] for i in range(0, 150_000, 300)]
    for f in sorted((SHARED / "swe-agent").rglob("*.traj")):
        content = f.read_text()
        texts += [content[i : i + 400] for i in range(0, min(len(content), 8000), 400)]
    return texts


@pytest.mark.parametrize("lookup", ["search", "dict"])
def test_tokenizer_gives_the_ids_of_the_tokenizers_library_on_tricky_text(
    lookup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    reference.enable_truncation(max_length=MAX_TOKENS)
    reference.no_padding()
    if lookup == "dict":
        monkeypatch.setattr(Vocabulary, "SEARCH_BUDGET", 0)
    for text in TRICKY + example_tasks():
        # A new tokenizer per text: each starts by searching the file (a fresh `memp recall`) unless told not to.
        ours = WordPiece(MODEL_DIR / "vocab.txt", MAX_TOKENS)
        assert ours.encode(text) == reference.encode(text).ids, text
        assert (ours.vocab._ids is not None) == (lookup == "dict") or len(text) > 1000
    assert len(ours.encode("word " * 400)) == MAX_TOKENS


@pytest.mark.skipif(not SHARED.exists(), reason=f"real data folder {SHARED} is absent")
def test_tokenizer_gives_the_ids_of_the_tokenizers_library_on_real_logs() -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    reference.enable_truncation(max_length=MAX_TOKENS)
    reference.no_padding()
    ours = WordPiece(MODEL_DIR / "vocab.txt", MAX_TOKENS)
    texts = real_texts()
    assert len(texts) > 1000
    mismatched = [t for t in texts if ours.encode(t) != reference.encode(t).ids]
    assert mismatched == []


def test_a_text_gets_the_same_vector_alone_or_among_others() -> None:
    tasks = example_tasks()
    onnx = OnnxEmbedder()
    together = np.asarray(onnx.embed(tasks))
    alone = np.asarray([onnx.embed([t])[0] for t in tasks])
    assert np.abs(together - alone).max() < 1e-6


def test_numpy_runner_agrees_with_onnxruntime() -> None:
    texts = example_tasks() + REFERENCE["texts"] + TRICKY
    numpy_path = MiniLM()
    numpy_path.FEW = 10**6  # never hand over to onnxruntime
    ours = np.asarray(numpy_path.embed(texts))
    assert numpy_path._onnx is None
    theirs = np.asarray(OnnxEmbedder().embed(texts))
    cos = (ours * theirs).sum(axis=1)
    # Both run the same int8 graph; a rounding step that lands differently can move a vector by up to ~0.5%
    # (onnxruntime's own optimisation levels differ from each other as much), most agree to float precision.
    assert cos.min() > 0.99
    assert np.median(cos) > 0.99999
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() < 1e-5
    start = len(example_tasks())
    for got, want in zip(ours[start:], REFERENCE["vectors"]):
        assert float(np.dot(got, want)) > 0.98  # and to sentence-transformers, like onnxruntime


def test_many_texts_on_several_threads_get_the_vectors_of_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = example_tasks() + TRICKY
    model = OnnxEmbedder()
    monkeypatch.setenv("MEMP_THREADS", "1")
    one = model.embed(texts)
    monkeypatch.setenv("MEMP_THREADS", "3")
    assert model.embed(texts) == one


def test_numpy_runner_hands_over_to_onnxruntime_past_a_few_texts() -> None:
    model = MiniLM()
    first = model.embed(["restart nginx"])
    assert model._onnx is None and model._numpy is not None
    model.embed(["task %d" % i for i in range(model.FEW)])
    assert model._onnx is not None
    again = model.embed(["restart nginx"])
    assert float(np.dot(first[0], again[0])) > 0.99


def test_weight_cache_is_written_once_and_rebuilt_when_damaged(model_cache: Path) -> None:
    from memp_cli import minilm
    from memp_cli.embed import _derived

    path = _derived(MODEL_DIR / "model.onnx", "weights", minilm.FORMAT)
    assert path is not None and path.parent == model_cache
    MiniLM().embed(["warm the cache"])
    assert path.exists()
    before = MiniLM().embed(["put a mug in the sink"])[0]
    path.write_bytes(b"\x00" * 16)
    assert MiniLM().embed(["put a mug in the sink"])[0] == before
    assert minilm.map_weights(path)["l0.qkv.w"].shape == (3 * 384, 384)
