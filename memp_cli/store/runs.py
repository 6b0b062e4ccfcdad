"""How a run is stored once: its steps compressed, and a memory's text of it left to be rendered from them.

Steps: `trajectories.steps` holds the compact JSON of the steps' dicts, or, when smaller, that text's raw DEFLATE.
The value's SQLite type says which (TEXT is JSON, BLOB is deflate), so rows written before either way read as
they are and no flag column is needed. PostgreSQL keeps the JSON text (its column is text, and TOAST compresses
long values by itself): `encode_steps(..., blob=False)`.

A memory's text of its run: `memories.trajectory` is NULL when the text is the render of the stored run
(`Trajectory.render()` of its task, steps, outcome and score: trajectories rows are never updated), `''` when the
memory keeps no run (a `script` build), and the text itself otherwise (a revision that changed it). Readers render
the NULLs when they need the text (`run_text`). Since the NULLs depend on the renderer, the store records
`trajectory_render` = RENDER_VERSION in `meta`: a change to `Trajectory.render` needs a migration that writes the
old texts out first and bumps the number (tests/test_runs.py pins the render).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence

from ..records import Step, Trajectory

RENDER_VERSION = 1
LEVEL = 6  # zlib's default: level 9 made ingest slower for ~1% less


def compact_json(value: object) -> str:
    """Return JSON text without the spaces after separators (readers parse it the same)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def pack_steps(text: str, blob: bool = True) -> str | bytes:
    """Return steps' JSON text as stored: its raw DEFLATE when smaller (and `blob`), else the text itself."""
    if not blob:
        return text
    raw = text.encode("utf-8")
    # A window no larger than the text compresses it as well as the largest and sets up in ~8 us, not ~50: the
    # stream is raw DEFLATE all the same, which -15 (any window up to 32 kB) reads.
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -max(9, min(15, (len(raw) - 1).bit_length())))
    packed = packer.compress(raw) + packer.flush()
    return packed if len(packed) < len(raw) else text


def encode_steps(steps: Sequence[Step], blob: bool = True) -> str | bytes:
    """Return a run's steps as `trajectories.steps` stores them (see the module's docstring)."""
    return pack_steps(compact_json([s.to_dict() for s in steps]), blob)


def steps_text(value: str | bytes | memoryview) -> str:
    """Return a stored steps value as its JSON text."""
    if isinstance(value, str):
        return value
    return zlib.decompress(bytes(value), -15).decode("utf-8")


def decode_steps(value: str | bytes | memoryview) -> list[Step]:
    """Return the steps a stored value holds."""
    return [Step.from_dict(s) for s in json.loads(steps_text(value))]


def stored_text(text: str | None, run: Trajectory) -> str | None:
    """Return what `memories.trajectory` holds for a memory whose text of its run is `text`."""
    if text is None:
        return ""
    # Left to the render only where the stored run renders the same: SQLite keeps -0.0 as 0.0 and NaN as NULL, so a
    # run with such a score keeps its text as it is.
    score = run.score
    if score is not None and (not math.isfinite(score) or (score == 0 and math.copysign(1.0, score) < 0)):
        return text
    return None if text == run.render() else text


def run_text(
    stored: str | None, task: str, steps: str | bytes | None, outcome: str | None, score: float | None
) -> str | None:
    """Return a memory's text of its run from what `memories.trajectory` holds and the stored run's columns."""
    if stored is not None:
        return stored or None
    if steps is None:  # no run to render (a row read without it)
        return None
    return Trajectory(task=task, steps=decode_steps(steps), outcome=outcome, score=score).render()
