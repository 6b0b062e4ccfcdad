"""Secret detection: where the secrets in a text are, found by detect-secrets' provider rules and memp's own.

detect-secrets (Yelp) keeps the provider token formats (AWS, GitHub, GitLab, Slack, Stripe, Twilio, SendGrid,
Discord, Telegram, PyPI, Azure, IBM, Mailchimp, Square, Artifactory, ...): memp runs its plugins' compiled
patterns, not its `scan_line`, which judges every word of prose by its entropy (~17 ms and hundreds of false hits
per ALFWorld run, measured here). Its JWT and npm patterns rescan long runs from each of their positions
(quadratic: minutes on a 1 MB line) and its private-key and IP rules mark a header or an address rather than a
secret, so those four are memp's own, as are the forms it has no plugin for: private-key blocks whole, OpenAI and
Anthropic keys, GitHub fine-grained tokens, Google API keys, `*_PASSWORD=`-style assignments, `--password x` and
`-p x` forms, URL passwords holding `@`, HTTP authorization headers and webhook URLs.

Every rule is linear in its input: its start is a literal or cannot begin inside a run of the characters it then
scans, and every repeat is bounded by a character class or a literal end. A rule runs only on text holding one of
its hints (lower-case substrings every match contains); detect-secrets' rules only on text holding a run of
20 token characters, and only there, which every token they look for has: prose costs a few substring tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

# Every detect-secrets token holds a run this long of these characters (AWS key ids are 20; the rest are longer).
# Its rules run on each such run with CONTEXT_BEFORE characters before it (keys: `aws_secret = "..."`, `cloudant
# password: ...`) and CONTEXT_AFTER after (a closing quote, the rest of a dotted token).
LONG_RUN_ALL = re.compile(r"[A-Za-z0-9_\-+/=]{20,}")
CONTEXT_BEFORE, CONTEXT_AFTER = 80, 40
# What a detect-secrets match is extended over: its patterns fix a token's length ("ghp_" and 36), longer ones
# would keep their tail.
_TAIL = re.compile(r"[A-Za-z0-9_\-]*")
MARK = "[REDACTED:"
_GENERIC = {"password", "password-option", "authorization", "bearer-token", "url-credentials", "basic-auth-credentials", "custom"}
_SECRET_GROUP = -1  # a detect-secrets rule's group: its first, when that is the secret (see `spans`)
# Assignment keys that name a secret: a word ending in one of these ("DB_PASSWORD", "aws_secret_access_key").
_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|secret[_-]?key|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"access[_-]?token|auth[_-]?token|refresh[_-]?token|client[_-]?secret|token|credentials?"
)
_KEY_HINTS = ("pass", "pwd", "secret", "key", "token", "credential")
# A value that is code, not a secret, is followed by one of these: `token = tokens[0]`, `password = getpass()`.
# (?=(...))\N is an atomic group (Python 3.10 has no possessive quantifiers): the value is not shortened to dodge it.
_VALUE = r"(?!\[REDACTED)(?=([^\s\"'`,;()\[\]{}<>]{4,}))\1"

# (name, pattern, group masked (0: the whole match), hints).
OWN_RULES: list[tuple[str, str, int, tuple[str, ...]]] = [
    (
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        0,
        ("-----begin",),
    ),
    (
        "api-key",  # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-) keys
        r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-(?:[a-z]+\d+-)?)?[A-Za-z0-9_\-]{20,}",
        0,
        ("sk-",),
    ),
    ("github-token", r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})", 0,
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("google-api-key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_\-]{30,}", 0, ("aiza",)),
    ("stripe-key", r"(?<![A-Za-z0-9_])[rsp]k_(?:live|test)_[0-9A-Za-z]{16,}", 0, ("k_live_", "k_test_")),
    ("npm-token", r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36,}", 0, ("npm_",)),
    ("huggingface-token", r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}", 0, ("hf_",)),
    ("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", 0, ("eyj",)),
    (
        "webhook-url",
        (r"(?i)(?<![a-z0-9.-])(?:https?://)?(?:hooks\.slack\.com/(?:services|workflows|triggers)/|"
        r"(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/|[a-z0-9-]+\.webhook\.office\.com/webhookb2/)"
        r"([A-Za-z0-9_\-/@.]+)"),
        1,
        ("hooks.slack.com", "/api/webhooks/", "webhook.office.com"),
    ),
    (
        "aws-secret-key",
        r"(?i)aws_?secret_?access_?key[\"']?(?:\s*[:=]\s*|\s+)[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        1,
        ("secret",),
    ),
    (
        "authorization",  # Authorization: Basic|Token|Digest ... headers (Bearer: the rule below), in curl -H or a dump
        (r"(?i)(?<![a-z0-9-])(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:basic|token|digest)\s+"
        r"(?!\[REDACTED)([A-Za-z0-9+/._~=-]{6,})"),
        1,
        ("authorization",),
    ),
    ("bearer-token", r"(?i)\bbearer\s+(?!\[REDACTED)([A-Za-z0-9._~+/=\-]{16,})", 1, ("bearer",)),
    (
        "password",  # KEY=value, KEY: value, "key": "value", key => value; the key a word ending in a secret's name
        r"(?i)(?<![A-Za-z0-9])(?:" + _SECRET_WORDS + r")[\"'\]]{0,2}\s*(?::=|=>|[=:])\s*"
        r"[\"']?" + _VALUE + r"(?![(\[])",
        1,
        _KEY_HINTS,
    ),
    (
        "password-option",  # --password x, --db-password=x, --api-key x, --token x
        r"(?i)(?<![\w-])--(?:[a-z0-9]+-)*(?:password|passwd|pass|secret|token|api-key|apikey|access-key|secret-key)"
        r"(?:=|\s+)[\"']?(?!-)" + _VALUE,
        1,
        ("--",),
    ),
    (
        "password-option",  # -p x for tools whose -p is a password (sshpass, registry logins), -pX for MySQL's
        (r"(?i)(?<![\w-])(?:(?:sshpass|(?:docker|podman|buildah|skopeo|oc|helm\s+registry)\s+login)\b[^\n|;&]{0,80}?"
        r"\s-p\s*|(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n|;&]{0,80}?\s-p)([^\s\"']+)"),
        1,
        ("sshpass", "login", "mysql", "mariadb"),
    ),
    (
        "password-option",  # curl -u user:password, --user user:password (uid:gid pairs left alone)
        r"(?<!\S)(?:-u|--user)[ =]+[^\s:@/]+:(?![0-9]+(?!\S))(?!\[REDACTED)([^\s\"']{3,})",
        1,
        ("-u", "--user"),
    ),
    (
        "url-credentials",  # scheme://user:password@host; the password may hold "@" (the host follows the last one)
        r"(?i)(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*://[^/\s:@\[]*:(?!\[REDACTED)([^\s/?#]+)@",
        1,
        ("://",),
    ),
]
# Left out of detect-secrets' plugins: quadratic (JWT, npm: memp's own above), a header or an address rather than
# a secret (private keys: memp masks the block; public IPs are not secrets).
_SKIPPED = {"JwtTokenDetector", "NpmDetector", "PrivateKeyDetector", "IPPublicDetector"}
# Hints for detect-secrets' rules, by plugin: substrings every match holds, compared as written for a
# case-sensitive pattern and lower-cased for one that ignores case. A plugin not named runs on every long run.
# tests/test_secrets.py draws matches of each rule (Hypothesis) to hold these to the patterns.
_DETECTOR_HINTS: dict[str, tuple[str, ...]] = {
    "ArtifactoryDetector": ("AKC", "AP"),
    "AWSKeyDetector": ("A3T", "ABIA", "ACCA", "AKIA", "ASIA", "aws"),
    "AzureStorageKeyDetector": ("AccountKey=",),
    "BasicAuthDetector": ("://",),
    "CloudantDetector": ("cl",),
    "DiscordBotTokenDetector": (".",),
    "GitHubTokenDetector": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "GitLabTokenDetector": ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-", "glimt-", "glptt-",
                            "glagent-", "gloas-"),
    "IbmCloudIamDetector": ("key", "pwd", "pass", "token"),
    "IbmCosHmacDetector": ("secret",),
    "MailchimpDetector": ("-us",),
    "OpenAIDetector": ("T3BlbkFJ",),
    "PypiTokenDetector": ("pypi-",),
    "SendGridDetector": ("SG.",),
    "SlackDetector": ("xox", "hooks.slack.com"),
    "SoftlayerDetector": ("sl", "softlayer"),
    "SquareOAuthDetector": ("sq0csp-",),
    "StripeDetector": ("k_live_",),
    "TelegramBotTokenDetector": (":",),
    "TwilioKeyDetector": ("AC", "SK"),
}


@dataclass(frozen=True)
class Rule:
    """One secret pattern: what it marks, the group it masks, when it runs, and whether a match grows to its token's
    end."""

    name: str
    pattern: re.Pattern[str]
    group: int
    hints: tuple[str, ...]
    anycase: bool = True  # whether the hints are compared with the text lower-cased
    extend: bool = False  # whether a whole-match mask grows to the end of its token


def _slug(secret_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", secret_type.lower()).strip("-")


@cache
def own_rules() -> tuple[Rule, ...]:
    """Return memp's own rules, compiled (on first need: most texts hint at no secret)."""
    return tuple(Rule(n, re.compile(p, re.DOTALL), g, h) for n, p, g, h in OWN_RULES)


@cache
def detector_rules() -> tuple[Rule, ...]:
    """Return the compiled patterns of detect-secrets' regex plugins (imported on first need, ~0.1 s)."""
    import importlib
    import inspect
    import pkgutil

    from detect_secrets import plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    rules = []
    for info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{plugins.__name__}.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, RegexBasedDetector) or name in _SKIPPED:
                continue
            if inspect.isabstract(cls):
                continue
            kind = _slug(str(cls.secret_type))
            for pattern in cls().denylist:
                anycase = bool(pattern.flags & re.IGNORECASE)
                hints = tuple(h.lower() if anycase else h for h in _DETECTOR_HINTS.get(name, ()))
                rules.append(Rule(kind, pattern, _SECRET_GROUP if pattern.groups else 0, hints, anycase, extend=True))
    return tuple(rules)


def lowered(text: str) -> str | None:
    """Return `text` lower-cased for hint tests, or None when hints cannot be trusted and every rule must run.

    A substring test is ~50x cheaper than a regex scan, and most text holds no secret. re's case-insensitive
    matching also takes "ı" for "i" and "ſ" for "s", which lower-casing keeps as they are: text holding either
    skips the shortcut.
    """
    low = text.lower()
    if text.isascii() or ("ı" not in low and "ſ" not in low):
        return low
    return None


def hinted(low: str | None, hints: tuple[str, ...]) -> bool:
    """Return whether a rule with these hints must run on text lower-cased to `low` (None: always)."""
    return low is None or not hints or any(h in low for h in hints)


def _windows(text: str) -> list[tuple[int, int]]:
    """Return the stretches of `text` around its long token runs (with room for a rule's key before), merged."""
    out: list[tuple[int, int]] = []
    for m in LONG_RUN_ALL.finditer(text):
        start, end = max(0, m.start() - CONTEXT_BEFORE), min(len(text), m.end() + CONTEXT_AFTER)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def spans(text: str, extra: tuple[Rule, ...] = ()) -> list[tuple[int, int, str]]:
    """Return (start, end, kind) of every secret in `text`, in order, overlaps merged."""
    low = lowered(text)
    found: list[tuple[int, int, str]] = []

    def run(rule: Rule, start: int = 0, end: int | None = None) -> None:
        covered = -1  # where this rule's last match, grown to its token's end, ends
        for m in rule.pattern.finditer(text, start, len(text) if end is None else end):
            group = rule.group
            if group == _SECRET_GROUP:
                # detect-secrets' first group is the secret after a key (`aws_secret = "..."`) or a token's prefix
                # ("ghp" of "ghp_..."): a prefix is short, and then the whole match is the secret.
                a, b = m.span(1)
                group = 1 if b - a >= 8 else 0
            a, b = m.span(group)
            if a < 0 or a == b or a < covered or text.startswith(MARK, a):
                continue  # (a match inside the last one's grown tail would grow over the same run again)
            if rule.extend and group == 0:
                b = covered = _TAIL.match(text, b).end()  # type: ignore[union-attr]
            found.append((a, b, rule.name))

    for rule in (*(r for r in own_rules() if hinted(low, r.hints)), *extra):
        run(rule)
    # detect-secrets' rules look at the long runs only, and what comes just before them: they are many, and most
    # text has few such runs (ids, hashes, paths), so this keeps prose and ALFWorld runs cheap.
    for start, end in _windows(text):
        window = text[start:end]
        window_low = lowered(window)
        for rule in detector_rules():
            if hinted(window_low, rule.hints) if rule.anycase else any(h in window for h in rule.hints):
                run(rule, start, end)
    # Where two rules mark the same secret, the provider's name wins over an assignment's ("TOKEN=AKIA...").
    found.sort(key=lambda s: (s[0], -s[1], s[2] in _GENERIC))
    merged: list[tuple[int, int, str]] = []
    for start, end, name in found:
        if merged and start < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end, merged[-1][2])
            continue
        merged.append((start, end, name))
    return merged


def mask(text: str, extra: tuple[Rule, ...] = ()) -> tuple[str, int]:
    """Return `text` with every secret replaced by a [REDACTED:kind] mark, and how many were masked."""
    found = spans(text, extra)
    if not found:
        return text, 0
    out, last = [], 0
    for start, end, name in found:
        out += [text[last:start], f"{MARK}{name}]"]
        last = end
    out.append(text[last:])
    return "".join(out), len(found)


def custom_rule(pattern: str) -> Rule:
    """Return a --redact pattern as a rule (raises re.error when it is not a regex)."""
    return Rule("custom", re.compile(pattern), 0, ())


def describe() -> dict[str, Any]:
    """Return the rules' kinds: memp's own, and detect-secrets' (for docs and tests)."""
    return {"own": sorted({r.name for r in own_rules()}), "detect_secrets": sorted({r.name for r in detector_rules()})}
