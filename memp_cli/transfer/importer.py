"""`memp import`: an export file into a store, all or nothing, merging by content without duplicates.

Imported text is untrusted: every run passes `boundary.prepare` (secrets masked in every field, the injection
guard), and every script, example run, earlier version and outcome passes the same redactor and guard; a memory
whose text reads like an instruction is held for approval, whatever its status was where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .. import boundary
from ..embed import DEFAULT_EMBED_MODEL, get_embedder, is_default
from ..errors import InputError
from ..store import Store
from .format import decode_vector, memory_row, parse_lines, run_trajectory, vector_blob


@dataclass
class ImportReport:
    """What an import did."""

    file: str
    read: int = 0
    added: int = 0
    skipped: int = 0
    held: int = 0
    redacted: int = 0
    embedded: int = 0
    outcomes: int = 0
    keywords: int = 0
    settings: int = 0
    embed_model: str = DEFAULT_EMBED_MODEL

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)


@dataclass
class _Parsed:
    header: dict[str, Any]
    memories: list[tuple[int, dict[str, Any]]]
    keywords: dict[str, str]
    outcomes: list[dict[str, Any]]


def _parse(name: str, lines: list[str]) -> _Parsed:
    """Return the file's records, every line checked first: a broken line raises InputError naming it."""
    parsed = _Parsed({}, [], {}, [])
    counts = {"memory": 0, "keyword": 0, "outcome": 0}

    def take(number: int, kind: str, record: dict[str, Any]) -> None:
        if kind == "header":
            parsed.header = record
        elif kind == "memory":
            parsed.memories.append((number, record))
        elif kind == "keyword":
            try:
                decode_vector(record["vector"])
            except ValueError as exc:
                raise InputError(name, number, f"keyword {record['word']!r}: {exc}") from None
            parsed.keywords[record["word"]] = record["vector"]
        elif kind == "outcome":
            parsed.outcomes.append(record)
        else:
            wanted = (record["memories"], record["keywords"], record["outcomes"])
            got = (counts["memory"], counts["keyword"], counts["outcome"])
            if wanted != got:
                raise InputError(name, number, f"the end record counts {wanted} (memories, keywords, outcomes) "
                                 f"but the file holds {got}")
        if kind in counts:
            counts[kind] += 1

    parse_lines(name, lines, take)
    return parsed


def _target_model(store: Store, requested: str | None, header: dict[str, Any]) -> str:
    """Return the embedding model the store will use: asked for, else the store's, else the file's, else default."""
    from ..embed import resolve_embed_model

    if requested or os.environ.get("MEMP_EMBED_MODEL") or store.settings.embed_model():
        return resolve_embed_model(store, requested)
    model = header["embed_model"]
    return str(model["id"]) if model else DEFAULT_EMBED_MODEL


def import_file(
    store: Store, name: str, lines: list[str], embed_model: str | None = None,
    warn: Callable[[str], None] | None = None, scope: str | None = None,
) -> ImportReport:
    """Import an export file's lines into the store in one transaction; return what was added and skipped.

    Each memory keeps the scope it had in the file (version 1 files: 'default') unless `scope` puts them all in one.
    """
    if scope is not None:
        from ..scopes import check

        check(scope)
    parsed = _parse(name, lines)
    report = ImportReport(file=name, read=len(parsed.memories))
    target = _target_model(store, embed_model, parsed.header)
    report.embed_model = target
    file_model = parsed.header["embed_model"]
    same_model = bool(parsed.header["vectors"] and file_model and file_model["id"] == target)
    redactor = boundary.Redactor()
    was_empty = store.transfer.is_empty()

    renamed: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    vectors: list[list[float] | None] = []
    fresh: set[str] = set()
    for number, line in parsed.memories:
        try:
            traj = run_trajectory(line["run"])
            vector = decode_vector(line["vector"]) if same_model and line["vector"] else None
        except ValueError as exc:
            raise InputError(name, number, f"memory {line['trajectory_id']}: {exc}") from None
        if traj.id != line["trajectory_id"]:
            raise InputError(name, number, f"trajectory_id {line['trajectory_id']} is not the hash of its run "
                             f"({traj.id}): the run was changed")
        prepared = boundary.prepare(traj, redactor)
        clean = prepared.trajectory
        renamed[traj.id] = clean.id
        if clean.id in fresh:
            report.skipped += 1
            continue
        row = memory_row(line, clean)
        if scope is not None:
            row["scope"] = scope
        _redact_row(row, redactor)
        held = prepared.flag or boundary.check_text(row["script"] or "", None).flag or boundary.check_text(
            row["trajectory"] or "", None).flag
        if held and not row["flag"]:
            row["flag"] = held
            if row["status"] == "active":
                row["status"] = "held"
        report.held += row["status"] == "held"
        if clean.task != traj.task:
            vector = None  # the task text changed: its vector must be made again
        fresh.add(clean.id)
        rows.append(row)
        vectors.append(vector)
    known = store.memories.known(list(fresh))
    keep = [i for i, row in enumerate(rows) if row["run_id"] not in known]
    report.skipped += len(rows) - len(keep)
    rows = [rows[i] for i in keep]
    vectors = [vectors[i] for i in keep]
    for row in rows:
        row["merged_into"] = renamed.get(row["merged_into"], row["merged_into"])
    filled = _fill_vectors(rows, vectors, target, report)
    blobs = _keyword_blobs(store, rows, parsed.keywords if same_model else {}, target)
    outcomes = [_clean_outcome(o, renamed, redactor) for o in parsed.outcomes]
    settings = parsed.header["settings"] if was_empty else {}
    added = store.transfer.add_records(rows, filled, target, blobs, outcomes, settings)
    report.added, report.outcomes = added["memories"], added["outcomes"]
    report.keywords, report.settings = added["keywords"], added["settings"]
    report.redacted = redactor.masked
    if warn and report.held:
        warn(f"{report.held} imported memories are held: their text reads like an instruction (memp approve ID)")
    return report


def _redact_row(row: dict[str, Any], redactor: boundary.Redactor) -> None:
    """Mask secrets in every text a memory row holds beyond its run (which `boundary.prepare` saw)."""
    for key in ("task", "script", "trajectory", "retired_reason"):
        row[key] = redactor.text(row[key])
    row["history"] = redactor.value(row["history"])
    row["script_cache"] = redactor.value(row["script_cache"])
    row["keywords"] = [w for w in (redactor.text(w) for w in row["keywords"]) if w]


def _clean_outcome(outcome: dict[str, Any], renamed: dict[str, str], redactor: boundary.Redactor) -> dict[str, Any]:
    """Return an outcome record ready for the store: its run redacted, its memories named by their stored runs."""
    return {**outcome, "trajectory": redactor.text(outcome["trajectory"]), "applied": int(outcome["applied"]),
            "memories": [renamed.get(t, t) for t in outcome["memories"]]}


def _fill_vectors(rows: list[dict[str, Any]], vectors: list[list[float] | None], model: str,
                  report: ImportReport) -> list[list[float]]:
    """Return a vector for every row: the file's where it can be used, else the task embedded with `model`."""
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        embedder = get_embedder(None if is_default(model) else model)
        made = embedder.embed([rows[i]["task"] for i in missing])
        for i, vector in zip(missing, made):
            vectors[i] = vector
        report.embedded = len(missing)
    return [v for v in vectors if v is not None]


def _keyword_blobs(store: Store, rows: list[dict[str, Any]], from_file: dict[str, str], model: str) -> dict[str, bytes]:
    """Return a float32 blob for every keyword of `rows` the store lacks: the file's, else embedded with `model`."""
    words = sorted({w for row in rows for w in row["keywords"]} - store.keywords.known(
        sorted({w for row in rows for w in row["keywords"]})))
    blobs: dict[str, bytes] = {}
    todo = []
    for word in words:
        if word in from_file:
            blobs[word] = vector_blob(decode_vector(from_file[word]))
        else:
            todo.append(word)
    if todo:
        embedder = get_embedder(None if is_default(model) else model)
        for word, vector in zip(todo, embedder.embed(todo)):
            blobs[word] = vector_blob(vector)
    return blobs
