"""The embedded model's tokenizer (BERT uncased WordPiece) in plain Python.

It gives the ids that the `tokenizers` library gives for the shipped tokenizer.json (a test holds them to it) but is
ready in ~3 ms, where `tokenizers` takes 30-45 ms to load that file: a tenth of a fresh `memp recall`.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"
MAX_WORD_CHARS = 100
# Unicode's "other" categories: control, format, surrogate, private use, unassigned; cleaned out of the text.
OTHER = ("Cc", "Cf", "Cs", "Co", "Cn")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_punctuation(ch: str) -> bool:
    return (ch.isascii() and not ch.isalnum() and ch.isprintable() and not ch.isspace()) or unicodedata.category(
        ch
    ).startswith("P")


def _normalize(text: str) -> str:
    """Return the text as BertNormalizer leaves it: cleaned, CJK spaced, accents stripped, lower-cased."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (ch not in "\t\n\r" and unicodedata.category(ch) in OTHER):
            continue
        if ch.isspace():
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFD", "".join(out))
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn").lower()


def _words(text: str) -> list[str]:
    """Return the words and punctuation marks BertPreTokenizer splits the text into."""
    words: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        elif _is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


class WordPiece:
    """Text -> token ids, with [CLS] and [SEP] around and at most `max_tokens` ids in all."""

    def __init__(self, vocab_file: Path, max_tokens: int) -> None:
        tokens = vocab_file.read_text(encoding="utf-8").split("\n")
        self.vocab = dict(zip(tokens, range(len(tokens))))
        self.max_tokens = max_tokens

    def _pieces(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.vocab[UNK]]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.vocab[UNK]]
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        """Return the ids of one text."""
        ids: list[int] = []
        room = self.max_tokens - 2
        for word in _words(_normalize(text)):
            ids.extend(self._pieces(word))
            if len(ids) >= room:
                break
        return [self.vocab[CLS], *ids[:room], self.vocab[SEP]]
