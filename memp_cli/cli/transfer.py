"""Memories that travel: `memp export` (the export format, Agent Skills folders, a plain SQLite copy) and `memp import`."""

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..choices import BuildPolicy, Outcome, Status
from ..errors import MempError
from .common import (
    FRACTION,
    DbOpt,
    EmbedOpt,
    FormatOpt,
    ScopesOpt,
    handle_errors,
    open_db,
    output_format,
    plain,
    say,
    scope_name,
    utf8_text,
)

# Not $MEMP_SCOPE: an export file says which scope each memory is in, and only an explicit --scope overrides it.
ImportScopeOpt = Annotated[
    str | None,
    typer.Option("--scope", callback=scope_name, show_default=False,
                 help="Put every imported memory in this scope. Default: the scope each had in the file ('default' "
                 "for files from before scopes)."),
]


@handle_errors
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the export to this file (default: stdout).")
    ] = None,
    vectors: Annotated[
        bool, typer.Option("--vectors", help="Include task and keyword vectors (else import embeds the tasks again).")
    ] = False,
    status: Annotated[Status | None, typer.Option(help="Only memories with this status.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only memories of runs that ended this way.")] = None,
    build: Annotated[BuildPolicy | None, typer.Option(help="Only memories built this way.")] = None,
    task_type: Annotated[
        str | None, typer.Option(help="Only memories whose metadata.task_type is this.", callback=utf8_text)
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only memories created at or after this ISO date or time (e.g. 2026-11-01).")
    ] = None,
    skills: Annotated[
        Path | None,
        typer.Option("--skills", help="Write Agent Skills instead: one folder with a SKILL.md per procedure that "
                     "earned it, in this folder."),
    ] = None,
    min_success: Annotated[
        float,
        typer.Option(help="With --skills: the least success estimate (Beta posterior mean) a procedure needs.",
                     callback=FRACTION),
    ] = 0.6,
    sqlite: Annotated[
        Path | None,
        typer.Option("--sqlite", help="Write a consistent plain copy of the whole store (every scope) to this new "
                     "SQLite file."),
    ] = None,
    scope: ScopesOpt = None,
    db: DbOpt = None,
) -> None:
    """Export memories with every version, outcome, keyword and run, as JSON Lines (memp import reads them back)."""
    from ..scopes import read_scopes
    from ..transfer.export import Filters
    from ..transfer.export import export as run_export

    scopes = read_scopes(scope)
    store = open_db(db)
    filters = Filters(status=plain(status), outcome=plain(outcome), build=plain(build), task_type=task_type,
                      since=since, scopes=scopes)
    if sqlite is not None:
        store.transfer.snapshot(sqlite)
        say(f"copied the store to {sqlite}")
        return
    if skills is not None:
        from ..transfer.skills import export_skills

        written = export_skills(store, skills, filters, min_success=min_success)
        say(f"wrote {len(written)} skills to {skills}")
        return
    if output is None:
        counts = run_export(store, sys.stdout.write, filters, vectors=vectors)
    else:
        if output.exists():
            raise MempError(f"{output}: exists already; name a new file")
        # Written beside the target and renamed into place: a failed export leaves no half file.
        partial = output.with_name(output.name + ".partial")
        try:
            # Owner-only, as the store is: an export holds what the store holds.
            with os.fdopen(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "w",
                           encoding="utf-8") as out:
                counts = run_export(store, out.write, filters, vectors=vectors)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    say(f"exported {counts['memories']} memories and {counts['outcomes']} outcomes"
        + (f" to {output}" if output else ""))
    _tell_other_scopes(store, scopes)


def _tell_other_scopes(store: Any, scopes: list[str] | None) -> None:
    """Say which scopes the export left out, so that a backup of one scope is not taken for the whole store."""
    if scopes is None:
        return
    others = sorted(set(store.memories.stats()["scopes"]) - set(scopes))
    if others:
        say(f"left out scopes {', '.join(others)} (--scope NAME for one, --scope '*' for every scope)")


@handle_errors
def import_(
    path: Annotated[
        str | None,
        typer.Argument(help="An export file from memp export, or - for stdin.", metavar="[FILE]", show_default=False),
    ] = None,
    skills: Annotated[
        Path | None,
        typer.Option("--skills", help="Import Agent Skills instead: every folder with a SKILL.md in this folder."),
    ] = None,
    embed_model: EmbedOpt = None,
    scope: ImportScopeOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Import an export file (or Agent Skills) into the store, all or nothing; memories it holds already are kept."""
    from .. import output

    shown = output_format(fmt)
    if (path is None) == (skills is None):
        raise MempError("name an export FILE or --skills DIR (one of them)")
    store = open_db(db)
    if skills is not None:
        from ..transfer.skills import import_skills

        report = import_skills(store, skills, embed_model=embed_model, warn=say, scope=scope)
    else:
        from ..transfer.importer import import_file

        assert path is not None
        if path == "-":
            name, text = "<stdin>", sys.stdin.read()
        else:
            try:
                name, text = path, Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise MempError(f"{path}: cannot read: {exc}") from None
        report = import_file(store, name, text.splitlines(), embed_model=embed_model, warn=say, scope=scope)
    say(f"imported {report.added} memories, kept {report.skipped} already stored"
        + (f", {report.outcomes} outcomes" if report.outcomes else ""))
    output.show_mapping(report.to_dict(), shown, "import")
