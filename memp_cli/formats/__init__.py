"""Trajectory file formats: finding the files, and turning each into `Trajectory` records."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MempError
from ..records import Trajectory
from . import memp_chat, native, react, sharegpt

# Folder walks pick these up; a file named explicitly is read whatever its name.
SUFFIXES = (".jsonl", ".json")
# Whole-file JSON formats, tried in this order by detection.
JSON_FORMATS = {sharegpt.NAME: sharegpt, react.NAME: react, memp_chat.NAME: memp_chat}
FORMATS = ("auto", native.NAME, *JSON_FORMATS)


@dataclass(frozen=True)
class Source:
    """A file to read, and the name to report it by."""

    path: Path
    label: str


@contextmanager
def sources(paths: Sequence[str]) -> Iterator[list[Source]]:
    """Yield the files named by `paths` (files, folders walked for *.jsonl, '-' for stdin), sorted per folder.

    Standard input is spooled to a temporary file, because ingest reads each source twice: once to validate it
    whole, once to store it.
    """
    found: list[Source] = []
    with tempfile.TemporaryDirectory(prefix="memp-") as tmp:
        for raw in paths:
            if raw == "-":
                spool = Path(tmp) / f"stdin-{len(found)}.jsonl"
                with spool.open("wb") as out:
                    shutil.copyfileobj(sys.stdin.buffer, out)
                found.append(Source(spool, "<stdin>"))
                continue
            path = Path(raw)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
                if not files:
                    raise InputError(raw, None, f"no {', '.join(SUFFIXES)} files in this folder")
                found.extend(Source(p, str(p)) for p in files)
            elif path.is_file():
                found.append(Source(path, raw))
            else:
                raise InputError(raw, None, "no such file or folder")
        yield found


def check_format(fmt: str) -> None:
    """Raise MempError for an input format memp does not know."""
    if fmt not in FORMATS:
        raise MempError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _load_json(source: Source) -> object:
    try:
        with source.path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(source.label, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError:
        raise InputError(source.label, None, "not UTF-8 text") from None
    except OSError as exc:
        raise InputError(source.label, None, f"cannot read: {exc.strerror}") from None


def _looks_like_jsonl(source: Source) -> bool:
    """Return True when the first non-blank line is a whole JSON object (so: one record per line)."""
    try:
        with source.path.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    return isinstance(json.loads(raw), dict)
    except (ValueError, OSError):
        return False
    return True


def read(source: Source, fmt: str = "auto", outcome: str = "success") -> Iterator[Trajectory]:
    """Yield the trajectories in one source; `outcome` is used where the format records none."""
    if fmt == native.NAME or (
        fmt == "auto" and (source.path.suffix == ".jsonl" or source.path.suffix != ".json" and _looks_like_jsonl(source))
    ):
        yield from _read_lines(source)
        return
    data = _load_json(source)
    if fmt == "auto":
        module = next((m for m in JSON_FORMATS.values() if m.sniff(data)), None)
        if module is None:
            raise InputError(source.label, None, "cannot tell this file's format; name it with --format")
    else:
        module = JSON_FORMATS[fmt]
    yield from module.read(data, source.label, source.path, outcome)


def _read_lines(source: Source) -> Iterator[Trajectory]:
    """Yield the trajectories of a native JSONL source, streaming it line by line."""

    def lines() -> Iterator[str]:
        # Bytes decoded a line at a time, so a bad byte is reported on its own line.
        with source.path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if b"\x00" in raw:
                    raise InputError(source.label, number, "binary data, not a text trajectory file")
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(source.label, number, "not UTF-8 text") from None

    try:
        yield from native.read(lines(), source.label)
    except OSError as exc:
        raise InputError(source.label, None, f"cannot read: {exc.strerror}") from None
