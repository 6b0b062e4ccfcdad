"""Placeholders: the task's own values in a procedure's steps, one name per value, named by role where it is known."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

from . import household
from .judge import BRACKET, SEGMENTS, WRAPPERS
from .steps import Domain, Entry

ROLES = {"search": "query", "click": "option", "select": "option", "choose": "option"}
HOST = re.compile(r"^[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.(?:com|org|net|io|dev|edu|gov|co|ai|app|uk|de|fr)$", re.IGNORECASE)
FILE = re.compile(r"/|\.[A-Za-z][A-Za-z0-9]{0,4}$")
# Words a task and a command often share without naming a value of the task ("start", "test", "float").
COMMON = frozenset({
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "from", "with", "into", "onto", "by", "is",
    "are", "be", "it", "its", "this", "that", "some", "any", "your", "you", "then", "put", "place", "find", "get",
    "make", "use", "using", "all", "two", "one", "them", "their", "there", "here", "up", "out", "off", "not", "but",
    "when", "what", "which", "how", "fix", "fixes", "fixed", "add", "run", "runs", "test", "tests", "testing",
    "start", "stop", "restart", "status", "install", "update", "upgrade", "remove", "delete", "check", "show",
    "list", "set", "open", "close", "edit", "create", "build", "print", "debug", "log", "logs", "file", "files",
    "code", "source", "error", "errors", "bug", "issue", "python", "pip", "git", "src", "lib", "dev", "main", "app",
    "server", "job", "package", "dependency", "value", "values", "again", "new", "old", "should", "flag", "does",
    "doesn", "return", "returns", "true", "false", "none", "null", "self", "def", "class", "import", "int", "float",
    "str", "bool", "dict", "tuple", "bytes", "object", "http", "https", "www",
})
MAX_NAME = 24
VALUE = re.compile(r"\w[\w.\-/+@]*\w")


def placeholders(entries: list[Entry], task: str, domain: Domain) -> dict[str, str]:
    """Return task value -> placeholder name, in order of first use; the same value always gets the same name."""
    if domain is Domain.HOUSEHOLD:
        acted = household.roles(entries)
        forms = household.task_forms(task, household.kinds([t for e in entries for t in (e.action, *e.places)]))
        # Only what the run acted on becomes a placeholder; a place it merely searched stays as it was.
        found = [(v, acted[v]) for e in entries for t in (e.action, *e.places)
                 for v in (f"{w} {n}" for w, n in household.ENTITY.findall(t.lower()) if w in forms) if v in acted]
    elif domain is Domain.WEB:
        words = set(re.findall(r"[a-z0-9]+", task.lower()))
        found = []
        for e in entries:
            m = BRACKET.match(e.action)
            arg_words = re.findall(r"[a-z0-9]+", m["arg"].lower()) if m else []
            # An argument mostly made of the task's words (a search query, an option the task asked for) is its value.
            if m and arg_words and sum(w in words for w in arg_words) * 4 >= len(arg_words) * 3:
                found.append((m["arg"], ROLES.get(m["verb"].lower(), m["verb"].lower())))
    else:
        found = [(v, _shell_role(v)) for e in entries for v in shell_values(e.action.splitlines()[0], task)]
    names: dict[str, str] = {}
    used: dict[str, int] = {}
    for value, role in found:
        if value in names:
            continue
        base = re.sub(r"[^\w.\-]+", "_", role).strip("_")
        base = base if base and len(base) <= MAX_NAME else "value"
        used[base] = used.get(base, 0) + 1
        names[value] = base if used[base] == 1 else f"{base}_{used[base]}"
    return names


def _shell_role(value: str) -> str:
    return "host" if HOST.match(value) else "file" if FILE.search(value) else value


def _arguments(line: str) -> list[str]:
    """Return a command line's arguments as values could appear in them: whole, after `=`, a path's file, a URL's host."""
    out: list[str] = []
    for segment in SEGMENTS.split(line):
        words = segment.split()
        while words and (words[0] in WRAPPERS or "=" in words[0]):
            words.pop(0)
        # The program, and a subcommand word after it ("certbot renew", "git diff"), say how, not on what.
        if len(words) > 1 and re.fullmatch(r"[a-z]+", words[1]):
            words.pop(1)
        for word in words[1:]:
            word = word.strip("'\"()[]{},;")
            if "=" in word:
                word = word.split("=", 1)[1].strip("'\"")
            elif word.startswith("-"):
                continue
            if "://" in word:
                try:
                    out.append(urlsplit(word).hostname or "")
                except ValueError:  # not a URL after all: "[REDACTED:...]" reads as a bracketed IPv6 host
                    pass
            word = re.sub(r":\d+$", "", word.removeprefix("./"))  # host:port
            out.append(word)
            if "/" in word:
                out.append(word.rsplit("/", 1)[1])
    return out


def shell_values(line: str, task: str) -> list[str]:
    """Return the command's arguments that the task text names: paths, files, hosts, identifiers, services."""
    values = []
    for arg in _arguments(line):
        if len(arg) < 3 or arg.lower() in COMMON or not VALUE.fullmatch(arg) or not re.search(r"[A-Za-z]", arg):
            continue
        if re.search(rf"(?<![\w\-.]){re.escape(arg)}(?![\w/\-]|\.\w)", task):
            values.append(arg)
    return values


def substitute(text: str, names: dict[str, str], domain: Domain) -> str:
    """Return the text with each task value replaced by its placeholder, longest values first."""
    for value in sorted(names, key=len, reverse=True):
        slot = "{" + names[value] + "}"
        if domain is Domain.WEB:
            text = text.replace(f"[{value}]", f"[{slot}]")
        elif domain is Domain.HOUSEHOLD or value in text:  # a shell value not in the text cannot match
            text = _value_pattern(value, domain).sub(slot, text)
    return text


@lru_cache(maxsize=4096)
def _value_pattern(value: str, domain: Domain) -> re.Pattern[str]:
    """Return the pattern of a task value where it stands alone in a household step or a shell command."""
    if domain is Domain.HOUSEHOLD:
        return re.compile(rf"(?<![\w{{\-]){re.escape(value)}(?![\w}}/\-])", re.IGNORECASE)
    # Only whole arguments, path parts and hosts, as shell_values found them.
    return re.compile(rf"(?<![^\s'\"=/:@(\[,]){re.escape(value)}(?![^\s'\"/:@)\],;?#&])")
