"""The export format, version 2: JSON Lines of a header, memories, keyword vectors, outcomes and an end record.

A memory line holds the memory as stored (every column but its local id, which is informational), the run it came
from, every version in its history, its cached scripts, its keywords and, when asked, its task vector. Memories are
named across stores by their trajectory id, a hash of the run's task and steps. Floats vectors travel as base64 of
little-endian float32, so they come back bit for bit. Version 2 added each memory's scope; a version 1 file's
memories come in in scope 'default' (the one scope there was).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

from ..errors import InputError, MempError
from ..records import Step, Trajectory
from ..scopes import DEFAULT as DEFAULT_SCOPE
from ..scopes import check as check_scope


class BadRecord(ValueError):
    """A line of an export file that the format does not allow."""


FORMAT = "memp-export"
VERSION = 2
# Which types each field of each record may hold (None: null allowed); checked on import, line by line.
_S, _I, _F, _B, _L, _D, _N = str, int, (int, float), bool, list, dict, type(None)
RUN_FIELDS: dict[str, tuple[Any, ...]] = {
    "task": (_S,), "steps": (_L,), "outcome": (_S,), "score": (*_F, _N), "source_id": (_S, _N),
    "source_file": (_S, _N), "source_line": (_I, _N), "metadata": (_D,), "created_at": (_S,),
}
HISTORY_FIELDS: dict[str, tuple[Any, ...]] = {
    "version": (_I,), "event": (_S,), "old_script": (_S, _N), "new_script": (_S, _N), "old_trajectory": (_S, _N),
    "new_trajectory": (_S, _N), "model": (_S, _N), "reason": (_S, _N), "created_at": (_S,),
}
CACHE_FIELDS: dict[str, tuple[Any, ...]] = {
    "model": (_S,), "prompt_version": (_S,), "script": (_S,), "input_tokens": (_I, _N), "output_tokens": (_I, _N),
    "created_at": (_S, _N),
}
MEMORY_FIELDS: dict[str, tuple[Any, ...]] = {
    "type": (_S,), "memory_id": (_I,), "trajectory_id": (_S,), "run": (_D,), "build": (_S,), "task": (_S,),
    "script": (_S, _N), "trajectory": (_S, _N), "tokens": (_I,), "model": (_S, _N), "prompt_version": (_S, _N),
    "version": (_I,), "status": (_S,), "flag": (_S, _N), "retired_reason": (_S, _N), "retired_at": (_S, _N),
    "merged_into": (_S, _N), "recalled": (_I,), "succeeded": (_I,), "failed": (_I,), "created_at": (_S,),
    "updated_at": (_S, _N), "last_recalled_at": (_S, _N), "history": (_L,), "script_cache": (_L,),
    "keywords": (_L,), "vector": (_S, _N), "scope": (_S,),
}
# Fields a record of an older version of the format lacks: version 1 memories have no scope.
OPTIONAL_FIELDS = {"memory": ("scope",)}
HEADER_FIELDS: dict[str, tuple[Any, ...]] = {
    "type": (_S,), "format": (_S,), "version": (_I,), "memp_version": (_S,), "exported_at": (_S,),
    "embed_model": (_D, _N), "vectors": (_B,), "filters": (_D,), "settings": (_D,),
}
KEYWORD_FIELDS: dict[str, tuple[Any, ...]] = {"type": (_S,), "word": (_S,), "vector": (_S,)}
OUTCOME_FIELDS: dict[str, tuple[Any, ...]] = {
    "type": (_S,), "recall_id": (_S, _N), "outcome": (_S,), "score": (*_F, _N), "policy": (_S,),
    "trajectory": (_S, _N), "applied": (_B,), "created_at": (_S,), "memories": (_L,),
}
END_FIELDS: dict[str, tuple[Any, ...]] = {"type": (_S,), "memories": (_I,), "keywords": (_I,), "outcomes": (_I,)}
RECORDS = {"header": HEADER_FIELDS, "memory": MEMORY_FIELDS, "keyword": KEYWORD_FIELDS, "outcome": OUTCOME_FIELDS,
           "end": END_FIELDS}
# The fields that differ between two exports of the same memories (README, "Export and import").
VOLATILE = {"header": ("exported_at",), "memory": ("memory_id",)}
# The columns a store row carries that a memory line holds as they are.
PLAIN = ("build", "task", "script", "trajectory", "tokens", "model", "prompt_version", "version", "status", "flag",
         "retired_reason", "retired_at", "merged_into", "recalled", "succeeded", "failed", "created_at",
         "updated_at", "last_recalled_at", "history", "script_cache", "keywords")


def encode_vector(blob: bytes | None) -> str | None:
    """Return a float32 blob as base64 text."""
    return base64.b64encode(blob).decode("ascii") if blob is not None else None


def decode_vector(text: str) -> list[float]:
    """Return the floats of a base64 float32 vector; raise ValueError when it is not one."""
    blob = base64.b64decode(text, validate=True)
    if not blob or len(blob) % 4:
        raise BadRecord("not a float32 vector")
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


def vector_blob(vector: list[float]) -> bytes:
    """Return floats as the little-endian float32 blob stores and files hold."""
    return struct.pack(f"<{len(vector)}f", *vector)


def memory_line(row: dict[str, Any]) -> dict[str, Any]:
    """Return the export line of a memory row as the store's transfer part yields it."""
    run = {k: row[f"run_{k}"] for k in RUN_FIELDS}
    run["steps"] = json.loads(run["steps"])
    run["metadata"] = json.loads(run["metadata"] or "{}")
    line: dict[str, Any] = {"type": "memory", "memory_id": row["memory_id"], "trajectory_id": row["run_id"],
                            "run": run}
    line.update((k, row[k]) for k in PLAIN)
    line["vector"] = encode_vector(row["vector"])
    line["scope"] = row["scope"]
    return line


def memory_row(line: dict[str, Any], trajectory: Trajectory) -> dict[str, Any]:
    """Return the store row of a memory line whose run, past the boundary, is `trajectory`."""
    run = line["run"]
    row: dict[str, Any] = {k: line[k] for k in PLAIN}
    row["scope"] = line.get("scope", DEFAULT_SCOPE)
    row.update(
        run_id=trajectory.id, run_task=trajectory.task,
        run_steps=json.dumps([s.to_dict() for s in trajectory.steps], ensure_ascii=False, separators=(",", ":")),
        run_outcome=trajectory.outcome, run_score=trajectory.score, run_source_id=trajectory.source_id,
        run_source_file=trajectory.source_file, run_source_line=trajectory.source_line,
        run_metadata=json.dumps(trajectory.metadata, ensure_ascii=False, separators=(",", ":")),
        run_created_at=run["created_at"],
    )
    return row


def run_trajectory(run: dict[str, Any]) -> Trajectory:
    """Return the trajectory a memory line's `run` describes; raise ValueError when its steps are malformed."""
    steps = []
    for step in run["steps"]:
        if not isinstance(step, dict) or not isinstance(step.get("action"), str):
            raise BadRecord("each step needs an action")
        steps.append(Step.from_dict(step))
    return Trajectory(task=run["task"], steps=steps, outcome=run["outcome"], score=run["score"],
                      source_id=run["source_id"], metadata=run["metadata"], source_file=run["source_file"],
                      source_line=run["source_line"])


def _check_fields(data: Any, fields: dict[str, tuple[Any, ...]], what: str, optional: tuple[str, ...] = ()) -> None:
    """Raise ValueError unless `data` is an object with exactly `fields` (`optional` may be left out), each typed so."""
    if not isinstance(data, dict):
        raise BadRecord(f"{what} is not an object")
    missing = [k for k in fields if k not in data and k not in optional]
    extra = [k for k in data if k not in fields]
    if missing or extra:
        raise BadRecord(f"{what}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
        ))
    for key, types in fields.items():
        if key not in data:
            continue
        value = data[key]
        # JSON's true and false are not counts, and a count is not a float field's business.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadRecord(f"{what}: {key} has the wrong type ({type(value).__name__})")


def check_record(record: Any) -> str:
    """Return the record's type once its fields are as the format says; raise ValueError otherwise."""
    if not isinstance(record, dict) or record.get("type") not in RECORDS:
        raise BadRecord(f"not a record of the export format (type {record.get('type') if isinstance(record, dict) else None!r})")
    kind = str(record["type"])
    _check_fields(record, RECORDS[kind], kind, OPTIONAL_FIELDS.get(kind, ()))
    if kind == "memory":
        if "scope" in record:
            try:
                check_scope(record["scope"])
            except MempError as exc:
                raise BadRecord(f"memory: {exc}") from None
        _check_fields(record["run"], RUN_FIELDS, "memory run")
        for item in record["history"]:
            _check_fields(item, HISTORY_FIELDS, "memory history")
        for item in record["script_cache"]:
            _check_fields(item, CACHE_FIELDS, "memory script_cache")
        if not all(isinstance(w, str) for w in record["keywords"]):
            raise BadRecord("memory keywords must be strings")
    if kind == "outcome" and not all(isinstance(t, str) for t in record["memories"]):
        raise BadRecord("outcome memories must be trajectory ids")
    return kind


def parse_lines(name: str, lines: list[str], on_record: Callable[[int, str, dict[str, Any]], None]) -> None:
    """Check every line of an export file and hand each record to `on_record`; raise InputError naming the line."""
    seen_end = False
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            kind = check_record(record)
        except (ValueError, RecursionError) as exc:
            raise InputError(name, number, str(exc).splitlines()[0] if str(exc) else "not JSON") from None
        if seen_end:
            raise InputError(name, number, "a record after the end record")
        if (number == 1) != (kind == "header"):
            raise InputError(name, number, "the header must be the first line, and only it" if number == 1
                             else "a second header")
        if kind == "header":
            if record["format"] != FORMAT:
                raise InputError(name, number, f"not a memp export (format {record['format']!r})")
            if record["version"] > VERSION:
                raise InputError(name, number, f"format version {record['version']} is newer than this memp's "
                                 f"({VERSION}); upgrade memp to import it")
        seen_end = kind == "end"
        on_record(number, kind, record)
    if not seen_end:
        raise InputError(name, len(lines) or None, "no end record: the file is cut short")
