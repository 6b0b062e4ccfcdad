"""`memp migrate`: copy a whole store to another backend, SQLite to PostgreSQL and back."""

from typing import Annotated

import typer

from .common import DbOpt, FormatOpt, handle_errors, open_db, output_format, say


@handle_errors
def migrate(
    to: Annotated[
        str, typer.Option("--to", help="The store to copy into: a new file, or a postgresql:// URL (its --schema "
                          "empty, or holding an unfinished copy of this store).", show_default=False)
    ],
    source: Annotated[
        str | None, typer.Option("--from", help="The store to copy. Default: --db.", show_default=False)
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Rows a transaction.", min=1)] = 2_000,
    target_schema: Annotated[
        str | None,
        typer.Option("--to-schema", help="Schema of a postgresql:// --to. Default: the --schema of the source.",
                     show_default=False),
    ] = None,
    fmt: FormatOpt = None,
    db: DbOpt = None,
) -> None:
    """Copy every memory, version, run, cached script, recall, outcome, keyword, setting and vector to another store.

    Ids are kept and vectors copied bit for bit. Run it again after an interruption: it goes on from the last batch
    copied. Rows changed in the source after they were copied are not copied again.
    """
    from .. import output
    from ..store import open_store
    from ..transfer.migrate import migrate as run_migrate

    origin = open_db(source if source is not None else db)
    target = open_store(to, target_schema)
    try:
        report = run_migrate(origin, target, batch=batch, say=say)
    finally:
        target.close()
    say(f"copied {report.source} to {report.target}: {report.memories} memories")
    output.show_mapping(report.to_dict(), output_format(fmt), "memp migrate")
