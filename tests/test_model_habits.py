"""llm's habits: memp's model calls logged to llm's log database when asked, and -o/--option passed to the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llm
import pytest
from conftest import FakeChat, procedure_json, traj, write_jsonl

from memp_cli import models


class TunableChat(FakeChat):
    """The fake chat model with one option, so that options can be seen arriving."""

    model_id = "tunable-chat"

    class Options(llm.Options):
        temperature: float | None = None

    def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def]
        self.seen = prompt.options.temperature
        yield from super().execute(prompt, stream, response, conversation)


class TunablePlugin:
    __name__ = "TunablePlugin"

    def __init__(self) -> None:
        self.chat = TunableChat()

    @llm.hookimpl
    def register_models(self, register):  # type: ignore[no-untyped-def]
        register(self.chat)


@pytest.fixture(autouse=True)
def fresh_calls() -> Any:
    """Put memp's call settings back after each test: the commands here run in this process, and set them."""
    yield
    models.CALLS.log, models.CALLS.options = False, {}


@pytest.fixture
def tunable() -> Any:
    plugin = TunablePlugin()
    llm.plugins.pm.register(plugin, name="tunable")
    try:
        yield plugin.chat
    finally:
        llm.plugins.pm.unregister(name="tunable")


def _logged(user_dir: Path) -> list[tuple[str, str]]:
    """Return (model, response) of each call logged, read by llm's own `llm logs --json`."""
    if not (user_dir / "logs.db").exists():
        return []
    from click.testing import CliRunner
    from llm.cli import cli

    result = CliRunner().invoke(cli, ["logs", "--json", "-n", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [(row["model"], row["response"]) for row in json.loads(result.output)]


def test_calls_are_logged_only_when_asked(memp, tunable, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_dir = isolated / "llm"
    runs = [traj(f"water plant {i}") for i in range(3)]
    for i, run in enumerate(runs):
        tunable.queue(procedure_json(["look", "water"]))
        path = write_jsonl(isolated / f"{i}.jsonl", [run])
        if i == 0:
            memp("ingest", str(path), "-m", "tunable-chat")
            assert _logged(user_dir) == [], "off by default"
        elif i == 1:
            memp("ingest", str(path), "-m", "tunable-chat", "--log", "-o", "temperature", "0.25")
            assert [m for m, _ in _logged(user_dir)] == ["tunable-chat"]
            assert tunable.seen == 0.25
        else:
            monkeypatch.setenv("MEMP_LOG", "1")
            user_dir.mkdir(exist_ok=True)
            (user_dir / "logs-off").touch()  # `llm logs off`: $MEMP_LOG does not override the user's choice
            memp("ingest", str(path), "-m", "tunable-chat")
            assert len(_logged(user_dir)) == 1
            (user_dir / "logs-off").unlink()  # `llm logs on`
            tunable.queue(procedure_json(["look", "water"]))
            memp("ingest", str(write_jsonl(isolated / "more.jsonl", [traj("water the fern")])), "-m", "tunable-chat")
            assert len(_logged(user_dir)) == 2


def test_an_option_the_model_refuses_is_named(memp, tunable, isolated: Path) -> None:
    tunable.queue(procedure_json(["look"]))
    result = memp("ingest", str(write_jsonl(isolated / "r.jsonl", [traj("sweep the floor")])), "-m", "tunable-chat",
                  "-o", "colour", "blue")
    assert "does not take these options" in result.stderr and "colour" in result.stderr
    assert tunable.prompts == [], "nothing was sent with an option the model does not know"
