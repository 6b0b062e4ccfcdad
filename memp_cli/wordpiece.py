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


class Vocabulary:
    """Word piece -> id: searched for in the file's bytes at first, then looked up in a dict built once.

    Building the dict of 30,522 pieces takes ~15 ms, a twentieth of a fresh `memp recall`, which looks up a few
    dozen pieces at ~0.1 ms each. Once the searches have read about as many bytes as building the dict costs
    (ingest, batch recall, a long text of rare words), the dict is built and used from then on.
    """

    SEARCH_BUDGET = 25  # times the file's size

    def __init__(self, vocab_file: Path) -> None:
        # Newline-delimited, so "\n<piece>\n" finds a whole line; the id is the number of lines before it. Bytes,
        # not str: the file's CJK pieces would make a str four bytes a character, and every search four times longer.
        self._text = b"\n" + vocab_file.read_bytes()
        if not self._text.endswith(b"\n"):
            self._text += b"\n"
        self._ids: dict[str, int] | None = None
        self._budget = self.SEARCH_BUDGET * len(self._text)

    def get(self, piece: str) -> int | None:
        """Return the id of a word piece, or None when the vocabulary lacks it."""
        if self._ids is None:
            if self._budget > 0:
                at = self._text.find(b"\n" + piece.encode("utf-8") + b"\n")
                if at < 0:
                    self._budget -= len(self._text)
                    return None
                self._budget -= 2 * at
                return self._text.count(b"\n", 0, at)
            tokens = self._text[1:-1].decode("utf-8").split("\n")
            self._ids = dict(zip(tokens, range(len(tokens))))
        return self._ids.get(piece)

    def __getitem__(self, piece: str) -> int:
        found = self.get(piece)
        if found is None:
            raise KeyError(piece)
        return found


class WordPiece:
    """Text -> token ids, with [CLS] and [SEP] around and at most `max_tokens` ids in all."""

    def __init__(self, vocab_file: Path, max_tokens: int) -> None:
        self.vocab = Vocabulary(vocab_file)
        self.cls, self.sep, self.unk = self.vocab[CLS], self.vocab[SEP], self.vocab[UNK]
        self.max_tokens = max_tokens

    def _pieces(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                found = self.vocab.get(word[start:end] if start == 0 else "##" + word[start:end])
                if found is not None:
                    ids.append(found)
                    break
                end -= 1
            if end == start:
                return [self.unk]
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
        return [self.cls, *ids[:room], self.sep]
