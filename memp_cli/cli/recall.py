"""`memp recall`: the memories that fit a new task, one task from the argument or many from stdin."""

import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ..choices import Rank, RecallFormat, RecallPolicy
from .common import DbOpt, EmbedOpt, RecallFormatOpt, handle_errors, open_db, recall_format

# Most tasks recalled together: enough to keep every core embedding, few enough that answers flow steadily.
BATCH_LINES = 64


@handle_errors
def recall(
    task: Annotated[str, typer.Argument(help="The new task, or - to read one task per line from stdin.", metavar="TASK")],
    k: Annotated[int, typer.Option("-k", "--top", help="How many memories to return at most.")] = 3,
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
        int | None, typer.Option("--max-tokens", help="Return only as many memories as fit in this many tokens.")
    ] = None,
    rank: Annotated[
        Rank,
        typer.Option(
            help="similarity (cosine), or utility: cosine moved by the memory's success estimate, so memories that "
            "keep failing sink."
        ),
    ] = Rank.SIMILARITY,
    embed_model: EmbedOpt = None,
    db: DbOpt = None,
    fmt: RecallFormatOpt = None,
) -> None:
    """Recall the memories that best fit TASK. Prints a recall id to report the outcome with later."""
    from .. import output
    from ..recall import recall_many

    store = open_db(db)

    def answer(tasks: list[str]) -> list[Any]:
        return recall_many(
            store, tasks=tasks, k=k, policy=policy.value, min_score=min_score, max_tokens=max_tokens,
            embed_model=embed_model, rank=rank.value, confident=confident, keywords_model=keywords_model,
        )

    if task == "-":
        shown = recall_format(fmt, RecallFormat.JSONL)
        if policy in (RecallPolicy.PROCEDURAL, RecallPolicy.QUERY, RecallPolicy.HYBRID):
            store.vectors.preload()
        for tasks in waiting_lines():
            for result in answer(tasks):
                output.show_recall(result, shown)
            sys.stdout.flush()
        return
    output.show_recall(answer([task])[0], recall_format(fmt))


def waiting_lines() -> Iterator[list[str]]:
    """Yield the non-blank lines of stdin in groups: whatever has arrived, at most BATCH_LINES at a time.

    An agent that writes one task and waits gets its answer at once; a file or a pipe full of tasks is recalled
    in groups, which embed side by side on every core and are logged in one write.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # stdin is not a file (tests, embedding hosts): read it line by line
    if fd is None:
        lines = [line for line in sys.stdin if line.strip()]
        for start in range(0, len(lines), BATCH_LINES):
            yield lines[start : start + BATCH_LINES]
        return
    encoding = sys.stdin.encoding or "utf-8"
    pending = b""
    while True:
        chunk = os.read(fd, 1 << 16)  # returns what has arrived (one line from a terminal), b"" at the end
        pending += chunk
        if chunk:
            *complete, pending = pending.split(b"\n")  # the last piece may be a line still arriving
        else:
            complete, pending = pending.split(b"\n"), b""
        lines = [text for text in (line.decode(encoding, "replace") for line in complete) if text.strip()]
        for start in range(0, len(lines), BATCH_LINES):
            yield lines[start : start + BATCH_LINES]
        if not chunk:
            return
