"""Claude Code hooks: memp's entries in a settings file, and its answers to UserPromptSubmit and SessionEnd.

Claude Code runs each command hook with the event's JSON on stdin (`session_id`, `transcript_path`, `cwd`,
`hook_event_name`, and `prompt` for UserPromptSubmit or `reason` for SessionEnd). A UserPromptSubmit hook that exits 0
with `{"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": "..."}}` on stdout adds that
text to the prompt's context; exit status 2 would block the prompt, which memp never does. SessionEnd's output is
not shown to the model. Settings hold hooks as `{"hooks": {EVENT: [{"matcher"?, "hooks": [{"type": "command",
"command", "timeout"}]}]}}`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MempError

EVENTS = {"user-prompt-submit": "UserPromptSubmit", "session-end": "SessionEnd"}
# Seconds Claude Code waits for each hook: a recall is well under a second warm; a session's ingest may distil.
TIMEOUTS = {"user-prompt-submit": 30, "session-end": 120}
# How memp's own entries are told from the user's other hooks, whatever path or options they were installed with.
OURS = re.compile(r"\bmemp(?:_cli)?\b.*\bhooks run (user-prompt-submit|session-end)\b")
REPORT_HINT = (
    "When the task is done, report how it went so memp learns which procedures work: "
    "`memp update --recall {recall_id} --outcome success` (or `--outcome failure`)."
)
# Prompts that are Claude Code commands, not tasks.
COMMAND_PROMPT = re.compile(r"^\s*/\S+")


@dataclass
class Change:
    """What an install or uninstall did to a settings file."""

    path: Path
    added: list[str]
    updated: list[str]
    removed: list[str]

    @property
    def changed(self) -> bool:
        """Return True when the file was written."""
        return bool(self.added or self.updated or self.removed)


def settings_path(project: bool = False, settings: Path | None = None, cwd: Path | None = None) -> Path:
    """Return the settings file to change: the one named, the project's, else the user's."""
    if settings is not None:
        return settings
    if project:
        return (cwd or Path.cwd()) / ".claude" / "settings.json"
    home = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(home).expanduser() if home else Path.home() / ".claude") / "settings.json"


def memp_executable() -> list[str]:
    """Return how a hook runs this memp: the script beside this interpreter, else `memp` on PATH, else -m."""
    import shutil

    beside = Path(sys.executable).parent / ("memp.exe" if os.name == "nt" else "memp")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("memp")
    return [found] if found else [sys.executable, "-m", "memp_cli"]


def hook_command(event: str, options: dict[str, str | None]) -> str:
    """Return the shell command a hook runs for `event`, with the options given baked in."""
    args = [*memp_executable(), "hooks", "run", event]
    for name, value in options.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(args)


def entries(options: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """Return memp's hook entry for each Claude Code event."""
    return {
        EVENTS[event]: {"type": "command", "command": hook_command(event, options), "timeout": TIMEOUTS[event]}
        for event in EVENTS
    }


def _is_ours(hook: Any) -> bool:
    return isinstance(hook, dict) and isinstance(hook.get("command"), str) and bool(OURS.search(hook["command"]))


def load_settings(path: Path) -> dict[str, Any]:
    """Return the settings in `path` ({} when it is missing or empty); errors name the file and line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise MempError(f"{path}: cannot read: {exc.strerror}") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MempError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}; fix it, memp changed nothing") from None
    if not isinstance(data, dict):
        raise MempError(f"{path}: a settings file holds one JSON object; memp changed nothing")
    if not isinstance(data.get("hooks", {}), dict):
        raise MempError(f"{path}: 'hooks' must be an object of event name to hook groups; memp changed nothing")
    return data


def _groups(hooks: dict[str, Any], event: str, path: Path) -> list[Any]:
    groups = hooks.setdefault(event, [])
    if not isinstance(groups, list):
        raise MempError(f"{path}: hooks.{event} must be a list of hook groups; memp changed nothing")
    return groups


def install(path: Path, options: dict[str, str | None] | None = None) -> Change:
    """Add memp's hooks to a settings file, or bring them up to date; other settings and hooks stay as they are."""
    data = load_settings(path)
    hooks = data.setdefault("hooks", {})
    change = Change(path, [], [], [])
    for event, entry in entries(options or {}).items():
        groups = _groups(hooks, event, path)
        found = [(g, h) for g in groups if isinstance(g, dict) for h in g.get("hooks") or [] if _is_ours(h)]
        if not found:
            groups.append({"hooks": [entry]})
            change.added.append(event)
            continue
        (group, first), extra = found[0], found[1:]
        if first != entry:
            group["hooks"][group["hooks"].index(first)] = entry
            change.updated.append(event)
        for group, hook in extra:  # an older install left a second copy: one is enough
            group["hooks"].remove(hook)
        if extra and event not in change.updated:
            change.updated.append(event)
        groups[:] = [g for g in groups if not (isinstance(g, dict) and g.get("hooks") == [])]
    if change.changed:
        write_atomically(path, data)
    return change


def uninstall(path: Path) -> Change:
    """Remove memp's hooks from a settings file, and the groups and events they leave empty; nothing else."""
    data = load_settings(path)
    hooks = data.get("hooks")
    change = Change(path, [], [], [])
    if not isinstance(hooks, dict):
        return change
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept = []
        for group in groups:
            if isinstance(group, dict) and isinstance(group.get("hooks"), list):
                mine = [h for h in group["hooks"] if _is_ours(h)]
                if mine:
                    change.removed.append(event)
                    group["hooks"] = [h for h in group["hooks"] if not _is_ours(h)]
                    if not group["hooks"]:
                        continue
            kept.append(group)
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if not hooks:
        del data["hooks"]
    if change.changed:
        write_atomically(path, data)
    return change


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write settings so that a reader sees the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before the rename
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(handle.name, path.stat().st_mode & 0o7777)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# -- answering the events -------------------------------------------------------------------------------------------


def read_payload(raw: str) -> dict[str, Any]:
    """Return a hook's stdin payload, or raise MempError when it is not a JSON object."""
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MempError(f"hook payload on stdin: invalid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(payload, dict):
        raise MempError("hook payload on stdin: expected a JSON object")
    return payload


def prompt_context(payload: dict[str, Any], db: Path | str | None = None, k: int = 3) -> dict[str, Any] | None:
    """Return the UserPromptSubmit output that adds recalled procedures to the prompt, or None when none fit."""
    from ..output import prompt_block
    from ..recall import recall_many
    from ..scopes import read_scopes
    from ..store import location, open_store

    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or COMMAND_PROMPT.match(prompt):
        return None
    path = location(db)
    if isinstance(path, Path) and not path.exists():
        return None  # no memories yet: a hook on every prompt must not create a store as a side effect
    store = open_store(path)
    try:
        # Confident only: an unrelated prompt gets nothing rather than noise; utility ranks known successes first.
        # The scope of $MEMP_SCOPE (else 'default'), as every recall searches by default.
        result = recall_many(store, tasks=[prompt], k=k, confident=True, rank="utility", scopes=read_scopes())[0]
    finally:
        store.close()
    block = prompt_block(result)
    if not block:
        return None
    context = block + "\n" + REPORT_HINT.format(recall_id=result.id)
    return {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": context}}


def learn_session(
    payload: dict[str, Any],
    db: Path | str | None = None,
    model: str | None = None,
    judge_model: str | None = None,
    outcome: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Any:
    """Ingest the session's transcript; return the ingest report. Its outcome: a judge's, else `outcome`, else unknown."""
    from .. import formats
    from ..ingest import IngestOptions, ingest
    from ..store import open_store

    transcript = payload.get("transcript_path")
    if not isinstance(transcript, str) or not transcript:
        raise MempError("SessionEnd payload has no transcript_path")
    path = Path(transcript).expanduser()
    if not path.is_file():
        raise MempError(f"{path}: no such transcript")
    judge = None
    if judge_model:
        from ..judge import ModelJudge

        judge = ModelJudge(judge_model)
    options = IngestOptions(
        model=model, fmt="claude-code", read=formats.ReadOptions(outcome=outcome or "unknown"), judge=judge
    )
    store = open_store(db)
    try:
        return ingest(store, paths=[str(path)], options=options, warn=warn)
    finally:
        store.close()
