"""`memp hooks`: install memp's hooks into an agent host's settings, and answer the host's hook events."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..choices import HookEvent, HookHost, Outcome
from ..errors import MempError
from .common import TOP, DbOpt, ModelOpt, handle_errors, plain, say

app = typer.Typer(
    name="hooks",
    help="Claude Code hooks: recall procedures on every prompt, learn from every session when it ends.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

HostArg = Annotated[HookHost, typer.Argument(help="The agent host.", show_default=False)]
ProjectOpt = Annotated[
    bool, typer.Option("--project", help="The project's .claude/settings.json (shared with everyone on the project).")
]
UserOpt = Annotated[bool, typer.Option("--user", help="Your ~/.claude/settings.json, for every project (the default).")]
SettingsOpt = Annotated[
    Path | None, typer.Option("--settings", help="This settings file instead.", show_default=False, dir_okay=False)
]
JudgeOpt = Annotated[
    str | None, typer.Option(help="llm model that grades each session as it ends; its score decides the outcome.")
]
OutcomeOpt = Annotated[
    Outcome | None,
    typer.Option(help="Outcome of a session the judge does not grade. [default: unknown]", show_default=False),
]


def _settings(project: bool, user: bool, settings: Path | None) -> Path:
    from ..hooks.claude_code import settings_path

    if sum((project, user, settings is not None)) > 1:
        raise MempError("choose one of --project, --user and --settings")
    return settings_path(project=project, settings=settings)


@app.command()
@handle_errors
def install(
    host: HostArg,
    project: ProjectOpt = False,
    user: UserOpt = False,
    settings: SettingsOpt = None,
    judge_model: JudgeOpt = None,
    outcome: OutcomeOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
) -> None:
    """Add memp's hooks to the host's settings, merged with what is there. Installing again changes nothing.

    On each prompt memp recalls the procedures that fit it and hands them to the agent as context; when a session
    ends memp learns from its transcript. The options given are kept in the hooks' commands.
    """
    from ..hooks.claude_code import install as add
    from ..store import is_url

    # A file is named absolutely (hooks run from any folder); a database URL as it is.
    where = db if db is None or is_url(db) else str(Path(db).resolve())
    options = {"db": where, "model": model, "judge_model": judge_model,
               "outcome": plain(outcome)}
    change = add(_settings(project, user, settings), options)
    if not change.changed:
        say(f"{change.path}: memp's hooks are installed already; nothing changed")
    else:
        done = [f"added {', '.join(change.added)}" if change.added else "", f"updated {', '.join(change.updated)}"
                if change.updated else ""]
        say(f"{change.path}: {'; '.join(d for d in done if d)} (restart Claude Code sessions to pick them up)")


@app.command()
@handle_errors
def uninstall(host: HostArg, project: ProjectOpt = False, user: UserOpt = False, settings: SettingsOpt = None) -> None:
    """Remove memp's hooks from the host's settings, leaving every other setting and hook as it was."""
    from ..hooks.claude_code import uninstall as remove

    change = remove(_settings(project, user, settings))
    if change.changed:
        say(f"{change.path}: removed memp's {', '.join(sorted(set(change.removed)))} hooks")
    else:
        say(f"{change.path}: no memp hooks here; nothing changed")


@app.command()
def run(
    event: Annotated[HookEvent, typer.Argument(help="The hook event, as the host names it.", show_default=False)],
    k: Annotated[
        int, typer.Option("-k", "--top", help="How many memories to hand the agent at most.", callback=TOP)
    ] = 3,
    judge_model: JudgeOpt = None,
    outcome: OutcomeOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
) -> None:
    """Answer one hook event, its JSON payload on stdin (what the host runs; `hooks install` sets it up).

    user-prompt-submit prints Claude Code's additionalContext JSON with the procedures that fit the prompt, or
    nothing; session-end ingests the session's transcript. Either way the exit status is 0: a hook never blocks the
    user, and memp's errors go to stderr.
    """
    from ..hooks import claude_code

    try:
        payload = claude_code.read_payload(sys.stdin.read())
        if event is HookEvent.USER_PROMPT_SUBMIT:
            answer = claude_code.prompt_context(payload, db=db, k=k)
            if answer is not None:
                import json

                sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
            return
        report = claude_code.learn_session(
            payload, db=db, model=model, judge_model=judge_model, outcome=plain(outcome), warn=say
        )
        say(f"learnt from session {payload.get('session_id') or ''}: {report.added} added, "
            f"{report.skipped} already stored ({', '.join(f'{n} {o}' for o, n in report.outcomes.items())})")
    except MempError as exc:
        say(f"hook {event.value}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a hook must not fail the user's prompt or session over memp's own trouble
        say(f"hook {event.value}: {type(exc).__name__}: {exc}")
