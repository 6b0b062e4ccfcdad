"""The model seam: resolving a model, one JSON extractor, provider retries with backoff, one re-ask, fallbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import llm
import pytest
from conftest import FakeChat, procedure_json, traj, write_jsonl

from memp_cli import models
from memp_cli.errors import MalformedAnswer, ModelError


def keywords(data: object) -> list[str]:
    """Accept a JSON array of strings."""
    if not isinstance(data, list) or not all(isinstance(w, str) for w in data):
        raise ValueError("not a list of words")
    return data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["a", "b"]', ["a", "b"]),
        ('Here you are:\n```json\n["a"]\n```\nand [1] is not it', ["a"]),
        ('Step [1] comes first. ["x", "y"] trailing words', ["x", "y"]),
        ('{"keywords": "nope"} then ["z"]', ["z"]),
        ('[["nested"]] ["flat"]', ["flat"]),
        ('text with a } brace and ["ok"] then ] junk', ["ok"]),
    ],
)
def test_extract_json_takes_the_first_value_the_parser_accepts(text: str, expected: list[str]) -> None:
    assert models.extract_json(text, keywords) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("no json here", "no JSON"), ('["a", 1]', "not a list of words"), ('{"a": 1,', "not valid JSON")],
)
def test_extract_json_says_why_nothing_fits(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.extract_json(text, keywords)


def test_resolve_name_and_unknown_models(monkeypatch: pytest.MonkeyPatch, fake_chat: FakeChat) -> None:
    assert models.resolve_name("given") == "given"
    monkeypatch.setenv("MEMP_MODEL", "from-env")
    assert models.resolve_name(None) == "from-env"
    monkeypatch.delenv("MEMP_MODEL")
    assert models.resolve_name(None) == llm.get_default_model()
    assert models.chat_model("fake-chat").model_id == "fake-chat"
    with pytest.raises(ModelError, match="judge model no-such-model unavailable"):
        models.chat_model("no-such-model", "judge model")


def test_schema_only_where_supported(fake_chat: FakeChat, monkeypatch: pytest.MonkeyPatch) -> None:
    model = models.chat_model("fake-chat")
    fake_chat.queue('["a"]', '["b"]')
    schema = {"type": "array", "items": {"type": "string"}}
    first = models.ask_json(model, "p", system="sys", schema=schema, parse=keywords)
    assert first.value == ["a"] and fake_chat.prompts[0].schema == schema and fake_chat.prompts[0].system == "sys"
    monkeypatch.setattr(type(model), "supports_schema", False)
    models.ask_json(model, "p", schema=schema, parse=keywords)
    assert fake_chat.prompts[1].schema is None


def test_malformed_answer_is_asked_for_once_more(fake_chat: FakeChat) -> None:
    model = models.chat_model("fake-chat")
    warnings: list[str] = []
    fake_chat.queue("I cannot do that", '["fine"]')
    answer = models.ask_json(model, "list them", parse=keywords, warn=warnings.append)
    assert answer.value == ["fine"] and answer.text == '["fine"]'
    # The fake counts words: tokens of both asks are summed.
    assert answer.input_tokens == 2 + len(fake_chat.prompts[1].prompt.split()) and answer.output_tokens == 4 + 1
    assert fake_chat.prompts[1].prompt.startswith("list them\n\n(Your previous answer could not be used: no JSON")
    assert warnings == [
        "model fake-chat gave an answer that could not be used (no JSON object or array in the answer); asking once more"
    ]


def test_malformed_twice_raises_without_a_third_ask(fake_chat: FakeChat) -> None:
    model = models.chat_model("fake-chat")
    fake_chat.queue('{"words": 1}', "still no", '["never asked"]')
    with pytest.raises(MalformedAnswer, match="model fake-chat gave no usable answer"):
        models.ask_json(model, "p", parse=keywords)
    assert len(fake_chat.prompts) == 2 and fake_chat.replies == ['["never asked"]']


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(models.time, "sleep", delays.append)
    monkeypatch.setenv("MEMP_RETRY_DELAY", "0.5")
    return delays


def test_provider_errors_are_retried_with_exponential_backoff(fake_chat: FakeChat, sleeps: list[float]) -> None:
    model = models.chat_model("fake-chat")
    warnings: list[str] = []
    fake_chat.queue(TimeoutError("read timed out"), RuntimeError("429 rate limited"), '["ok"]')
    assert models.ask_json(model, "p", parse=keywords, warn=warnings.append).value == ["ok"]
    assert sleeps == [0.5, 1.0]
    assert warnings[0] == "model fake-chat: read timed out; retrying in 0.5s"


def test_provider_down_raises_model_error_after_three_attempts(fake_chat: FakeChat, sleeps: list[float]) -> None:
    model = models.chat_model("fake-chat")
    fake_chat.queue(*[ConnectionError("connection refused")] * 3, '["late"]')
    with pytest.raises(ModelError, match=r"model fake-chat failed: connection refused \(3 attempts\)") as caught:
        models.ask_json(model, "p", parse=keywords)
    assert not isinstance(caught.value, MalformedAnswer)
    assert sleeps == [0.5, 1.0] and len(fake_chat.prompts) == 3


class Unmetered(llm.Model):
    """A chat model whose plugin reports no token usage."""

    model_id = "unmetered"

    def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def]
        yield '["counted"]'


class UnmeteredPlugin:
    __name__ = "UnmeteredPlugin"

    @llm.hookimpl
    def register_models(self, register):  # type: ignore[no-untyped-def]
        register(Unmetered())


@pytest.fixture
def unmetered() -> Iterator[llm.Model]:
    llm.plugins.pm.register(UnmeteredPlugin(), name="unmetered-plugin")
    try:
        yield models.chat_model("unmetered")
    finally:
        llm.plugins.pm.unregister(name="unmetered-plugin")


def test_tokens_are_counted_when_the_plugin_reports_none(unmetered: llm.Model) -> None:
    from memp_cli.tokens import count_tokens

    answer = models.ask_json(unmetered, "name the keywords", system="you list words", parse=keywords)
    assert answer.input_tokens == count_tokens("you list wordsname the keywords")
    assert answer.output_tokens == count_tokens('["counted"]') > 0


# -- each caller falls back to its offline answer after the one re-ask -------------------------------------------


def test_revise_falls_back_to_offline_revision(memp, fake_chat: FakeChat, tmp_path: Path) -> None:
    memp("ingest", str(write_jsonl(tmp_path / "one.jsonl", [traj("sort the mail")])))
    rid = memp.json("recall", "sort the mail")["recall_id"]
    run = write_jsonl(tmp_path / "failed.jsonl", [traj("sort the mail", "failure", ("look", "sort"))])
    fake_chat.queue("Revised: just try harder.", "Still prose.", procedure_json(["unused"]))
    result = memp("update", "--recall", rid, "--outcome", "failure", "-t", str(run), "-m", "fake-chat",
                  "--format", "json")
    report = json.loads(result.stdout)
    assert report["offline_revisions"] == 1 and report["revised"] == {"1": 2}
    assert "gave no usable answer" in result.stderr and "revising offline" in result.stderr
    assert len(fake_chat.prompts) == 2
    history = memp.json("history", "1")["history"]
    assert history[-1]["model"] == "offline" and "Following this procedure failed on" in history[-1]["new_script"]


def test_keywords_fall_back_to_offline_keywords(memp, fake_chat: FakeChat, tmp_path: Path) -> None:
    memp("ingest", str(write_jsonl(tmp_path / "one.jsonl", [traj("water the garden plants")])))
    # The memory's keywords: two malformed answers, then offline; the task's: a good answer.
    fake_chat.queue("garden, water", "water and garden", '["water", "garden"]')
    result = memp("recall", "water my garden", "-p", "avefact", "--keywords-model", "fake-chat", "--format", "json")
    assert json.loads(result.stdout)["matches"][0]["task"] == "water the garden plants"
    assert "offline keywords for this task" in result.stderr and len(fake_chat.prompts) == 3
    from memp_cli.store import open_store

    store = open_store(tmp_path / "memp.db")
    assert store.keywords.known(["water", "garden", "plants"]) == {"water", "garden", "plants"}


def test_distill_provider_errors_are_retried(memp, fake_chat: FakeChat, sleeps: list[float], tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "one.jsonl", [traj("sort the mail")])
    fake_chat.queue(RuntimeError("503"), procedure_json(["sort {mail}"]))
    result = memp("ingest", str(src), "-m", "fake-chat", "--json")
    assert json.loads(result.stdout)["offline_scripts"] == 0 and sleeps == [0.5]
    assert "retrying in 0.5s" in result.stderr
