"""Building memories: `memp ingest` (trajectory files to memories) and `memp build` (scripts redone with a model)."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..choices import BuildPolicy, InputFormat, Outcome
from ..errors import MempError
from .common import (
    AT_LEAST_ONE,
    FINITE,
    DbOpt,
    EmbedOpt,
    FormatOpt,
    LogOpt,
    ModelOpt,
    ModelOptionsOpt,
    ScopeOpt,
    handle_errors,
    model_calls,
    open_db,
    output_format,
    plain,
    say,
    utf8_text,
)

# Model calls at once; `memp_cli.pool.resolve_jobs` reads $MEMP_JOBS when it is not given and checks it is >= 1.
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        help="Model calls at once (default: $MEMP_JOBS, else 4); a rate limit pauses them all. The offline "
        "distiller needs none.",
        show_default=False,
    ),
]


@handle_errors
def ingest(
    paths: Annotated[
        list[str], typer.Argument(help="Trajectory files, folders (walked), or - for stdin.", metavar="PATH...", show_default=False)
    ],
    build: Annotated[
        BuildPolicy,
        typer.Option(
            "--build",
            "-b",
            help="What each memory keeps: the run, a script, or both (proceduralization, the paper's best).",
        ),
    ] = BuildPolicy.PROCEDURALIZATION,
    input_format: Annotated[
        InputFormat, typer.Option("--format", "-F", help="Input format; auto detects each file's.")
    ] = InputFormat.AUTO,
    outcome: Annotated[
        Outcome | None,
        typer.Option(help="Outcome for runs with none recorded and no score. [default: success]", show_default=False),
    ] = None,
    score: Annotated[float | None, typer.Option(help="Score for runs with none recorded.", callback=FINITE)] = None,
    outcomes_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--outcomes-file",
            help="Outcomes by run id (SWE-bench's {instances: [{instance_id, resolved}]}, a list, a mapping, or "
            "JSONL). Files named outcomes.json(l) among the inputs are used by themselves.",
        ),
    ] = None,
    success_threshold: Annotated[
        float, typer.Option(help="A score counts as success from this value up (WebShop: 1.0 is success).",
                            callback=FINITE)
    ] = 1.0,
    judge_cmd: Annotated[
        str | None,
        typer.Option(help="Shell command that scores each new run: its JSON on stdin, a score 0-1 on stdout."),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="llm model that scores each new run against a rubric.")
    ] = None,
    keep_best: Annotated[
        int | None, typer.Option(help="Keep only the N best-scoring runs of each task.", callback=AT_LEAST_ONE)
    ] = None,
    redact: Annotated[
        list[str] | None,
        typer.Option(help="Extra regex of secrets to mask (repeatable); built-in patterns always apply.", callback=utf8_text),
    ] = None,
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Store text as it is, secrets included.")] = False,
    model: ModelOpt = None,
    option: ModelOptionsOpt = None,
    log: LogOpt = False,
    jobs: JobsOpt = None,
    embed_model: EmbedOpt = None,
    scope: ScopeOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (the default when piped).")] = False,
) -> None:
    """Store trajectories and build memories from them. Re-ingesting the same run is a no-op.

    Every input is read, checked, redacted and judged before anything is stored: a bad line stores nothing.
    """
    from .. import output
    from ..formats import ReadOptions
    from ..ingest import IngestOptions
    from ..ingest import ingest as run_ingest

    if judge_cmd and judge_model:
        raise MempError("use --judge-cmd or --judge-model, not both")
    model_calls(log, option)
    options = IngestOptions(
        build=build.value,
        model=model,
        embed_model=embed_model,
        fmt=input_format.value,
        read=ReadOptions(outcome=plain(outcome), score=score, success_threshold=success_threshold),
        outcomes_files=[str(p) for p in outcomes_file or []],
        redact=not no_redact,
        redact_patterns=list(redact or []),
        judge=_judge(judge_cmd, judge_model),
        keep_best=keep_best,
        scope=scope,
        jobs=jobs,
    )
    fmt = output.resolve_format("json" if as_json else None, ("table", "json"))
    store = open_db(db)
    progress, task_id = _progress()
    with progress:
        report = run_ingest(
            store,
            paths=paths,
            options=options,
            on_total=lambda n: progress.update(task_id, total=n),
            on_progress=lambda n: progress.advance(task_id, n),
            warn=say,
        )
    _tell(report)
    output.show_mapping(report.to_dict(), fmt, "ingest")


def _judge(judge_cmd: str | None, judge_model: str | None) -> Any:
    """Return the judge that scores new runs, or None."""
    if judge_cmd:
        from ..judge import CommandJudge

        return CommandJudge(judge_cmd)
    if judge_model:
        from ..judge import ModelJudge

        return ModelJudge(judge_model)
    return None


def _progress() -> tuple[Any, Any]:
    """Return a progress bar on stderr (shown on a terminal only) and its task."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..output import _console

    progress = Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    return progress, progress.add_task("ingest", total=None)


def _tell(report: Any) -> None:
    """Say on stderr what an ingest did and what is left to do."""
    if report.read and report.added == 0 and report.dropped == 0:
        say(f"all {report.read} trajectories are stored already; nothing to do")
    else:
        kept = f", {report.dropped} dropped by --keep-best" if report.dropped else ""
        say(
            f"{report.added} added, {report.skipped} already stored{kept}, from {report.read} trajectories "
            f"in {report.files} files"
        )
    for elsewhere, count in sorted(report.other_scopes.items()):
        # A run is stored once: not copied into this scope too.
        say(f"{count} of them already stored in scope {elsewhere}, not copied into {report.scope}")
    if report.redacted:
        say(f"masked {report.redacted} secrets")
    if report.held:
        say(
            f"{report.held} memories read like instructions to the next agent and are held back from recall; "
            "see `memp list --status held`, then `memp approve ID`"
        )
    if report.contrasted:
        say(f"{report.contrasted} successful memories now say what they did differently from failed runs of their task")
    if report.offline_scripts:
        say(
            f"{report.offline_scripts} scripts were written by the offline distiller; "
            "run `memp build` with a model to redo them"
        )


@handle_errors
def build(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Redo every script, not only those the offline distiller wrote.")
    ] = False,
    model: ModelOpt = None,
    option: ModelOptionsOpt = None,
    log: LogOpt = False,
    jobs: JobsOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Redo scripts with an llm model: those the offline distiller wrote, or all with --rebuild."""
    from .. import output
    from ..ingest import rebuild_scripts

    model_calls(log, option)
    shown = output_format(fmt)
    report = rebuild_scripts(open_db(db), model=model, everything=rebuild, warn=say, jobs=jobs)
    say(f"{report['rebuilt']} scripts rebuilt with {report['model']}, {report['failed']} left for later")
    if report["held"]:
        say(f"{report['held']} rebuilt scripts read like instructions and are held back; see `memp list --status held`")
    output.show_mapping(report, shown, "build")
