"""Test isolation and the fake chat model, registered through llm's own plugin manager."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# llm loads no installed plugins under test; the fakes below and memp's own plugin are registered by hand.
sys._called_from_test = True  # type: ignore[attr-defined]

import llm
import pytest
from pg import backend, parametrize_backends, pg, pg_url  # noqa: F401  (fixtures for the tests of both backends)
from typer.testing import CliRunner

import memp_cli.llm_plugin
from memp_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "trajectories"
SHARED = ROOT.parent / "shared" / "data"


class FakeChat(llm.Model):
    """A chat model that answers from a queue of canned replies and keeps the prompts it saw."""

    model_id = "fake-chat"
    supports_schema = True

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.prompts: list[llm.Prompt] = []

    def queue(self, *replies: Any) -> None:
        """Queue replies: strings are answered, exceptions are raised."""
        self.replies.extend(replies)

    def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def]
        self.prompts.append(prompt)
        if not self.replies:
            raise RuntimeError("fake-chat: no reply queued")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        response.set_usage(input=len(prompt.prompt.split()), output=len(reply.split()))
        yield reply


class FakeEmbed(llm.EmbeddingModel):
    """An 8-dimensional embedding model from word hashes: a second model of another size."""

    model_id = "fake-embed"

    def embed_batch(self, items, *, key=None):  # type: ignore[no-untyped-def]
        for item in items:
            vec = [0.0] * 8
            for word in str(item).lower().split():
                vec[hashlib.md5(word.encode()).digest()[0] % 8] += 1.0
            yield vec


class FakePlugin:
    __name__ = "FakePlugin"

    def __init__(self) -> None:
        self.chat = FakeChat()

    @llm.hookimpl
    def register_models(self, register):  # type: ignore[no-untyped-def]
        register(self.chat)

    @llm.hookimpl
    def register_embedding_models(self, register):  # type: ignore[no-untyped-def]
        register(FakeEmbed())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of the optimised embedding model for the whole run, as a user's machine keeps one."""
    return tmp_path_factory.mktemp("memp-cache")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Iterator[Path]:
    """Give every test its own store and llm user dir, with no keys and no memp settings from outside."""
    monkeypatch.setenv("MEMP_DB", str(tmp_path / "memp.db"))
    monkeypatch.setenv("MEMP_CACHE", str(model_cache))
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    monkeypatch.setenv("MEMP_RETRY_DELAY", "0")
    for var in ("MEMP_MODEL", "MEMP_EMBED_MODEL", "MEMP_FORMAT", "MEMP_SCOPE", "MEMP_SCHEMA", "OPENAI_API_KEY",
                "LLM_OPENAI_SHOW_RESPONSES"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reads SQLite's own tables or file; not run on PostgreSQL")


@pytest.fixture
def fake_chat() -> Iterator[FakeChat]:
    """Register the fake chat and embedding models with llm for one test."""
    plugin = FakePlugin()
    llm.plugins.pm.register(plugin, name="fake-plugin")
    llm.plugins.pm.register(memp_cli.llm_plugin, name="memp-plugin")
    try:
        yield plugin.chat
    finally:
        llm.plugins.pm.unregister(name="fake-plugin")
        llm.plugins.pm.unregister(name="memp-plugin")


class Memp:
    """Runs `memp` in-process through Typer's runner and parses its JSON."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Any:
        result = self.runner.invoke(app, list(args), input=input, catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"memp {' '.join(args)} exited {result.exit_code}: {result.stderr}")
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        """Run asking for JSON (ingest's --json, else --format json) and return the parsed stdout."""
        flag = ["--json"] if args[0] == "ingest" else ["--format", "json"]
        return json.loads(self(*args, *flag, input=input).stdout)


@pytest.fixture
def memp() -> Memp:
    return Memp()


def procedure_json(steps: list[str], pitfalls: list[str] | None = None) -> str:
    """Return a fake model's answer in the distillation schema."""
    return json.dumps(
        {"when_to_use": "when the task fits", "parameters": ["{object}"], "steps": steps, "pitfalls": pitfalls or []}
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL and return the path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def traj(task: str, outcome: str = "success", actions: tuple[str, ...] = ("look", "act")) -> dict[str, Any]:
    """Return a small native-format trajectory."""
    return {
        "task": task,
        "steps": [{"action": a, "observation": f"you {a}"} for a in actions],
        "outcome": outcome,
    }
