"""The `memp` command line: the Typer app, its commands in pipeline order, and `main`.

Each command lives in the module of its group (ingest, recall, update, manage, evaluate) and stays thin: it parses
options, calls one domain function and renders the result. Domain modules are imported inside the commands, so that
`memp --help` loads none of them.
"""

import gc
import importlib
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from .. import __version__

# Name -> "module:function" of this package, in pipeline order, which is the order `memp --help` lists them in.
COMMANDS = (
    ("ingest", "ingest:ingest"),
    ("build", "ingest:build"),
    ("recall", "recall:recall"),
    ("update", "update:update"),
    ("history", "update:history"),
    ("revert", "update:revert"),
    ("prune", "manage:prune"),
    ("restore", "manage:restore"),
    ("approve", "manage:approve"),
    ("config", "manage:config"),
    ("list", "manage:list_"),
    ("show", "manage:show"),
    ("stats", "manage:stats"),
    ("eval", "evaluate:eval_"),
    ("check", "manage:check"),
    ("export", "transfer:export"),
    ("import", "transfer:import_"),
    ("migrate", "migrate:migrate"),
    ("mcp", "mcp:mcp"),
    ("hooks", "hooks:app"),
)
TARGETS = dict(COMMANDS)
SETTINGS: dict[str, Any] = {
    "context_settings": {"help_option_names": ["-h", "--help"]},
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


class LazyCommands(MutableMapping[str, Any]):
    """memp's commands by name, each imported and built into click parameters the first time it is looked up.

    Building them all costs every call ~6-15 ms (more under load) and imports every command module; an agent
    calling `memp recall` in a loop needs one. `memp --help` and shell completion still look them all up.
    """

    def __init__(self) -> None:
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = build_command(name, TARGETS[name])
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]

    def __contains__(self, name: object) -> bool:
        return name in TARGETS

    def __iter__(self) -> Iterator[str]:
        return iter(TARGETS)

    def __len__(self) -> int:
        return len(TARGETS)


class LazyGroup(TyperGroup):
    """Typer's group over `LazyCommands`: names (for help, suggestions, completion) cost nothing, commands on use."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)


def build_command(name: str, target: str) -> Any:
    """Return the click command Typer makes of the function (or Typer group) at `target` ("module:function" here)."""
    module_name, function = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    found = getattr(module, function)
    if isinstance(found, typer.Typer):  # a command group of its own, such as `memp hooks install`
        return typer.main.get_command(found)
    from .common import with_schema

    single = typer.Typer(add_completion=False, **SETTINGS)
    single.command(name)(found)
    return with_schema(typer.main.get_command(single))


app = typer.Typer(
    name="memp",
    cls=LazyGroup,
    help=(
        "Procedural memory for LLM agents: ingest past trajectories, recall the procedures that fit a new task, "
        "and report how it went."
    ),
    no_args_is_help=True,
    **SETTINGS,
)


def _show_version(shown: bool) -> None:
    if shown:
        print(f"memp {__version__}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show memp's version and exit."),
    ] = False,
) -> None:
    # The group's only option is --version, answered by its own callback before any command runs.
    pass


def main() -> None:
    """Run the memp command line."""
    from ..embed import limit_blas_threads

    limit_blas_threads()  # before anything imports numpy
    try:
        app(prog_name="memp")
    finally:
        # Every write is committed or renamed into place before a command returns; the heap left over goes with the
        # process. Frozen, the interpreter's last collections skip it instead of walking every object (measured: a
        # fresh `memp recall` ends ~35 ms sooner). Buffers are still flushed and objects still freed as usual.
        gc.freeze()
