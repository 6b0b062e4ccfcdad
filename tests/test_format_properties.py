"""Every format adapter, fed arbitrary JSON and text shaped like its format, yields records or one InputError."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memp_cli import formats
from memp_cli.errors import InputError
from memp_cli.formats import (
    claude_code,
    codex,
    memp_chat,
    native,
    openai_chat,
    react,
    sharegpt,
    swe_agent,
    tau_bench,
)

KEYS = ["type", "payload", "message", "content", "role", "sessionId", "isSidechain", "reward", "traj", "tool_calls",
        "name", "input", "id", "tool_use_id", "call_id", "arguments", "text", "output", "toolUseResult", "agentId",
        "task_id", "task", "steps", "action", "thought", "observation", "outcome", "score", "metadata", "messages",
        "instance_id", "info", "exit_status", "from", "value", "example", "trajectory", "history", "function",
        "command", "cmd", "cwd", "uuid", "parentUuid", "trial", "source_id", "resolved", "success"]
SCALAR = (
    st.none() | st.booleans() | st.integers() | st.just(10**400) | st.just(-(10**400))
    | st.floats(allow_nan=False, allow_infinity=False) | st.just(1e308)
    | st.text(max_size=10) | st.sampled_from(["user", "assistant", "tool", "system", "success", "failure", "gpt",
                                              "human", "bash", "\ud800", "Your task is to: x\n> go", "```bash\nls\n```"])
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner,
                                                               max_size=6),
    max_leaves=24,
)
STEP = st.fixed_dictionaries({"action": JSON}, optional={"thought": JSON, "observation": JSON})
NATIVE = st.fixed_dictionaries(
    {"task": JSON, "steps": st.lists(STEP, max_size=3) | JSON},
    optional={"outcome": JSON, "score": JSON, "id": JSON, "metadata": JSON},
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system"]) | JSON},
    optional={"content": JSON, "tool_calls": JSON | st.lists(st.fixed_dictionaries(
        {}, optional={"function": st.fixed_dictionaries({}, optional={"name": JSON, "arguments": JSON}), "id": JSON}),
        max_size=2)},
)
CHAT = st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=5) | JSON},
                             optional={"instance_id": JSON, "id": JSON, "info": JSON})
CLAUDE_BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_use", "tool_result", "thinking"]) | JSON},
    optional={"id": JSON, "tool_use_id": JSON, "name": JSON, "input": JSON, "content": JSON, "text": JSON},
)
CLAUDE = st.fixed_dictionaries(
    {"type": st.sampled_from(["user", "assistant", "summary", "system"]),
     "message": st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]) | JSON},
                                      optional={"content": JSON | st.lists(CLAUDE_BLOCK, max_size=3) | st.text()})
     | JSON},
    optional={"sessionId": JSON, "isSidechain": JSON, "uuid": JSON, "cwd": JSON, "toolUseResult": JSON,
              "agentId": JSON},
)
CODEX = st.fixed_dictionaries(
    {"type": st.sampled_from(["session_meta", "response_item", "event_msg", "turn_context"]),
     "payload": st.fixed_dictionaries(
         {"type": st.sampled_from(["message", "function_call", "function_call_output", "user_message", "local_shell_call",
                                   "custom_tool_call", "reasoning"]) | JSON},
         optional={"role": JSON, "content": JSON, "name": JSON, "arguments": JSON, "call_id": JSON, "output": JSON,
                   "message": JSON, "action": JSON, "input": JSON, "id": JSON, "cwd": JSON}) | JSON},
    optional={"timestamp": st.just("t")},
)
SHAREGPT = st.lists(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt"]) | JSON, "value": JSON}),
                    min_size=1, max_size=5)
MEMP_CHAT = st.lists(st.fixed_dictionaries({"example": st.lists(MESSAGE, max_size=4) | JSON},
                                           optional={"task": JSON}), min_size=1, max_size=3)
SWE = st.fixed_dictionaries({}, optional={
    "trajectory": st.lists(st.fixed_dictionaries({"action": JSON}, optional={"thought": JSON, "observation": JSON}),
                           max_size=3) | JSON,
    "history": st.lists(MESSAGE, max_size=4) | JSON, "info": JSON})
TAU = st.lists(st.fixed_dictionaries({"reward": JSON, "traj": st.lists(MESSAGE, max_size=4) | JSON},
                                     optional={"task_id": JSON, "trial": JSON, "info": JSON}), min_size=1, max_size=3)
REACT_JSON = st.dictionaries(st.text(max_size=12) | st.sampled_from(["react_clean_0", "react_put_1"]),
                             st.text(max_size=40).map(lambda t: "Your task is to: " + t + "\n> go to x 1\n" + t)
                             | JSON, min_size=1, max_size=3)
REACT_LINE = st.sampled_from([
    "Action: reset\nObservation: Instruction:\n", "Action: search[x]\nObservation: ok\n",
    "Action: think[hmm]\nObservation: OK.\n", "Action: click[buy now]\nObservation: Your score (min 0.0, max 1.0): 0.5.\n",
    "Your score (min 0.0, max 1.0): 1.2.3\n", "Your score (min 0, max 1): .\n", "-----------\n", "12\n",
    "i want a red shirt\n", "[Search]\n", "1 0.5 0.5 0.5\n",
]) | st.text(max_size=30)
REACT_LOG = st.lists(REACT_LINE, min_size=1, max_size=12).map("".join)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    return path


def _dump(value: Any) -> str:
    # Python's json writes what JSON allows (a lone surrogate as \\ud800, a huge int as digits).
    return json.dumps(value)


def _lines(values: list[Any]) -> str:
    return "".join(_dump(v) + "\n" for v in values)


def _check(module: Any, path: Path) -> None:
    """Read `path` with `module`: every record must be whole and storable, else one InputError naming the file."""
    try:
        for run in module.read(formats.Source(path, str(path))):
            assert isinstance(run.task, str) and run.task
            assert run.steps and all(isinstance(s.action, str) and s.action for s in run.steps)
            for step in run.steps:
                assert step.thought is None or isinstance(step.thought, str)
                assert step.observation is None or isinstance(step.observation, str)
            assert run.score is None or (isinstance(run.score, float) and math.isfinite(run.score))
            assert run.source_id is None or isinstance(run.source_id, str)
            assert isinstance(run.metadata, dict)
            # What the store writes: UTF-8 JSON text, no NaN. A lone surrogate or an unencodable value fails here.
            json.dumps(run.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")
            assert run.id
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@FAST
@given(lines=st.lists(NATIVE | JSON, min_size=1, max_size=4))
@example(lines=[{"task": "t", "steps": [{"action": "a"}], "score": 10**400}])
@example(lines=[{"task": "t", "steps": [{"action": "a"}], "score": 1e308 * 10}])
@example(lines=[{"task": "t\ud800", "steps": [{"action": "a"}]}])
def test_native(tmp_path: Path, lines: list[Any]) -> None:
    _check(native, _write(tmp_path / "n.jsonl", _lines(lines)))


@FAST
@given(lines=st.lists(CHAT | JSON, min_size=1, max_size=3), document=CHAT | st.lists(MESSAGE, max_size=4) | JSON)
@example(lines=[{"messages": [{"role": "user", "content": "do it"}, {"role": "assistant", "tool_calls": 5}]}],
         document=[])
def test_openai_chat(tmp_path: Path, lines: list[Any], document: Any) -> None:
    _check(openai_chat, _write(tmp_path / "c.jsonl", _lines(lines)))
    _check(openai_chat, _write(tmp_path / "c.json", _dump(document)))


@FAST
@given(lines=st.lists(CLAUDE | JSON, min_size=1, max_size=5))
@example(lines=[
    {"type": "user", "sessionId": "s", "message": {"role": "user", "content": "fix it"}},
    {"type": "assistant", "sessionId": "s", "message": {"role": "assistant", "content": [
        {"type": "tool_use", "id": ["a", "b"], "name": "Bash", "input": {"command": "ls"}}]}},
    {"type": "user", "sessionId": "s", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": ["a", "b"], "content": "x"}]}},
])
def test_claude_code(tmp_path: Path, lines: list[Any]) -> None:
    _check(claude_code, _write(tmp_path / "s.jsonl", _lines(lines)))


@FAST
@given(lines=st.lists(CODEX | JSON, min_size=1, max_size=5))
def test_codex(tmp_path: Path, lines: list[Any]) -> None:
    _check(codex, _write(tmp_path / "rollout.jsonl", _lines(lines)))


@FAST
@given(sg=SHAREGPT | JSON, mc=MEMP_CHAT | JSON, swe=SWE | JSON, tau=TAU | JSON)
def test_document_formats(tmp_path: Path, sg: Any, mc: Any, swe: Any, tau: Any) -> None:
    _check(sharegpt, _write(tmp_path / "g.json", _dump(sg)))
    _check(memp_chat, _write(tmp_path / "m.json", _dump(mc)))
    _check(swe_agent, _write(tmp_path / "x.traj", _dump(swe)))
    _check(tau_bench, _write(tmp_path / "t.json", _dump(tau)))


@FAST
@given(prompts=REACT_JSON | JSON, log=REACT_LOG)
@example(prompts={}, log="Action: reset\nObservation: Instruction:\ni want a hat\n[Search]\nAction: click[buy]\n"
         "Observation: Your score (min 0.0, max 1.0): 0.5.\n")
def test_react(tmp_path: Path, prompts: Any, log: str) -> None:
    _check(react, _write(tmp_path / "p.json", _dump(prompts)))
    _check(react, _write(tmp_path / "l.txt", log))


@FAST
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_detection_of_any_bytes(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path / "any.jsonl", content)
    try:
        runs = list(formats.read(formats.Source(path, str(path))))
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
    else:
        for run in runs:
            json.dumps(run.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")


def test_a_lone_surrogate_names_its_line(tmp_path: Path) -> None:
    good = {"task": "t", "steps": [{"action": "a"}]}
    path = _write(tmp_path / "s.jsonl", _lines([good, good]) + '{"task": "x\\ud800", "steps": [{"action": "a"}]}\n')
    with pytest.raises(InputError, match=r"s\.jsonl:3: .*surrogate"):
        list(native.read(formats.Source(path, str(path))))
    doc = _write(tmp_path / "d.json", '[{"from": "human",\n "value": "ok"},\n {"from": "gpt", "value": "\\udc00"}]')
    with pytest.raises(InputError, match=r"d\.json:3: .*surrogate"):
        list(sharegpt.read(formats.Source(doc, str(doc))))
