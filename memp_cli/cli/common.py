"""What every command shares: the common options, error handling at the edge, messages, and opening the store."""

# No `from __future__ import annotations` in the CLI: Typer would compile and eval every string annotation twice per
# command (inspect.signature, then get_type_hints), ~30 ms of each `memp --help`.
import functools
import math
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
import typer.core
import typer.main

from ..choices import OutputFormat, RecallFormat, values
from ..errors import MempError, printable, sqlite_message

F = TypeVar("F", bound=Callable[..., Any])

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Store file, or a postgresql:// URL. Default: $MEMP_DB, else memp.db in the user data dir.",
        show_default=False,
    ),
]
# Every command that takes --db takes --schema too: cli/__init__.py adds it where a command has --db.
SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", help="PostgreSQL schema of the store (with a postgresql:// --db). Default: "
                 "$MEMP_SCHEMA, else memp.", show_default=False, metavar="NAME"),
]
FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option("--format", "-f", help="Output format. Default: table on a terminal, json when piped.",
                 show_default=False),
]
RecallFormatOpt = Annotated[
    RecallFormat | None,
    typer.Option(
        "--format", "-f",
        help="Output format; prompt is a block to paste into an agent's prompt. Default: table on a terminal, json "
        "when piped (jsonl for -).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="llm chat model for scripts. Default: $MEMP_MODEL, else llm's default model."
    ),
]
EmbedOpt = Annotated[
    str | None,
    typer.Option(
        "--embed-model",
        help="llm embedding model. Default: $MEMP_EMBED_MODEL, else the model the store was built with, "
        "else memp's embedded memp-minilm.",
    ),
]
LogOpt = Annotated[
    bool,
    typer.Option("--log", help="Log memp's model calls to llm's log database (llm logs shows them). Also "
                 "$MEMP_LOG=1, unless llm logs off."),
]
# Typer takes no list of tuples; the click it ships (typer.core's) reads two values an option, as llm's -o does.
_KEY_VALUE = typer.core.types.Tuple([str, str])
ModelOptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="A model option as KEY VALUE, e.g. -o temperature 0.2 (repeatable).",
                 click_type=_KEY_VALUE, metavar="KEY VALUE", show_default=False),
]
# `memp update -o` is --outcome: there the long name only.
UpdateModelOptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--option", help="A model option as KEY VALUE, e.g. --option temperature 0.2 (repeatable).",
                 click_type=_KEY_VALUE, metavar="KEY VALUE", show_default=False),
]


def scope_name(value: str | None) -> str | None:
    """Return a --scope value checked as a scope name (bad usage, exit 2, when it is not one)."""
    from ..errors import ScopeError
    from ..scopes import check

    try:
        return None if value is None else check(value)
    except ScopeError as exc:
        raise typer.BadParameter(str(exc)) from None


def _scope_names(values_: list[str] | None) -> list[str] | None:
    """Return --scope values checked as scope names, '*' (every scope) allowed."""
    from ..scopes import ALL

    return None if values_ is None else [v if v == ALL else str(scope_name(v)) for v in values_]


# Where a write goes (ingest, update --trajectory, import).
ScopeOpt = Annotated[
    str | None,
    typer.Option("--scope", envvar="MEMP_SCOPE", callback=scope_name, show_default=False,
                 help="Scope (a namespace: a project, a team) the new memories go in. Default: 'default'."),
]
# What a read searches (recall, list, prune, export). $MEMP_SCOPE is read by `scopes.read_scopes`, not by click,
# which would split a variable holding spaces into several scopes.
ScopesOpt = Annotated[
    list[str] | None,
    typer.Option("--scope", callback=_scope_names, show_default=False,
                 help="Scope to search (repeatable); '*' for every scope. Default: $MEMP_SCOPE, else 'default'."),
]


def model_calls(log: bool, options: list[Any] | None) -> None:
    """Set how this command calls models: logged or not, and with which options (KEY VALUE pairs)."""
    from .. import models

    models.configure(log=log, options=[(str(k), str(v)) for k, v in options or []])


# -- validating option values (a bad one is a usage error: exit 2 with the usage line) --------------------------------

# SQLite keeps integers in 64 bits: a larger id or count cannot be looked up, only refused.
MAX_INT = 2**63 - 1


def number_check(
    low: float | None = None, high: float | None = None, *, above: bool = False, whole: bool = False
) -> Callable[[Any], Any]:
    """Return a Typer callback refusing NaN, infinities and values outside [low, high] (above: low itself too).

    Whole numbers are held to 64 bits as well. It takes a value, None (an option not given) or a list of values.
    """
    def shown(bound: float) -> str:
        return str(int(bound)) if whole else f"{bound:g}"

    lowest = low if low is not None else (-MAX_INT - 1 if whole else None)
    highest = high if high is not None else (MAX_INT if whole else None)

    def check(value: Any) -> Any:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is None:
                continue
            if not math.isfinite(item):
                raise typer.BadParameter(f"{item} is not a number")
            if lowest is not None and (item < lowest or above and item == lowest):
                raise typer.BadParameter(f"{item} is not {'above' if above else 'at least'} {shown(lowest)}")
            if highest is not None and item > highest:
                raise typer.BadParameter(f"{item} is above {shown(highest)}")
        return value

    return check


FINITE = number_check()
FRACTION = number_check(0.0, 1.0)  # a score or cosine threshold, 0 to 1
ABOVE_ZERO_FRACTION = number_check(0.0, 1.0, above=True)  # a threshold for which 0 means nothing, e.g. --dedupe
COUNT = number_check(0, whole=True)  # 0 or more
AT_LEAST_ONE = number_check(1, whole=True)
# Recall widens its search to a multiple of k before ranking; any k a store could answer stays far inside 64 bits.
MAX_TOP = 2**31 - 1
TOP = number_check(1, MAX_TOP, whole=True)
ID = number_check(1, whole=True)


def utf8_text(value: Any) -> Any:
    """Return the value (a string or a list of them) once it is UTF-8 text, else a usage error.

    Arguments that are not UTF-8 reach Python as lone surrogates, which the store cannot hold.
    """
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise typer.BadParameter(f"'{printable(item)}' is not UTF-8 text") from None
    return value


MemoryIdArg = Annotated[
    int,
    typer.Argument(help="Memory id, as list and recall print it.", metavar="MEMORY_ID", show_default=False,
                   callback=ID),
]


def say(message: str) -> None:
    """Write a message for people to stderr."""
    print(f"memp: {message}", file=sys.stderr)


def output_format(fmt: OutputFormat | None) -> str:
    """Return the report format to print: the one asked for, else $MEMP_FORMAT, else by whether stdout is a terminal."""
    from ..output import resolve_format

    return resolve_format(fmt.value if fmt is not None else None, values(OutputFormat))


def recall_format(fmt: RecallFormat | None, default: RecallFormat | None = None) -> str:
    """Return recall's format: the one asked for, else `default`, else as `output_format` decides."""
    from ..output import resolve_format

    chosen = fmt if fmt is not None else default
    return resolve_format(chosen.value if chosen is not None else None, values(RecallFormat))


def plain(choice: Any) -> str | None:
    """Return a choice's plain string for the domain modules (None stays None)."""
    return None if choice is None else str(choice.value)


def open_db(db: str | None) -> Any:
    """Return the store at `db` (a file or a URL; else $MEMP_DB, else the default), migrated and ready."""
    from ..store import open_store

    return open_store(db)


def with_schema(command: Any) -> Any:
    """Return a click command with a --schema option added when it takes --db.

    The option sets $MEMP_SCHEMA for the command's process, so every way a command opens its store (open_db, the
    MCP server, the hooks) opens the same schema without each command passing it on.
    """
    if not any(getattr(p, "name", None) == "db" for p in command.params):
        return command

    def schema(schema: SchemaOpt = None) -> None:
        pass

    holder = typer.Typer(add_completion=False)
    holder.command()(schema)
    param = typer.main.get_command(holder).params[0]
    param.expose_value = False

    def remember(ctx: Any, _param: Any, value: str | None) -> None:
        if value:
            os.environ["MEMP_SCHEMA"] = value

    param.callback = remember
    command.params.append(param)
    return command


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into a closed pipe raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a file (tests, embedding hosts): nothing will be flushed to a pipe


def handle_errors(fn: F) -> F:
    """Turn MempError into a one-line message and its exit status; Ctrl-C into 130; a closed pipe into 0."""

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
        except UnicodeEncodeError as exc:
            # Text that is not UTF-8 (a file name, an argument, an environment variable) met the store or a stream.
            print(f"memp: error: '{printable(str(exc.object[exc.start:exc.end]))}' is not UTF-8 text "
                  f"({exc.reason})", file=sys.stderr)
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # A reader such as `head` closed the pipe: not an error of ours (Python's own advice for SIGPIPE).
            _quiet_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:
            message = sqlite_message(exc)
            if message is None:
                raise
            print(f"memp: error: {message}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
