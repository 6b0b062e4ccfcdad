"""The `memp` command line: thin commands in pipeline order, each calling one domain function and rendering it.

Domain modules are imported inside the commands so that `memp --help` stays fast.
"""

# No `from __future__ import annotations` here: Typer would compile and eval every string annotation twice per
# command (inspect.signature, then get_type_hints), ~30 ms of each `memp --help`.
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from .errors import MempError, sqlite_message

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
        except Exception as exc:
            message = sqlite_message(exc)
            if message is None:
                raise
            print(f"memp: error: {message}", file=sys.stderr)
            raise typer.Exit(1) from None

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
    if report.held:
        _say(
            f"{report.held} memories read like instructions to the next agent and are held back from recall; "
            "see `memp list --status held`, then `memp approve ID`"
        )
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
    pending: Annotated[
        bool,
        typer.Option("--pending", help="Redo the pending ones: scripts written offline because no model answered. "
                     "This is what build does by default."),
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
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            "-p",
            help="procedural (task and procedure-key cosines, near-copies collapsed), query (task embedding, "
            "cosine), avefact (mean best keyword similarity), hybrid (full text and vectors, rank-fused) or random.",
        ),
    ] = "procedural",
    min_score: Annotated[
        Optional[float],
        typer.Option("--min-score", help="Drop matches whose task cosine similarity is below this (0 to 1), any policy."),
    ] = None,
    confident: Annotated[
        bool, typer.Option("--confident", help="Nothing unless confident: the calibrated floor (0.5 for memp-minilm).")
    ] = False,
    keywords_model: Annotated[
        Optional[str],
        typer.Option(
            help="llm model that extracts AveFact keywords (default: $MEMP_KEYWORDS_MODEL, else what the store used, "
            "else offline). Changing it extracts the memories' keywords again."
        ),
    ] = None,
    max_tokens: Annotated[
        Optional[int], typer.Option("--max-tokens", help="Return only as many memories as fit in this many tokens.")
    ] = None,
    rank: Annotated[
        str,
        typer.Option(
            help="similarity (cosine), or utility: cosine moved by the memory's success estimate, so memories that "
            "keep failing sink."
        ),
    ] = "similarity",
    embed_model: EmbedOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Recall the memories that best fit TASK. Prints a recall id to report the outcome with later."""
    from . import output
    from .recall import recall_many

    store = _open(db)
    options = dict(
        k=k, policy=policy, min_score=min_score, max_tokens=max_tokens, embed_model=embed_model, rank=rank,
        confident=confident, keywords_model=keywords_model,
    )
    if task == "-":
        fmt = output.resolve_format(fmt or "jsonl")
        if policy in ("query", "hybrid"):
            store.preload_vectors()
        for tasks in _waiting_lines():
            for result in recall_many(store, tasks, **options):
                output.show_recall(result, fmt)
            sys.stdout.flush()
        return
    fmt = output.resolve_format(fmt)
    output.show_recall(recall_many(store, [task], **options)[0], fmt)


# Most tasks recalled together: enough to keep every core embedding, few enough that answers flow steadily.
BATCH_LINES = 64


def _waiting_lines() -> Any:
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


@app.command()
@handle_errors
def update(
    recall_id: Annotated[Optional[str], typer.Option("--recall", "-r", help="The recall id memp recall printed.")] = None,
    memory: Annotated[
        Optional[list[int]], typer.Option("--memory", help="Memory ids used, instead of a recall id (repeatable).")
    ] = None,
    outcome: Annotated[Optional[str], typer.Option("--outcome", "-o", help="success or failure.")] = None,
    score: Annotated[Optional[float], typer.Option(help="A score instead of an outcome (see --success-threshold).")] = None,
    success_threshold: Annotated[float, typer.Option(help="A score counts as success from this value up.")] = 1.0,
    trajectory: Annotated[
        Optional[str], typer.Option("--trajectory", "-t", help="The new run, in any format ingest reads.")
    ] = None,
    policy: Annotated[
        Optional[str],
        typer.Option(
            "--policy",
            "-p",
            help="vanilla (add the new run), validation (add it only if it succeeded), adjustment (validation, and "
            "revise the memories that led to a failure). Default: the store's, else adjustment.",
        ),
    ] = None,
    every: Annotated[
        Optional[int], typer.Option(help="Apply the policy once every N outcomes (the paper's batched update).")
    ] = None,
    flush: Annotated[bool, typer.Option("--flush", help="Apply the policy to every pending outcome now.")] = False,
    build: Annotated[str, typer.Option("--build", "-b", help="How a new run is built into a memory.")] = "proceduralization",
    model: ModelOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Report how a run went: credit or blame the memories it used, and learn from it under the update policy."""
    from . import output
    from . import update as updates

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    store = _open(db)
    if flush:
        result = updates.flush(store, model=model, build=build, warn=_say)
    else:
        run = updates.read_one_trajectory(trajectory) if trajectory else None
        result = updates.report(
            store, recall_id, memory or [], outcome, score, success_threshold, run, policy, model, every, build, _say
        )
        _say(f"{result.outcome}: credited {len(result.credited)} memories under {result.policy}")
    if result.revised:
        _say("revised " + ", ".join(f"memory {m} to v{v}" for m, v in result.revised.items()))
    if result.added:
        _say("added memory " + ", ".join(map(str, result.added)))
    if result.pending:
        _say(f"{result.pending} outcomes wait for the next batch (memp update --flush applies them now)")
    output.show_mapping(result.to_dict(), fmt, "update")


@app.command()
@handle_errors
def history(
    memory_id: Annotated[int, typer.Argument(help="Memory id.")], db: DbOpt = None, fmt: FormatOpt = None
) -> None:
    """Show every change to a memory: built, rebuilt, revised, merged, retired, restored, reverted."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    output.show_history(memory_id, _open(db).history(memory_id), fmt)


@app.command()
@handle_errors
def revert(
    memory_id: Annotated[int, typer.Argument(help="Memory id.")],
    to: Annotated[int, typer.Option("--to", help="The version to restore, as memp history lists it.")],
    db: DbOpt = None,
) -> None:
    """Restore a memory's content as it was at an earlier version (kept as a new version)."""
    from .update import revert as run_revert

    version = run_revert(_open(db), memory_id, to)
    _say(f"memory {memory_id} now holds v{to}'s content as v{version}")


@app.command()
@handle_errors
def prune(
    apply: Annotated[bool, typer.Option("--apply", help="Carry out the plan (default: only show it).")] = False,
    discard: Annotated[
        bool, typer.Option(help="The paper's preset: recalled 3+ times and succeeded under half the time.")
    ] = True,
    confident_below: Annotated[
        Optional[float], typer.Option(help="Retire when the success rate is below this with 95% confidence.")
    ] = None,
    stale_days: Annotated[Optional[int], typer.Option(help="Retire memories not recalled for this many days.")] = None,
    dedupe: Annotated[
        Optional[float], typer.Option(help="Merge memories whose tasks have at least this cosine (e.g. 0.95).")
    ] = None,
    max_memories: Annotated[Optional[int], typer.Option(help="Keep at most this many, the most useful.")] = None,
    purge: Annotated[bool, typer.Option("--purge", help="Delete retired memories for good.")] = False,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Plan which memories to retire, with a reason each; --apply retires them (restorable until --purge)."""
    from . import output
    from .prune import Rules, plan_store

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    store = _open(db)
    if purge:
        _say(f"purged {store.purge_retired()} retired memories")
        return
    rules = Rules(discard=discard, confident_below=confident_below, stale_days=stale_days, dedupe=dedupe,
                  max_memories=max_memories)
    retirements, active = plan_store(store, rules, apply)
    _say(f"{'retired' if apply else 'would retire'} {len(retirements)} of {active} active memories"
         + ("" if apply or not retirements else "; --apply to do it"))
    output.show_retirements(retirements, fmt)


@app.command()
@handle_errors
def restore(memory_id: Annotated[int, typer.Argument(help="Memory id.")], db: DbOpt = None) -> None:
    """Bring a retired memory back into recall."""
    _open(db).restore(memory_id)
    _say(f"memory {memory_id} is active again")


@app.command()
@handle_errors
def approve(memory_id: Annotated[int, typer.Argument(help="Memory id.")], db: DbOpt = None) -> None:
    """Let a held memory (its text read like an instruction to the agent) into recall."""
    was = _open(db).approve(memory_id)
    _say(f"memory {memory_id} approved (it was held for {was})" if was else f"memory {memory_id} was not held")


@app.command()
@handle_errors
def config(
    key: Annotated[Optional[str], typer.Argument(help="update_policy or update_every.")] = None,
    value: Annotated[Optional[str], typer.Argument(help="New value; omit to show.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Show or set the store's defaults: update_policy (vanilla, validation, adjustment), update_every (N)."""
    from . import output
    from .update import POLICIES

    store = _open(db)
    keys = ("update_policy", "update_every")
    if key is not None and key not in keys:
        raise MempError(f"unknown setting {key!r}; settings are {', '.join(keys)}")
    if key is not None and value is not None:
        if key == "update_policy" and value not in POLICIES:
            raise MempError(f"update_policy must be one of {', '.join(POLICIES)}")
        if key == "update_every" and (not value.isdigit() or int(value) < 1):
            raise MempError("update_every must be a whole number from 1")
        store.set_setting(key, value)
    shown = {k: store.get_setting(k) for k in ((key,) if key else keys)}
    output.show_mapping(shown, output.resolve_format(fmt, ("table", "json", "jsonl")), "settings")


@app.command("list")
@handle_errors
def list_(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: trajectory, script, proceduralization.")] = None,
    outcome: Annotated[Optional[str], typer.Option(help="Only success or failure.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only active, held (awaiting approval) or retired.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most this many, newest first.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """List stored memories with their usage counts."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    output.show_memories(_open(db).list_memories(limit, kind, outcome, status), fmt)


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


@app.command("eval")
@handle_errors
def eval_(
    paths: Annotated[list[str], typer.Argument(help="Labelled trajectory files or folders.", show_default=False)],
    label: Annotated[
        str,
        typer.Option("--label", "-l", help="Metadata field to match, e.g. task_type or repo; or outcome."),
    ] = "task_type",
    k: Annotated[int, typer.Option("-k", help="hit@k and MRR look at this many matches.")] = 5,
    policies: Annotated[str, typer.Option(help="Comma-separated policies to compare.")] = "query,avefact,hybrid,random",
    test_share: Annotated[float, typer.Option(help="Share of groups held out as test tasks.")] = 0.2,
    group: Annotated[
        Optional[str],
        typer.Option(help="Metadata field whose groups stay on one side of the split (default: the task text)."),
    ] = None,
    max_test: Annotated[Optional[int], typer.Option(help="Test at most this many tasks.")] = None,
    input_format: Annotated[str, typer.Option("--input-format", "-F", help="As ingest's --format.")] = "auto",
    keywords_model: Annotated[
        Optional[str], typer.Option(help="llm model that extracts AveFact keywords (default: offline).")
    ] = None,
    embed_model: EmbedOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Measure retrieval on labelled trajectories: hit@1, hit@k and MRR of same-label memories, per policy.

    A store is built from the training side in a temporary folder; your own store is not touched.
    """
    from . import output
    from .evaluate import evaluate

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    result = evaluate(
        paths, label, k, [p.strip() for p in policies.split(",") if p.strip()], test_share, group, input_format,
        max_test, embed_model=embed_model, keywords_model=keywords_model,
    )
    _say(f"{result['train']} runs to learn from, {result['test']} test tasks, {result['labels']} labels")
    output.show_eval(result, fmt)


@app.command()
@handle_errors
def check(db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Verify the store: SQLite integrity, and that every memory has its trajectory, vector and history."""
    from . import output

    fmt = output.resolve_format(fmt, ("table", "json", "jsonl"))
    report = _open(db).check()
    output.show_mapping(report, fmt, "memp check")
    if not report["ok"]:
        for problem in report["problems"]:
            _say(problem)
        raise typer.Exit(1)


@app.callback()
def _group() -> None:
    # A callback keeps `memp` a group of commands even when main() registers only one.
    pass


def _command_name(info: Any) -> str:
    return str(info.name or info.callback.__name__.replace("_", "-"))


def main() -> None:
    """Run the CLI, building only the command asked for.

    Typer turns every command's signature into click parameters before it runs one (~40 ms for all of them, on
    every call); an agent calling `memp recall` in a loop needs only that one. `memp --help` and unknown commands
    still see them all.
    """
    name = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    chosen = [info for info in app.registered_commands if _command_name(info) == name]
    if chosen:
        app.registered_commands = chosen
    code: Any = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    _exit_now(code)


def _exit_now(code: Any) -> None:
    """Flush what was written and end the process without tearing the interpreter down.

    Every write memp makes is committed (SQLite) or renamed into place before its command returns, and memp starts no
    threads or exit hooks; unloading numpy, Typer and the model costs a fresh `memp recall` ~20 ms for nothing.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away (`| head`), or the stream was closed: nothing left to deliver
    os._exit(code)
