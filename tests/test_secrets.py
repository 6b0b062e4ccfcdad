"""Secret masking: each common format is masked whole, procedure text is left alone, and every rule is linear."""

from __future__ import annotations

import base64
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memp_cli import secrets
from memp_cli.boundary import Redactor

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM_BODY = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Z9Gf7w1Rvc0\nq9Fh1f5wY2Q0Yy3nB6o1nqP+ZlM9z0Ew"

# (text, the secret that must not survive). Invented values in each format's shape; none is a real credential.
CASES: list[tuple[str, str]] = [
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    (f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    (f"aws configure set aws_secret_access_key {AWS_SECRET}", AWS_SECRET),
    (f'{{"aws_secret": "{AWS_SECRET}"}}', AWS_SECRET),
    ("DB_PASSWORD=s3cr3t-Pa55", "s3cr3t-Pa55"),
    ('POSTGRES_PASSWORD: "hunter2hunter2"', "hunter2hunter2"),
    ("SECRET_KEY = 'django-insecure-4x9#kq'", "django-insecure-4x9#kq"),
    ('"client_secret": "9f8e7d6c5b4a3f2e"', "9f8e7d6c5b4a3f2e"),
    ("MYSQL_ROOT_PASSWORD=rootpw42", "rootpw42"),
    ("git clone https://ghp_" + "A1b2C3d4E5" * 4 + "@github.com/acme/app", "A1b2C3d4E5" * 4),
    ("gho_" + "Z9y8X7w6V5" * 4, "Z9y8X7w6V5" * 4),
    ("GITHUB_TOKEN=github_pat_11ABCDEFG0" + "abcdEFGH1234" * 6, "abcdEFGH1234" * 6),
    ("OPENAI_API_KEY=sk-proj-" + "Ab3dEf6hIj" * 6, "Ab3dEf6hIj" * 6),
    ("key sk-" + "T3stKeyL3gacy" * 3 + "T3BlbkFJ" + "q" * 20, "T3stKeyL3gacy"),
    ("ANTHROPIC_API_KEY=sk-ant-api03-" + "Zx9_Yw8-Vu7" * 8, "Zx9_Yw8-Vu7"),
    ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe key sk_live_51H" + "xYz0123456789AbCdEf" * 4, "xYz0123456789AbCdEf"),
    ("rk_live_" + "0123456789abcdefABCDEFGH" * 2, "0123456789abcdefABCDEFGH"),
    ("maps key AIzaSyD-" + "9tSrke72PouQMnMX7a7eZS" + "Qc0-ab1", "9tSrke72PouQMnMX7a7eZS"),
    ("glpat-" + "xY7_zW6-vU5tS4rQ3pO2", "xY7_zW6-vU5tS4rQ3pO2"),
    ("npm_" + "a1B2c3D4e5F6g7H8i9J0" * 2, "a1B2c3D4e5F6g7H8i9J0"),
    ("SG." + "abcdefghij0123456789AB" + "." + "abcdefghij0123456789ABCDEFGHIJabcdefghij012", "abcdefghij0123456789AB"),
    (
        "token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    (f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----", PEM_BODY),
    (f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}\n-----END OPENSSH PRIVATE KEY-----", PEM_BODY),
    (f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PEM_BODY}\n=Ab12\n-----END PGP PRIVATE KEY BLOCK-----", PEM_BODY),
    (f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{PEM_BODY}", PEM_BODY),  # cut off: masked to the end
    ("postgres://admin:p@ss@word!@db.example:5432/app", "p@ss@word!"),
    ("redis://:hunter2hunter2@cache:6379/0", "hunter2hunter2"),
    ("mysql --user root --password hunter2hunter2 app", "hunter2hunter2"),
    ("psql --password=s3cretpw -h db", "s3cretpw"),
    ("vault login --token s.Xy12Ab34Cd56", "s.Xy12Ab34Cd56"),
    ("sshpass -p hunter2hunter2 ssh deploy@host", "hunter2hunter2"),
    ("docker login -u ci -p dckr9pat5Xy registry.example", "dckr9pat5Xy"),
    ("mysql -u root -prootpw42 app", "rootpw42"),
    ("curl -u admin:hunter2hunter2 https://api.example/v1", "hunter2hunter2"),
    ('curl -H "Authorization: Basic YWRtaW46aHVudGVyMg==" https://api.example', "YWRtaW46aHVudGVyMg=="),
    ("Authorization: Bearer abc123def456ghi789jkl", "abc123def456ghi789jkl"),
    ("POST https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
    ("https://discord.com/api/webhooks/123456789012345678/AbCdEf-GhIjKl_MnOpQr", "AbCdEf-GhIjKl_MnOpQr"),
    ("AccountKey=" + "a1B2c3D4" * 11, "a1B2c3D4" * 11),
    ("hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345", "AbCdEfGhIjKlMnOpQrStUvWxYz012345"),
]

# Procedure text that holds no secret and must come back as it is.
BENIGN = [
    "mkdir -p build && cd build",
    "docker run -p 8080:80 nginx",
    "ssh -p 2222 deploy@host",
    "docker run -u 1000:1000 image",
    "git push -u origin main",
    "max_tokens=4000",
    "token = tokens[0]",
    "password = getpass()",
    "def login(user: str, password: str) -> None:",
    "password_hash = bcrypt.hash(pw)",
    "take keychain 1 from sidetable 2",
    "https://github.com/acme/app/pull/42",
    "the task took 20190907_212755_456877 seconds",
    "look_at_obj_in_light-AlarmClock-None-DeskLamp-301/trial_T20190907_174127_043461",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "pip install --upgrade pip",
    "pytest -k test_login --tb=short",
    "Use the --password-file option to read it from a file.",
    "the system prompt of the shell shows $PWD",
    "export PATH=$HOME/.local/bin:$PATH",
]


@pytest.mark.parametrize("text,secret", CASES, ids=[c[0][:30] for c in CASES])
def test_each_format_is_masked(text: str, secret: str) -> None:
    redactor = Redactor()
    out = redactor.text(text) or ""
    assert secret not in out and "[REDACTED:" in out, out
    assert redactor.masked >= 1
    assert redactor.text(out) == out  # masking again changes nothing


@pytest.mark.parametrize("text", BENIGN)
def test_procedure_text_is_left_alone(text: str) -> None:
    assert Redactor().text(text) == text


def test_url_password_with_at_keeps_user_and_host() -> None:
    out = Redactor().text("postgres://admin:p@ss@word!@db.example:5432/app")
    assert out == "postgres://admin:[REDACTED:url-credentials]@db.example:5432/app"


def test_detect_secrets_supplies_provider_rules() -> None:
    kinds = secrets.describe()
    # The plugins memp relies on, by their secret types, and memp's own rules beside them.
    for kind in ("aws-access-key", "github-token", "slack-token", "stripe-access-key", "gitlab-token", "twilio-api-key"):
        assert kind in kinds["detect_secrets"]
    assert "json-web-token" not in kinds["detect_secrets"]  # quadratic there: memp's own "jwt" rule instead
    assert {"private-key", "jwt", "password", "url-credentials", "webhook-url"} <= set(kinds["own"])


def _all_rules() -> list[secrets.Rule]:
    return [*secrets.own_rules(), *secrets.detector_rules()]


@pytest.mark.parametrize("rule", _all_rules(), ids=lambda r: f"{r.name}:{r.pattern.pattern[:24]}")
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hint_shortcut_misses_nothing_a_rule_matches(rule: secrets.Rule, data: st.DataObject) -> None:
    # Every string a rule matches holds one of its hints, else the shortcut would skip a secret; and what one of
    # detect-secrets' rules matches is masked when it lies within a window: a run of 20 ASCII token characters
    # (as every real token has) and up to CONTEXT_BEFORE characters before it and CONTEXT_AFTER after.
    text = data.draw(st.from_regex(rule.pattern, fullmatch=True))
    if rule.hints:
        low = secrets.lowered(text)
        held = secrets.hinted(low, rule.hints) if rule.anycase else any(h in text for h in rule.hints)
        assert held, (rule.name, text)
    if rule.extend and secrets._windows(text) == [(0, len(text))]:
        assert secrets.spans(text), (rule.name, text)


def _base64_like(size: int, seed: int) -> str:
    raw = base64.b64encode(random.Random(seed).randbytes(size * 3 // 4 + 3)).decode()[:size]
    return raw.replace("/", "+")


MB = 1_000_000
ADVERSARIAL = {
    "base64": base64.b64encode(random.Random(2).randbytes(750_000)).decode(),
    "base64-no-slash": _base64_like(MB, 1),
    "dotted": "a." * (MB // 2),
    "jwt-like": "eyJ-" * (MB // 4),
    "slack-like": "xoxb-1-" * (MB // 7),  # a grown match once regrew over the rest of the run from each match
    "url-like": "://a:" * (MB // 5),
    "slashes": "//a/" * (MB // 4),  # detect-secrets' npm rule: minutes here
    "assignments": "password=" * (MB // 9),
    "options": "--password " * (MB // 11),
    "sshpass": "sshpass " * (MB // 8),
    "at-signs": "https://u:" + "@" * MB,
}


@pytest.mark.parametrize("filler", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_one_megabyte_line_is_masked_in_linear_time(filler: str) -> None:
    token = "ghp_" + "Q7x" * 12
    line = f"{filler} {token} {filler[:1000]}"
    start = time.process_time()
    out, count = secrets.mask(line)
    spent = time.process_time() - start
    assert token not in out and count >= 1
    # ~0.05-0.45 s of CPU each here (2 cores shared by many processes); a quadratic rule takes minutes.
    assert spent < 3.0, f"{spent:.2f} s of CPU for 1 MB"


def test_no_rule_nests_unbounded_repeats() -> None:
    # The shape catastrophic backtracking needs, (x+)+ or (x*)*, appears in no rule memp runs itself.
    nested = re.compile(r"\((?:[^()]|\\\(|\\\))*[+*]\)[+*]")
    for rule in secrets.own_rules():
        assert not nested.search(rule.pattern.pattern), rule.name
