"""`memp recall`: the memories that fit a new task, one task from the argument or many from stdin."""

import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ..choices import Rank, RecallFormat, RecallPolicy
from ..errors import InputError
from .common import (
    COUNT,
    FRACTION,
    MAX_TOP,
    TOP,
    DbOpt,
    EmbedOpt,
    RecallFormatOpt,
    ScopesOpt,
    handle_errors,
    open_db,
    recall_format,
    utf8_text,
)

# Most tasks recalled together: enough to keep every core embedding, few enough that answers flow steadily.
BATCH_LINES = 64


@handle_errors
def recall(
    task: Annotated[
        str,
        typer.Argument(
            help='The new task, or - to read tasks from stdin: one a line, plain or as JSON ({"task": ..., "k": ..., '
            '"policy": ...}).',
            metavar="TASK",
            callback=utf8_text,
        ),
    ],
    k: Annotated[
        int, typer.Option("-k", "--top", help="How many memories to return at most.", callback=TOP)
    ] = 3,
    policy: Annotated[
        RecallPolicy,
        typer.Option(
            "--policy",
            "-p",
            help="procedural (task and procedure-key cosines with the procedure words left once the task's values are "
            "masked; near-copies collapsed), query (task embedding, cosine), avefact (mean best keyword similarity), "
            "hybrid (full text and vectors, rank-fused) or random.",
        ),
    ] = RecallPolicy.PROCEDURAL,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            help="Drop matches below this (0 to 1): the task cosine, or procedural's own score. Default: the "
            "policy's calibrated floor (procedural 0.25, query and hybrid 0.5, avefact 0.35); 0 turns it off.",
            callback=FRACTION,
        ),
    ] = None,
    confident: Annotated[
        bool, typer.Option("--confident", help="Nothing unless confident: the calibrated floor (0.5 for memp-minilm).")
    ] = False,
    keywords_model: Annotated[
        str | None,
        typer.Option(
            help="llm model that extracts AveFact keywords (default: $MEMP_KEYWORDS_MODEL, else what the store used, "
            "else offline). Changing it extracts the memories' keywords again."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Return only as many memories as fit in this many tokens, and cap the prompt block at it. Default: "
            "no limit on the memories; the prompt block capped at 4,000 (lowest-ranked memories left out first, then "
            "the end of a long one cut, said in the block); 0: no cap.",
            callback=COUNT,
        ),
    ] = None,
    rank: Annotated[
        Rank,
        typer.Option(
            help="similarity (cosine), or utility: cosine moved by the memory's success estimate, so memories that "
            "keep failing sink."
        ),
    ] = Rank.SIMILARITY,
    embed_model: EmbedOpt = None,
    scope: ScopesOpt = None,
    db: DbOpt = None,
    fmt: RecallFormatOpt = None,
) -> None:
    """Recall the memories that best fit TASK. Prints a recall id to report the outcome with later.

    With -, each stdin line is a task, or a JSON object {"task": ..., "k": ..., "policy": ...} whose k and policy
    override the options; the answers come one a line, in order. A JSON line memp cannot use (bad JSON, an unknown
    key, a bad k or policy) stops the run with an error naming it (stdin:N) after the lines before it are answered,
    and exits 1.
    """
    from .. import output
    from ..recall import recall_many
    from ..scopes import read_scopes

    scopes = read_scopes(scope)
    store = open_db(db)
    cap = output.DEFAULT_PROMPT_TOKENS if max_tokens is None else max_tokens or None
    max_tokens = max_tokens or None  # 0: no cap, so no limit on what recall returns either

    def answer(tasks: list[str], top: int = k, chosen: str = policy.value) -> list[Any]:
        return recall_many(
            store, tasks=tasks, k=top, policy=chosen, min_score=min_score, max_tokens=max_tokens,
            embed_model=embed_model, rank=rank.value, confident=confident, keywords_model=keywords_model,
            scopes=scopes,
        )

    if task == "-":
        shown = recall_format(fmt, RecallFormat.JSONL)
        if policy in (RecallPolicy.PROCEDURAL, RecallPolicy.QUERY, RecallPolicy.HYBRID):
            store.vectors.preload()
        for lines in waiting_lines():
            # A bad line stops the run after the lines before it are answered (they may be awaited already).
            asks, error = parse_lines(lines, k, policy.value)
            for (top, chosen), tasks in runs_of(asks):
                for result in answer(tasks, top, chosen):
                    output.show_recall(result, shown, cap)
            sys.stdout.flush()
            if error is not None:
                raise error
        return
    output.show_recall(answer([task])[0], recall_format(fmt), cap)


def parse_lines(
    lines: list[tuple[int, str]], k: int, policy: str
) -> tuple[list[tuple[str, int, str]], InputError | None]:
    """Return (task, k, policy) for each line up to the first bad one, and that line's InputError (else None).

    A line whose first character is `{` is a JSON object with "task" and optionally "k" and "policy" (the options'
    values otherwise); any other line is a task as it is.
    """
    import json

    asks = []
    for number, line in lines:
        if not line.lstrip().startswith("{"):
            asks.append((line, k, policy))
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            return asks, InputError("stdin", number, f"not a JSON object: {exc.msg}")
        problem = _problem(data)
        if problem:
            return asks, InputError("stdin", number, problem)
        asks.append((data["task"], data.get("k", k), data.get("policy", policy)))
    return asks, None


def _problem(data: Any) -> str | None:
    """Return what is wrong with one JSON line of `memp recall -`, None when it is a good ask."""
    if not isinstance(data, dict):
        return "not a JSON object"
    unknown = sorted(set(data) - {"task", "k", "policy"})
    if unknown:
        return f"unknown keys {', '.join(unknown)} (a line takes task, k and policy)"
    if not isinstance(data.get("task"), str) or not data["task"].strip():
        return '"task" must be a non-empty string'
    try:
        data["task"].encode("utf-8")
    except UnicodeEncodeError:
        return '"task" holds a lone surrogate (\\ud800-\\udfff), which is not text'
    top = data.get("k", 1)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        return f'"k" must be a whole number from 1 to {MAX_TOP}'
    if "policy" in data and data["policy"] not in {p.value for p in RecallPolicy}:
        return f'"policy" must be one of {", ".join(p.value for p in RecallPolicy)}'
    return None


def runs_of(asks: list[tuple[str, int, str]]) -> Iterator[tuple[tuple[int, str], list[str]]]:
    """Yield ((k, policy), tasks) for each run of consecutive asks that share them, in order."""
    from itertools import groupby

    for key, group in groupby(asks, key=lambda ask: (ask[1], ask[2])):
        yield key, [ask[0] for ask in group]


def waiting_lines() -> Iterator[list[tuple[int, str]]]:
    """Yield the non-blank lines of stdin, numbered from 1, in groups: what has arrived, at most BATCH_LINES at a time.

    An agent that writes one task and waits gets its answer at once; a file or a pipe full of tasks is recalled
    in groups, which embed side by side on every core and are logged in one write.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # stdin is not a file (tests, embedding hosts): read it line by line
    if fd is None:
        lines = [(n, line) for n, line in enumerate(sys.stdin, 1) if line.strip()]
        for start in range(0, len(lines), BATCH_LINES):
            yield lines[start : start + BATCH_LINES]
        return
    encoding = sys.stdin.encoding or "utf-8"
    pending = b""
    seen = 0
    while True:
        chunk = os.read(fd, 1 << 16)  # returns what has arrived (one line from a terminal), b"" at the end
        pending += chunk
        if chunk:
            *complete, pending = pending.split(b"\n")  # the last piece may be a line still arriving
        else:
            complete, pending = pending.split(b"\n"), b""
        numbered = enumerate((line.decode(encoding, "replace") for line in complete), seen + 1)
        seen += len(complete)
        lines = [(n, text) for n, text in numbered if text.strip()]
        for start in range(0, len(lines), BATCH_LINES):
            yield lines[start : start + BATCH_LINES]
        if not chunk:
            return
