"""Trajectory file formats: finding the files, detecting each one's format, and turning it into `Trajectory` records.

Each format is one module with `NAME`, `read(source, ...)` yielding trajectories, and a `sniff` that detection calls
with the first JSON line (line formats) or the whole decoded document (document formats). Outcomes are settled here,
in one place: the record's own, else an outcomes file, else a score against the threshold, else the default.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..choices import InputFormat, values
from ..errors import InputError, MempError, printable
from ..records import OUTCOMES, Trajectory

# Folder walks pick these up; a file named explicitly is read whatever its name.
SUFFIXES = (".jsonl", ".json", ".traj", ".txt", ".log")
OUTCOME_FILES = ("outcomes.json", "outcomes.jsonl")
# A JSONL line longer than this is not a trajectory record; refuse it instead of exhausting memory.
MAX_LINE_BYTES = 64 * 1024 * 1024
# How many lines detection reads to find a Claude Code conversation record behind housekeeping lines.
HEAD_LINES = 50


@dataclass(frozen=True)
class Source:
    """A file to read, and the name to report it by."""

    path: Path
    label: str


@dataclass
class ReadOptions:
    """How to settle what a format does not record."""

    outcome: str | None = None
    score: float | None = None
    success_threshold: float = 1.0
    outcomes: dict[str, tuple[str | None, float | None]] = field(default_factory=dict)

    def settle(self, traj: Trajectory) -> Trajectory:
        """Return the trajectory with its outcome (and score) decided."""
        known = self.outcomes.get(traj.source_id or "") if traj.source_id else None
        outcome, score = traj.outcome, traj.score
        if known is not None:
            outcome = known[0] or outcome
            score = known[1] if known[1] is not None else score
        if score is None and self.score is not None:
            score = self.score
        if outcome is None and score is not None:
            outcome = "success" if score >= self.success_threshold else "failure"
        if outcome is None:
            outcome = self.outcome or "success"
        if outcome == traj.outcome and score == traj.score:
            return traj
        return replace(traj, outcome=outcome, score=score)


# -- finding files --------------------------------------------------------------------------------------------------


@contextmanager
def sources(paths: Sequence[str]) -> Iterator[tuple[list[Source], list[Source]]]:
    """Yield (trajectory files, outcome files) named by `paths`: files, folders (walked), or '-' for stdin.

    Standard input, a pipe (a FIFO, or bash's `<(...)`) and a device are copied to a private temporary file first:
    they can be read only once, and detecting a format looks at the start before reading the whole. Files named
    outcomes.json(l) are outcome tables, not trajectories. Names are kept printable (see `errors.printable`).
    """
    found: list[Source] = []
    outcome_files: list[Source] = []
    with tempfile.TemporaryDirectory(prefix="memp-") as tmp:
        for raw in paths:
            if raw == "-":
                found.append(_spooled(sys.stdin.buffer, Path(tmp) / f"in-{len(found)}", "<stdin>"))
                continue
            path, label = Path(raw), printable(raw)
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                raise InputError(label, None, "no such file or folder") from None
            except OSError as exc:
                raise InputError(label, None, f"cannot read: {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
                for p in files:
                    (outcome_files if p.name in OUTCOME_FILES else found).append(Source(p, printable(str(p))))
                if not any(s.path.is_relative_to(path) for s in found):
                    raise InputError(label, None, f"no trajectory files ({', '.join(SUFFIXES)}) in this folder")
                continue
            if stat.S_ISREG(mode):
                source = Source(path, label)
            else:
                try:
                    with path.open("rb") as handle:
                        source = _spooled(handle, Path(tmp) / f"in-{len(found)}", label)
                except OSError as exc:
                    raise InputError(label, None, f"cannot read: {exc.strerror}") from None
            (outcome_files if path.name in OUTCOME_FILES else found).append(source)
        yield found, outcome_files


def _spooled(stream: Any, spool: Path, label: str) -> Source:
    """Return a Source for a copy of `stream` (read to its end) in `spool`, readable by its owner only."""
    try:
        with os.fdopen(os.open(spool, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb") as out:
            shutil.copyfileobj(stream, out)
    except OSError as exc:
        raise InputError(label, None, f"cannot copy it to a temporary file: {exc.strerror}") from None
    return Source(spool, label)


# -- reading helpers shared by the format modules --------------------------------------------------------------------


def json_lines(source: Source) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded JSON) for each non-blank line, streaming; errors name the line."""
    try:
        with source.path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise InputError(source.label, number, f"line longer than {MAX_LINE_BYTES >> 20} MB")
                if not raw.strip():
                    continue
                if b"\x00" in raw:
                    raise InputError(source.label, number, "binary data, not a text trajectory file")
                try:
                    decoded = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise InputError(source.label, number, "not UTF-8 text") from None
                yield number, _decode(decoded, source.label, number)
    except OSError as exc:
        raise InputError(source.label, None, f"cannot read: {exc.strerror}") from None


def load_json(source: Source) -> Any:
    """Return the file decoded as one JSON document; errors name the line."""
    held = getattr(_decoded, "slot", None)
    if held is not None and held[0] is source:
        _decoded.slot = None  # decoded once by `read`'s detection, strictly (as below), and handed on once
        return held[1]
    return _decode(read_text(source), source.label, None)


# What `read` detected a file's format from, for that file's reader to take instead of decoding the file again
# (a detected JSON file was decoded two more times: ~50 us of ~140 us a small ALFWorld file). Per thread.
_decoded = threading.local()


def _decode(text: str, label: str, line: int | None) -> Any:
    """Return decoded JSON, or raise InputError naming the line (of the file, or within a document)."""
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise InputError(label, at, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InputError(label, line, "JSON nested too deeply") from None
    except ValueError as exc:
        raise InputError(label, line, str(exc)) from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        _no_lone_surrogate(data, text, label, line)
    return data


# A \uD800-\uDFFF escape: JSON allows one alone, UTF-8 (and so the store) cannot hold it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _no_lone_surrogate(data: Any, text: str, label: str, line: int | None) -> None:
    """Raise InputError when decoded JSON holds a lone surrogate (an escape with no partner), naming its line."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        found = _LONE_SURROGATE.search(text)
        at = line if line is not None else (text.count("\n", 0, found.start()) + 1 if found else None)
        escape = found.group(0) if found else "(\\ud800-\\udfff)"
        raise InputError(label, at, f"a lone surrogate {escape} is not a character UTF-8 can hold") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(literal: str) -> float:
    """Return a JSON number as a float, refusing one too large for a float (1e999 would be infinity)."""
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:20]} is too large a number")
    return value


def number(value: Any, what: str, label: str, line: int | None) -> float | None:
    """Return a score-like JSON value as a finite float (None stays None), or raise InputError saying what is wrong."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(label, line, f"{what} must be a number")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise InputError(label, line, f"{what} is too large a number")
    return result


def read_text(source: Source) -> str:
    """Return the file as UTF-8 text; errors name the line."""
    try:
        raw = source.path.read_bytes()
    except OSError as exc:
        raise InputError(source.label, None, f"cannot read: {exc.strerror}") from None
    if b"\x00" in raw:
        raise InputError(source.label, raw[: raw.index(b"\x00")].count(b"\n") + 1, "binary data, not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(source.label, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None


def call_key(value: Any) -> Any:
    """Return a tool-call id as a dict key: a string or number as it is, any other JSON value as its text."""
    return value if value is None or isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)


def text(value: Any) -> str:
    """Return message content as plain text: strings as they are, lists of parts joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("content") or ""))
        return "\n".join(p for p in parts if p)
    if isinstance(value, dict):
        return str(value.get("text") or value.get("content") or "")
    return str(value)


# -- the registry and detection -------------------------------------------------------------------------------------


def _modules() -> dict[str, Any]:
    from . import claude_code, codex, memp_chat, native, openai_chat, react, sharegpt, swe_agent, tau_bench

    return {
        m.NAME: m
        for m in (native, claude_code, codex, openai_chat, sharegpt, memp_chat, react, swe_agent, tau_bench)
    }


FORMATS = values(InputFormat)


def check_format(fmt: str) -> None:
    """Raise MempError for an input format memp does not know."""
    if fmt not in FORMATS:
        raise MempError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _first_line(source: Source) -> Any:
    """Return the first non-blank line decoded as JSON, or None when it is not a whole JSON value."""
    try:
        with source.path.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    return json.loads(raw[:MAX_LINE_BYTES].decode("utf-8-sig"))
    except (ValueError, OSError, RecursionError):
        return None
    return None


def _head(source: Source, lines: int) -> list[Any]:
    """Return the first few non-blank lines decoded as JSON (None for a line that is not), for detection."""
    head: list[Any] = []
    try:
        with source.path.open("rb") as handle:
            for raw in handle:
                if len(head) >= lines:
                    break
                if raw.strip():
                    try:
                        head.append(json.loads(raw[:MAX_LINE_BYTES].decode("utf-8-sig")))
                    except (ValueError, RecursionError):
                        head.append(None)
    except OSError:
        return head
    return head


def _first_byte(source: Source) -> bytes:
    """Return the first non-blank byte of the file (b"" for an empty one)."""
    try:
        with source.path.open("rb") as handle:
            return handle.read(4096).lstrip()[:1]
    except OSError as exc:
        raise InputError(source.label, None, f"cannot read: {exc.strerror}") from None


def detect(source: Source) -> str:
    """Return the name of the format of one file, or raise InputError."""
    return _detect(source)[0]


_UNDECODED = object()


def _detect(source: Source) -> tuple[str, Any]:
    """Return the format of one file, and the JSON document it was told from (else _UNDECODED); or raise InputError."""
    modules = _modules()
    first_byte = _first_byte(source)
    if not first_byte:
        raise InputError(source.label, None, "empty file")
    # A first line that opens with "[" decodes to a list or to nothing, never to a dict: no need to decode it.
    first = _first_line(source) if first_byte != b"[" else None
    if isinstance(first, dict):
        for name in ("native", "claude-code", "codex", "openai-chat"):
            if modules[name].sniff_line(first):
                return name, _UNDECODED
        # Claude Code opens its transcripts with housekeeping lines of kinds it keeps adding; a conversation follows.
        if any(isinstance(line, dict) and modules["claude-code"].sniff_line(line) for line in _head(source, HEAD_LINES)):
            return "claude-code", _UNDECODED
    if first_byte in (b"{", b"[") or first is not None:
        data = load_json(source)
        for name in ("sharegpt", "memp-chat", "react", "swe-agent", "tau-bench", "openai-chat"):
            if modules[name].sniff(data):
                return name, data
        raise InputError(source.label, None, "cannot tell this file's format; name it with --format")
    if modules["react"].sniff_text(read_text(source)[:20000]):
        return "react", _UNDECODED
    raise InputError(source.label, None, "cannot tell this file's format; name it with --format")


def read(source: Source, fmt: str = "auto", options: ReadOptions | None = None) -> Iterator[Trajectory]:
    """Yield the trajectories in one source with their outcomes settled."""
    options = options or ReadOptions()
    name, data = _detect(source) if fmt == "auto" else (fmt, _UNDECODED)
    runs = _modules()[name].read(source)
    if data is not _UNDECODED:
        _decoded.slot = (source, data)  # taken by the reader's load_json(source), at its first step just below
    try:
        for traj in runs:
            yield options.settle(traj)
    finally:
        _decoded.slot = None


# -- outcome tables -------------------------------------------------------------------------------------------------


def _outcome_of(record: dict[str, Any], label: str, line: int | None) -> tuple[str, tuple[str | None, float | None]]:
    key = record.get("instance_id") or record.get("id") or record.get("source_id")
    if key is None:
        raise InputError(label, line, "an outcome record needs 'instance_id' or 'id'")
    outcome: str | None = None
    score = record.get("score", record.get("reward"))
    if "resolved" in record:
        outcome = "success" if record["resolved"] else "failure"
    elif "success" in record:
        outcome = "success" if record["success"] else "failure"
    elif record.get("outcome") is not None:
        outcome = record["outcome"]
        if outcome not in OUTCOMES:
            raise InputError(label, line, f"'outcome' must be one of {', '.join(OUTCOMES)}")
    value = number(score, "'score'", label, line)
    if outcome is None and value is None:
        raise InputError(label, line, f"outcome record {key!r} has no resolved, success, outcome or score")
    return str(key), (outcome, value)


def read_outcomes(source: Source) -> dict[str, tuple[str | None, float | None]]:
    """Return id -> (outcome, score) from an outcomes file: SWE-bench style, a list, a mapping, or JSONL."""
    if source.path.suffix == ".jsonl":
        return dict(_outcome_of(r, source.label, n) for n, r in json_lines(source) if isinstance(r, dict))
    data = load_json(source)
    if isinstance(data, dict) and isinstance(data.get("instances"), list):
        data = data["instances"]
    if isinstance(data, list):
        return dict(_outcome_of(r, source.label, None) for r in data if isinstance(r, dict))
    if isinstance(data, dict):
        table: dict[str, tuple[str | None, float | None]] = {}
        for key, value in data.items():
            record = value if isinstance(value, dict) else {"resolved": value} if isinstance(value, bool) else None
            if record is None:
                record = {"score": value} if isinstance(value, (int, float)) else {"outcome": value}
            table.update([_outcome_of({"id": key, **record}, source.label, None)])
        return table
    raise InputError(source.label, None, "an outcomes file is a list of records or a mapping of id to outcome")
