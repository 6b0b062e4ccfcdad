"""Token counts: counted by lines (memp_cli/tokens.py), always the count tiktoken gives for the whole text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memp_cli import formats, tokens
from memp_cli.tokens import count_tokens

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "trajectories"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _whole(text: str) -> int:
    return len(tokens._encoding().encode(text, disallowed_special=()))


# What cl100k's pattern treats specially: line breaks and other white space (ASCII, Unicode, characters Python and
# Rust disagree on), contractions, digits, punctuation, letters of several scripts, a special token's text.
_PIECES = st.sampled_from([
    "\n", "\r", "\r\n", "\n\n", " ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u180e", "\u2028",
    "\u2029", "\u3000", "\u200b", "\ufeff", "a", "Z", "go", "é", "ß", "中", "😀", "1", "23", "4567", "'s", "'LL", "'",
    ".", "!", "#", "-", "$", "~", ">", "<|endoftext|>",
])


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_count_is_the_whole_texts(text: str) -> None:
    assert count_tokens(text) == _whole(text)


@given(st.text(max_size=400))
def test_count_of_any_text(text: str) -> None:
    assert count_tokens(text) == _whole(text)


def test_long_lines_and_repeats() -> None:
    line = "On the countertop 1, you see a apple 2, a bread 1, and a knife 3.\n"
    for text in (line * 50, "x" * 5000 + "\n" + line, "> cat " + "a/" * 400 + "\n" + line + "  \n\n" + line):
        assert count_tokens(text) == _whole(text)
        assert count_tokens(text) == _whole(text)  # counted again from the cache


def _runs(path: Path) -> list[str]:
    with formats.sources([str(path)]) as (found, _):
        return [t.render() for src in found for t in formats.read(src)]


def test_real_runs() -> None:
    texts = _runs(EXAMPLES)
    assert texts
    for text in texts:
        assert count_tokens(text) == _whole(text)


@pytest.mark.skipif(not (SHARED / "mini-swe-agent").is_dir(), reason="../shared/data is absent (a fresh clone)")
def test_real_shell_runs() -> None:
    for text in _runs(SHARED / "mini-swe-agent")[:20]:
        assert count_tokens(text) == _whole(text)
