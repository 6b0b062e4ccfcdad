"""Looking after the store: list, show, stats, check, prune, restore, approve and config."""

from typing import Annotated

import typer

from ..choices import BuildPolicy, Outcome, Setting, Status, UpdatePolicy, values
from .common import (
    ABOVE_ZERO_FRACTION,
    COUNT,
    FRACTION,
    MAX_INT,
    DbOpt,
    FormatOpt,
    MemoryIdArg,
    ScopesOpt,
    handle_errors,
    open_db,
    output_format,
    plain,
    say,
)

# How many memories `memp list` shows on a terminal at a time.
PAGE = 50


@handle_errors
def list_(
    build: Annotated[BuildPolicy | None, typer.Option(help="Only memories built this way.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only memories of runs that ended this way.")] = None,
    status: Annotated[
        Status | None, typer.Option(help="Only active, held (awaiting approval) or retired memories.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", help=f"At most this many, newest first. Default: {PAGE} as a table, all when "
                     "printing JSON.", show_default=False, callback=COUNT),
    ] = None,
    offset: Annotated[
        int, typer.Option("--offset", help="Skip this many of the newest first (the next page).", callback=COUNT)
    ] = 0,
    scope: ScopesOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """List stored memories with their usage counts, a page at a time on a terminal."""
    from .. import output
    from ..scopes import read_scopes

    shown = output_format(fmt)
    scopes = read_scopes(scope)
    # A table is read by a person: a page of it. JSON is read by a program: all of it, unless it asks for less.
    page = limit if limit is not None else (PAGE if shown == "table" else None)
    memories = open_db(db).memories.list(limit=None if page is None else page + 1, build=plain(build),
                                         outcome=plain(outcome), status=plain(status), offset=offset, scopes=scopes)
    more = page is not None and len(memories) > page
    output.show_memories(memories[:page], shown)
    if more and page is not None and shown == "table":
        say(f"showing {offset + 1}-{offset + page}; --offset {offset + page} for the next page, --limit N for more")


@handle_errors
def show(memory_id: MemoryIdArg, db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Show one memory in full: script, example run, provenance and usage."""
    from .. import output

    shown = output_format(fmt)
    output.show_memory(open_db(db).memories.get(memory_id), shown)


@handle_errors
def stats(db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Count what is stored: trajectories, memories by build policy, outcome, model and status, active ones by scope."""
    from .. import output

    shown = output_format(fmt)
    output.show_mapping(open_db(db).memories.stats(), shown, "memp store")


@handle_errors
def check(db: DbOpt = None, fmt: FormatOpt = None) -> None:
    """Verify the store: SQLite integrity, every memory's trajectory, vector and history, merges and outcome credit."""
    from .. import output

    shown = output_format(fmt)
    report = open_db(db).check()
    output.show_mapping(report, shown, "memp check")
    if not report["ok"]:
        for problem in report["problems"]:
            say(problem)
        raise typer.Exit(1)


@handle_errors
def prune(
    apply: Annotated[bool, typer.Option("--apply", help="Carry out the plan (default: only show it).")] = False,
    discard: Annotated[
        bool, typer.Option(help="The paper's preset: recalled 3+ times and succeeded under half the time.")
    ] = True,
    confident_below: Annotated[
        float | None,
        typer.Option(help="Retire when the success rate is below this with 95% confidence.", callback=FRACTION),
    ] = None,
    stale_days: Annotated[
        int | None, typer.Option(help="Retire memories not recalled for this many days.", callback=COUNT)
    ] = None,
    dedupe: Annotated[
        float | None,
        typer.Option(help="Merge memories whose tasks have at least this cosine (e.g. 0.95).",
                     callback=ABOVE_ZERO_FRACTION),
    ] = None,
    max_memories: Annotated[
        int | None, typer.Option(help="Keep at most this many, the most useful.", callback=COUNT)
    ] = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Delete retired memories for good (of every scope).")
    ] = False,
    scope: ScopesOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Plan which memories to retire, with a reason each; --apply retires them (restorable until --purge).

    The rules look at the memories of the scopes given only, and never merge duplicates across scopes.
    """
    from .. import output
    from ..prune import Rules, plan_store
    from ..scopes import read_scopes

    shown = output_format(fmt)
    scopes = read_scopes(scope)
    store = open_db(db)
    if purge:
        say(f"purged {store.memories.purge_retired()} retired memories")
        return
    rules = Rules(discard=discard, confident_below=confident_below, stale_days=stale_days, dedupe=dedupe,
                  max_memories=max_memories)
    retirements, active = plan_store(store, rules=rules, apply=apply, scopes=scopes)
    say(f"{'retired' if apply else 'would retire'} {len(retirements)} of {active} active memories"
        + ("" if apply or not retirements else "; --apply to do it"))
    output.show_retirements(retirements, shown)


@handle_errors
def restore(memory_id: MemoryIdArg, db: DbOpt = None) -> None:
    """Bring a retired memory back into recall."""
    open_db(db).memories.restore(memory_id)
    say(f"memory {memory_id} is active again")


@handle_errors
def approve(memory_id: MemoryIdArg, db: DbOpt = None) -> None:
    """Let a held memory (its text read like an instruction to the agent) into recall."""
    was = open_db(db).memories.approve(memory_id)
    say(f"memory {memory_id} approved (it was held for {was})" if was else f"memory {memory_id} was not held")


def _setting_value(ctx: typer.Context, raw: str | None) -> str | None:
    """Return a setting's new value once it suits the setting named before it; else a usage error (exit 2)."""
    key = ctx.params.get("key")
    if raw is None or key is None:
        return raw
    if key == Setting.UPDATE_POLICY and raw not in values(UpdatePolicy):
        raise typer.BadParameter(f"update_policy must be one of {', '.join(values(UpdatePolicy))}, not {raw!r}")
    if key == Setting.UPDATE_EVERY and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_INT):
        raise typer.BadParameter(f"update_every must be a whole number from 1, not {raw!r}")
    return raw


@handle_errors
def config(
    key: Annotated[Setting | None, typer.Argument(help="update_policy or update_every; omit to show both.", metavar="KEY", show_default=False)]
    = None,
    value: Annotated[
        str | None,
        typer.Argument(help="New value; omit to show.", metavar="VALUE", callback=_setting_value, show_default=False),
    ] = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Show or set the store's defaults: update_policy (vanilla, validation, adjustment), update_every (N)."""
    from .. import output

    shown = output_format(fmt)
    store = open_db(db)
    if key is not None and value is not None:
        store.settings.set(key.value, value)
    keys = (key,) if key is not None else tuple(Setting)
    output.show_mapping({k.value: store.settings.get(k.value) for k in keys}, shown, "settings")
