"""Trajectory file formats: finding the files, detecting each one's format, and turning it into `Trajectory` records.

Each format is one module with `NAME`, `read(source, ...)` yielding trajectories, and a `sniff` that detection calls
with the first JSON line (line formats) or the whole decoded document (document formats). Outcomes are settled here,
in one place: the record's own, else an outcomes file, else a score against the threshold, else the default.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..choices import InputFormat, values
from ..errors import InputError, MempError
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

    Standard input is spooled to a temporary file, because ingest reads each source twice: once to validate it
    whole, once to store it. Files named outcomes.json(l) are outcome tables, not trajectories.
    """
    found: list[Source] = []
    outcome_files: list[Source] = []
    with tempfile.TemporaryDirectory(prefix="memp-") as tmp:
        for raw in paths:
            if raw == "-":
                spool = Path(tmp) / f"stdin-{len(found)}"
                with spool.open("wb") as out:
                    shutil.copyfileobj(sys.stdin.buffer, out)
                found.append(Source(spool, "<stdin>"))
                continue
            path = Path(raw)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
                for p in files:
                    (outcome_files if p.name in OUTCOME_FILES else found).append(Source(p, str(p)))
                if not any(s.path.is_relative_to(path) for s in found):
                    raise InputError(raw, None, f"no trajectory files ({', '.join(SUFFIXES)}) in this folder")
            elif path.is_file():
                (outcome_files if path.name in OUTCOME_FILES else found).append(Source(path, raw))
            else:
                raise InputError(raw, None, "no such file or folder")
        yield found, outcome_files


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
    return _decode(read_text(source), source.label, None)


def _decode(text: str, label: str, line: int | None) -> Any:
    """Return decoded JSON, or raise InputError naming the line (of the file, or within a document)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise InputError(label, at, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InputError(label, line, "JSON nested too deeply") from None
    except ValueError as exc:
        raise InputError(label, line, str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


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
    modules = _modules()
    if not _first_byte(source):
        raise InputError(source.label, None, "empty file")
    first = _first_line(source)
    if isinstance(first, dict):
        for name in ("native", "claude-code", "codex", "openai-chat"):
            if modules[name].sniff_line(first):
                return name
        # Claude Code opens its transcripts with housekeeping lines of kinds it keeps adding; a conversation follows.
        if any(isinstance(line, dict) and modules["claude-code"].sniff_line(line) for line in _head(source, HEAD_LINES)):
            return "claude-code"
    if _first_byte(source) in (b"{", b"[") or first is not None:
        data = load_json(source)
        for name in ("sharegpt", "memp-chat", "react", "swe-agent", "tau-bench", "openai-chat"):
            if modules[name].sniff(data):
                return name
        raise InputError(source.label, None, "cannot tell this file's format; name it with --format")
    if modules["react"].sniff_text(read_text(source)[:20000]):
        return "react"
    raise InputError(source.label, None, "cannot tell this file's format; name it with --format")


def read(source: Source, fmt: str = "auto", options: ReadOptions | None = None) -> Iterator[Trajectory]:
    """Yield the trajectories in one source with their outcomes settled."""
    options = options or ReadOptions()
    name = detect(source) if fmt == "auto" else fmt
    for traj in _modules()[name].read(source):
        yield options.settle(traj)


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
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise InputError(label, line, "'score' must be a number")
    if outcome is None and score is None:
        raise InputError(label, line, f"outcome record {key!r} has no resolved, success, outcome or score")
    return str(key), (outcome, float(score) if score is not None else None)


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
