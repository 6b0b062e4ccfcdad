"""The `memp` command line: thin commands in pipeline order, each calling one domain function and rendering it.

Domain modules are imported inside the commands so that `memp --help` stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from .errors import MempError

app = typer.Typer(
    name="memp",
    help=(
        "Procedural memory for LLM agents: ingest past trajectories, recall the procedures that fit a new task, "
        "and report how it went."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

DbOpt = Annotated[
    Optional[Path],
    typer.Option("--db", help="Store file. Default: $MEMP_DB, else memp.db in the user data dir.", show_default=False),
]
FormatOpt = Annotated[
    Optional[str],
    typer.Option(
        "--format", "-f", help="table, json, jsonl or prompt. Default: table on a terminal, json when piped."
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", help="llm chat model for scripts. Default: $MEMP_MODEL, else llm's default model."
    ),
]
EmbedOpt = Annotated[
    Optional[str],
    typer.Option(
        "--embed-model",
        help="llm embedding model. Default: $MEMP_EMBED_MODEL, else the model the store was built with, "
        "else memp's embedded memp-minilm.",
    ),
]


def _say(message: str) -> None:
    """Write a message for people to stderr."""
    print(f"memp: {message}", file=sys.stderr)


def handle_errors(fn: F) -> F:
    """Turn MempError into a one-line message and its exit status; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MempError as exc:
            print(f"memp: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("memp: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # A reader such as `head` closed the pipe: not an error of ours.
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


def _open(db: Path | None) -> Any:
    from .store import open_store

    return open_store(db)


@app.command()
@handle_errors
def ingest(
    paths: Annotated[
        list[str], typer.Argument(help="Trajectory files, folders (walked), or - for stdin.", show_default=False)
    ],
    build: Annotated[
        str,
        typer.Option(
            "--build",
            "-b",
            help="What each memory keeps: trajectory, script, or proceduralization (both; the paper's best).",
        ),
    ] = "proceduralization",
    input_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-F",
            help="Input format: auto (detected per file), native, claude-code, openai-chat, sharegpt, memp-chat, "
            "react, swe-agent.",
        ),
    ] = "auto",
    outcome: Annotated[
        Optional[str],
        typer.Option(help="Outcome for runs with none recorded and no score: success or failure. [default: success]"),
    ] = None,
    score: Annotated[Optional[float], typer.Option(help="Score for runs with none recorded.")] = None,
    outcomes_file: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--outcomes-file",
            help="Outcomes by run id (SWE-bench's {instances: [{instance_id, resolved}]}, a list, a mapping, or "
            "JSONL). Files named outcomes.json(l) among the inputs are used by themselves.",
        ),
    ] = None,
    success_threshold: Annotated[
        float, typer.Option(help="A score counts as success from this value up (WebShop: 1.0 is success).")
    ] = 1.0,
    judge_cmd: Annotated[
        Optional[str],
        typer.Option(help="Shell command that scores each new run: its JSON on stdin, a score 0-1 on stdout."),
    ] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="llm model that scores each new run against a rubric.")] = None,
    keep_best: Annotated[
        Optional[int], typer.Option(help="Keep only the N best-scoring runs of each task.")
    ] = None,
    redact: Annotated[
        Optional[list[str]], typer.Option(help="Extra regex of secrets to mask (repeatable); built-in patterns always apply.")
    ] = None,
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Store text as it is, secrets included.")] = False,
    model: ModelOpt = None,
    embed_model: EmbedOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (the default when piped).")] = False,
) -> None:
    """Store trajectories and build memories from them. Re-ingesting the same run is a no-op.

    Every input is read, checked, redacted and judged before anything is stored: a bad line stores nothing.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import output
    from .formats import ReadOptions
    from .ingest import IngestOptions
    from .ingest import ingest as run_ingest

    if judge_cmd and judge_model:
        raise MempError("use --judge-cmd or --judge-model, not both")
    judge = None
    if judge_cmd:
        from .judge import CommandJudge

        judge = CommandJudge(judge_cmd)
    elif judge_model:
        from .judge import ModelJudge

        judge = ModelJudge(judge_model)
    options = IngestOptions(
        build=build,
        model=model,
        embed_model=embed_model,
        fmt=input_format,
        read=ReadOptions(outcome=outcome, score=score, success_threshold=success_threshold),
        outcomes_files=[str(p) for p in outcomes_file or []],
        redact=not no_redact,
        redact_patterns=list(redact or []),
        judge=judge,
        keep_best=keep_best,
    )
    fmt = output.resolve_format("json" if as_json else None, ("table", "json"))
    store = _open(db)
    progress = Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output._console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task_id = progress.add_task("ingest", total=None)
    with progress:
        report = run_ingest(
            store,
            paths,
            options,
            on_total=lambda n: progress.update(task_id, total=n),
            on_progress=lambda n: progress.advance(task_id, n),
            warn=_say,
        )
    if report.read and report.added == 0 and report.dropped == 0:
        _say(f"all {report.read} trajectories are stored already; nothing to do")
    else:
        kept = f", {report.dropped} dropped by --keep-best" if report.dropped else ""
        _say(
            f"{report.added} added, {report.skipped} already stored{kept}, from {report.read} trajectories "
            f"in {report.files} files"
        )
    if report.redacted:
        _say(f"masked {report.redacted} secrets")
    if report.offline_scripts:
        _say(
            f"{report.offline_scripts} scripts were written by the offline distiller; "
            "run `memp build` with a model to redo them"
        )
    output.show_mapping(report.to_dict(), fmt, "ingest")


@app.command()
@handle_errors
def build(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Redo every script, not only those the offline distiller wrote.")
    ] = False,
    model: ModelOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Redo scripts with an llm model: those written offline, or all with --rebuild."""
    from . import output
    from .ingest import rebuild_scripts

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    report = rebuild_scripts(_open(db), model=model, everything=rebuild, warn=_say)
    _say(f"{report['rebuilt']} scripts rebuilt with {report['model']}, {report['failed']} left for later")
    output.show_mapping(report, fmt, "build")


@app.command()
@handle_errors
def recall(
    task: Annotated[str, typer.Argument(help="The new task, or - to read one task per line from stdin.")],
    k: Annotated[int, typer.Option("-k", "--top", help="How many memories to return at most.")] = 3,
    policy: Annotated[str, typer.Option("--policy", "-p", help="query (task embedding, cosine) or random.")] = "query",
    min_score: Annotated[
        Optional[float], typer.Option("--min-score", help="Drop matches below this cosine similarity (0 to 1).")
    ] = None,
    max_tokens: Annotated[
        Optional[int], typer.Option("--max-tokens", help="Return only as many memories as fit in this many tokens.")
    ] = None,
    embed_model: EmbedOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Recall the memories that best fit TASK. Prints a recall id to report the outcome with later."""
    from . import output
    from .recall import recall as run_recall

    store = _open(db)
    if task == "-":
        fmt = output.resolve_format(fmt or "jsonl")
        for line in sys.stdin:
            if line.strip():
                result = run_recall(store, line, k, policy, min_score, max_tokens, embed_model)
                output.show_recall(result, fmt)
        return
    fmt = output.resolve_format(fmt)
    output.show_recall(run_recall(store, task, k, policy, min_score, max_tokens, embed_model), fmt)


@app.command("list")
@handle_errors
def list_(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: trajectory, script, proceduralization.")] = None,
    outcome: Annotated[Optional[str], typer.Option(help="Only success or failure.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most this many, newest first.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """List stored memories with their usage counts."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    output.show_memories(_open(db).list_memories(limit, kind, outcome), fmt)


@app.command()
@handle_errors
def show(
    memory_id: Annotated[int, typer.Argument(help="Memory id, as list and recall print it.")],
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Show one memory in full: script, example run, provenance and usage."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    output.show_memory(_open(db).get_memory(memory_id), fmt)


@app.command()
@handle_errors
def stats(db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Count what is stored: trajectories, memories by kind, outcome, model and status."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    output.show_mapping(_open(db).stats(), fmt, "memp store")


def main() -> None:
    """Run the CLI."""
    app()
