"""Learning from outcomes: `memp update`, and a memory's versions with `memp history` and `memp revert`."""

from typing import Annotated

import typer

from ..choices import BuildPolicy, Report, UpdatePolicy
from .common import (
    AT_LEAST_ONE,
    FINITE,
    ID,
    DbOpt,
    FormatOpt,
    LogOpt,
    MemoryIdArg,
    ModelOpt,
    UpdateModelOptionsOpt,
    handle_errors,
    model_calls,
    open_db,
    output_format,
    plain,
    say,
    scope_name,
    utf8_text,
)

UpdateScopeOpt = Annotated[
    str | None,
    typer.Option("--scope", envvar="MEMP_SCOPE", callback=scope_name, show_default=False,
                 help="Scope the new run (--trajectory) goes in. Default: the scope of the best memory it used, else "
                 "'default'."),
]


@handle_errors
def update(
    recall_id: Annotated[
        str | None, typer.Option("--recall", "-r", help="The recall id memp recall printed.", callback=utf8_text)
    ] = None,
    memory: Annotated[
        list[int] | None,
        typer.Option("--memory", help="Memory ids used, instead of a recall id (repeatable; each counts once).",
                     callback=ID),
    ] = None,
    outcome: Annotated[Report | None, typer.Option("--outcome", "-o", help="How the run went.")] = None,
    score: Annotated[
        float | None, typer.Option(help="A score instead of an outcome (see --success-threshold).", callback=FINITE)
    ] = None,
    success_threshold: Annotated[
        float, typer.Option(help="A score counts as success from this value up.", callback=FINITE)
    ] = 1.0,
    trajectory: Annotated[
        str | None, typer.Option("--trajectory", "-t", help="The new run, in any format ingest reads.")
    ] = None,
    policy: Annotated[
        UpdatePolicy | None,
        typer.Option(
            "--policy",
            "-p",
            help="vanilla (add the new run), validation (add it only if it succeeded), adjustment (validation, and "
            "revise the memories that led to a failure). Default: the store's, else adjustment.",
            show_default=False,
        ),
    ] = None,
    every: Annotated[
        int | None,
        typer.Option(help="Apply the policy once every N outcomes (the paper's batched update).", callback=AT_LEAST_ONE),
    ] = None,
    flush: Annotated[bool, typer.Option("--flush", help="Apply the policy to every pending outcome now.")] = False,
    build: Annotated[
        BuildPolicy, typer.Option("--build", "-b", help="How a new run is built into a memory.")
    ] = BuildPolicy.PROCEDURALIZATION,
    model: ModelOpt = None,
    option: UpdateModelOptionsOpt = None,
    log: LogOpt = False,
    scope: UpdateScopeOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Report how a run went: credit or blame the memories it used, and learn from it under the update policy."""
    from .. import output
    from .. import update as updates

    model_calls(log, option)
    shown = output_format(fmt)
    store = open_db(db)
    if flush:
        result = updates.flush(store, model=model, build=build.value, warn=say)
    else:
        run = updates.read_one_trajectory(trajectory) if trajectory else None
        result = updates.report(
            store, recall_id=recall_id, memory_ids=memory or [], outcome=plain(outcome), score=score,
            success_threshold=success_threshold, trajectory=run, policy=plain(policy), model=model, every=every,
            build=build.value, warn=say, scope=scope,
        )
        say(f"{result.outcome}: credited {len(result.credited)} memories under {result.policy}")
    if result.revised:
        say("revised " + ", ".join(f"memory {m} to v{v}" for m, v in result.revised.items()))
    if result.added:
        say("added memory " + ", ".join(map(str, result.added)))
    if result.pending:
        say(f"{result.pending} outcomes wait for the next batch (memp update --flush applies them now)")
    output.show_mapping(result.to_dict(), shown, "update")


@handle_errors
def history(memory_id: MemoryIdArg, db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Show every change to a memory: built, rebuilt, revised, merged, retired, restored, reverted."""
    from .. import output

    shown = output_format(fmt)
    output.show_history(memory_id, open_db(db).memories.history(memory_id), shown)


@handle_errors
def revert(
    memory_id: MemoryIdArg,
    to: Annotated[int, typer.Option("--to", help="The version to restore, as memp history lists it.", callback=ID)],
    db: DbOpt = None,
) -> None:
    """Restore a memory's content as it was at an earlier version (kept as a new version)."""
    from ..update import revert as run_revert

    version = run_revert(open_db(db), memory_id=memory_id, version=to)
    say(f"memory {memory_id} now holds v{to}'s content as v{version}")
