"""Agent Skills: procedures that earned it written as `SKILL.md` folders, and such folders read back as memories.

The format (agentskills.io/specification): a folder per skill holding `SKILL.md`, YAML front matter then Markdown.
`name` is 1-64 characters of lowercase letters, digits and single hyphens, neither first nor last, and is the
folder's name; `description` (1-1024 characters) says what the skill does and when to use it; `compatibility` is
at most 500 characters; `metadata` maps strings to strings. The body should stay under 500 lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import boundary
from ..errors import InputError, MempError
from ..records import Memory, Script, Trajectory
from ..store import Store
from .export import Filters
from .importer import ImportReport

NAME_MAX, DESCRIPTION_MAX, COMPATIBILITY_MAX, BODY_LINES = 64, 1024, 500, 500
NAME_RULE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# The example run in a SKILL.md is cut to this many lines: a skill is read whole into an agent's context.
EXAMPLE_LINES = 40
SKILL_MODEL, SKILL_VERSION = "skill", "agent-skills"
_SECTION = re.compile(r"^(When to use|Parameters|Steps|Pitfalls|Outcome):\s*(.*)$")


def skill_name(task: str, taken: set[str]) -> str:
    """Return a valid skill name made from a task, not in `taken` (a numbered suffix tells namesakes apart)."""
    base = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-") or "procedure"
    for n in range(1, 10_000):
        suffix = "" if n == 1 else f"-{n}"
        name = base[: NAME_MAX - len(suffix)].rstrip("-") + suffix
        if name not in taken:
            return name
    raise MempError(f"no free skill name for {task!r}")


def check_front_matter(meta: Any, folder: str) -> str | None:
    """Return why front matter breaks the Agent Skills rules for a skill in `folder`, else None."""
    if not isinstance(meta, dict):
        return "the front matter is not a YAML mapping"
    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not name:
        return "name is missing"
    if len(name) > NAME_MAX or not NAME_RULE.fullmatch(name):
        return f"name {name!r} must be 1-{NAME_MAX} lowercase letters, digits and single hyphens, not first or last"
    if name != folder:
        return f"name {name!r} is not the folder's name {folder!r}"
    if not isinstance(description, str) or not description.strip() or len(description) > DESCRIPTION_MAX:
        return f"description must be 1-{DESCRIPTION_MAX} characters"
    compatibility = meta.get("compatibility")
    if compatibility is not None and (not isinstance(compatibility, str) or not 1 <= len(compatibility) <= 500):
        return f"compatibility must be 1-{COMPATIBILITY_MAX} characters"
    extra = meta.get("metadata")
    if extra is not None and (not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items())):
        return "metadata must map strings to strings"
    return None


def _earned(memory: Memory, filters: Filters, min_success: float) -> bool:
    """Return True when a memory's procedure may become a skill: an active script from a success, trusted enough."""
    return (memory.script is not None and memory.status == "active" and memory.outcome == "success"
            and memory.success_mean() >= min_success
            and (filters.task_type is None or memory.metadata.get("task_type") == filters.task_type)
            and (filters.since is None or memory.created_at >= filters.since))


def _markdown(script: str) -> list[str]:
    """Return a script's text as Markdown sections: each "Steps:"-style heading becomes a level-two heading."""
    out: list[str] = []
    for line in script.splitlines():
        match = _SECTION.match(line)
        if match:
            out += ["", f"## {match.group(1)}", ""] + ([match.group(2)] if match.group(2) else [])
        else:
            out.append(line)
    return out


def render_skill(memory: Memory, name: str) -> str:
    """Return the SKILL.md of a memory: front matter, the procedure, and a short example run."""
    import yaml  # type: ignore[import-untyped]

    task = " ".join(memory.task.split())
    kind = memory.metadata.get("task_type")
    description = (f'Use when the task is to {task[:600]}, or one like it{f" ({kind})" if kind else ""}: '
                   f"a procedure memp distilled from {'a successful run' if not memory.succeeded else 'runs that worked'}"
                   f" (success estimate {memory.success_mean():.2f}), with its steps, parameters and pitfalls.")
    meta = {
        "name": name,
        "description": description[:DESCRIPTION_MAX],
        "metadata": {"memp-task": memory.task, "memp-trajectory-id": memory.trajectory_id,
                     "memp-success": f"{memory.success_mean():.4f}", "memp-model": memory.model or "none",
                     "memp-version": str(memory.version)},
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10_000)
    body = [f"# {task}", *_markdown(memory.script or "")]
    if memory.trajectory:
        example = memory.trajectory.splitlines()
        cut = example[:EXAMPLE_LINES] + ([f"... ({len(example) - EXAMPLE_LINES} more lines)"]
                                         if len(example) > EXAMPLE_LINES else [])
        body += ["", "## Example", "", "A run this procedure was distilled from:", "", "```text", *cut, "```"]
    return f"---\n{front}---\n\n" + "\n".join(body).strip() + "\n"


def _written_by_memp(path: Path) -> str | None:
    """Return the trajectory id a SKILL.md memp wrote names, None for other files."""
    try:
        meta, _ = read_skill(path)
    except (InputError, OSError):
        return None
    extra = meta.get("metadata") or {}
    return extra.get("memp-trajectory-id") if isinstance(extra, dict) else None


def export_skills(store: Store, folder: Path, filters: Filters | None = None, min_success: float = 0.6) -> list[Path]:
    """Write a skill folder per procedure that earned it (one per task, the best), return the SKILL.md files."""
    filters = filters or Filters()
    best: dict[str, Memory] = {}
    for memory in store.memories.list(build=filters.build, outcome="success", status="active", scopes=filters.scopes):
        if not _earned(memory, filters, min_success):
            continue
        key = " ".join(memory.task.lower().split())
        held = best.get(key)
        if held is None or (memory.success_mean(), memory.recalled, -memory.id) > (
                held.success_mean(), held.recalled, -held.id):
            best[key] = memory
    folder.mkdir(parents=True, exist_ok=True)
    existing = {p.name: _written_by_memp(p / "SKILL.md") for p in folder.iterdir() if p.is_dir()}
    ours = {tid: name for name, tid in existing.items() if tid}
    taken = {name for name, tid in existing.items() if not tid}
    written = []
    for memory in sorted(best.values(), key=lambda m: m.id):
        name = ours.get(memory.trajectory_id) or skill_name(memory.task, taken)
        taken.add(name)
        target = folder / name
        target.mkdir(exist_ok=True)
        (target / "SKILL.md").write_text(render_skill(memory, name), encoding="utf-8")
        written.append(target / "SKILL.md")
    return written


def read_skill(path: Path) -> tuple[dict[str, Any], str]:
    """Return a SKILL.md's front matter and body, checked against the Agent Skills rules; raise InputError."""
    import yaml

    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise InputError(str(path), 1, "SKILL.md must start with --- and YAML front matter")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise InputError(str(path), 1, "the front matter is not closed by ---")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(str(path), (mark.line + 2) if mark else 1, f"front matter is not YAML: {exc}") from None
    problem = check_front_matter(meta, path.parent.name)
    if problem:
        raise InputError(str(path), 1, problem)
    body = "\n".join(lines[end + 1:]).strip()
    if not body:
        raise InputError(str(path), end + 1, "the skill has no body")
    return meta, body


def import_skills(store: Store, folder: Path, embed_model: str | None = None,
                  warn: Callable[[str], None] | None = None, scope: str | None = None) -> ImportReport:
    """Store every skill folder under `folder` as a memory in `scope` (all checked first, then one write)."""
    from dataclasses import replace

    from ..embed import get_embedder, is_default, resolve_embed_model
    from ..scopes import write_scope

    scope = write_scope(scope)
    files = sorted(folder.glob("*/SKILL.md"))
    if not folder.is_dir() or not files:
        raise MempError(f"{folder}: no skill folders (*/SKILL.md) here")
    runs = []
    for path in files:
        meta, body = read_skill(path)
        extra = meta.get("metadata") or {}
        if extra.get("memp-trajectory-id") and store.memories.known([extra["memp-trajectory-id"]]):
            continue  # exported from this store: the memory it came from is here already
        task = extra.get("memp-task") or " ".join(meta["description"].split())
        traj = Trajectory(task=task, steps=[], outcome="success", source_id=meta["name"],
                          metadata={"skill": meta["name"]}, source_file=str(path))
        runs.append((traj, Script(body, SKILL_MODEL, SKILL_VERSION)))
    embed_id = resolve_embed_model(store, embed_model)
    report = ImportReport(file=str(folder), read=len(files), embed_model=embed_id)
    report.skipped = len(files) - len(runs)
    redactor = boundary.Redactor()
    prepared = [boundary.prepare(traj, redactor) for traj, _ in runs]
    known = store.memories.known([p.trajectory.id for p in prepared])
    fresh = [(p, s) for p, (_, s) in zip(prepared, runs) if p.trajectory.id not in known]
    report.skipped += len(runs) - len(fresh)
    if fresh:
        vectors = get_embedder(None if is_default(embed_id) else embed_id).embed([p.trajectory.task for p, _ in fresh])
        items = [replace(boundary.new_memory(p, "script", s, v, redactor), scope=scope)
                 for (p, s), v in zip(fresh, vectors)]
        added = store.memories.add(items, embed_id)
        report.added = len(added)
        report.skipped += len(items) - len(added)
        report.held = sum(bool(i.flag) for i in items if i.trajectory.id in added)
        report.embedded = len(items)
    report.redacted = redactor.masked
    if warn and report.held:
        warn(f"{report.held} imported skills are held: their text reads like an instruction (memp approve ID)")
    return report
