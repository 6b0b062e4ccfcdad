"""Trajectory file formats: finding the files, and turning each into `Trajectory` records."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..records import Trajectory
from . import native

# Folder walks pick these up; a file named explicitly is read whatever its name.
SUFFIXES = (".jsonl",)
FORMATS = (native.NAME,)


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


def read(source: Source) -> Iterator[Trajectory]:
    """Yield the trajectories in one source, streaming it line by line."""

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
