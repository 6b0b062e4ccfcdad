"""`memp mcp` driven as a real MCP host drives it: the SDK's own client, over stdio and over Streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from conftest import EXAMPLES
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from memp_cli.store import open_store

TOOLS = {"recall", "report_outcome", "learn", "list_memories", "show_memory", "prune_plan"}
# Bounds each MCP exchange: a server that hangs fails the test instead of the run.
TIMEOUT = 60


def _env(db: Path) -> dict[str, str]:
    """Return the server's environment: this test's store and cache, no outside keys."""
    keep = ("MEMP_CACHE", "LLM_USER_PATH", "PATH", "HOME", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"MEMP_DB": str(db), "LLM_LOAD_PLUGINS": ""})
    return env


@asynccontextmanager
async def session(db: Path, errlog: TextIO) -> AsyncIterator[ClientSession]:
    """Yield an initialized client session with `memp mcp` on `db`, spawned over stdio as a host would."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "memp_cli", "mcp", "--db", str(db)],
                                   env=_env(db))
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


def run(db: Path, body: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Return what `body` returns, run against a fresh server on `db`, bounded in time."""

    async def main(errlog: TextIO) -> Any:
        with anyio.fail_after(TIMEOUT):
            async with session(db, errlog) as client:
                return await body(client)

    with open(os.devnull, "w") as errlog:
        return anyio.run(main, errlog)


async def call(client: ClientSession, tool: str, **arguments: Any) -> Any:
    """Return a tool's structured result; fail on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    data = result.structured_content
    # Lists and plain dicts come wrapped under "result" when the tool's output schema is not an object.
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


@pytest.fixture
def store_path(memp, tmp_path: Path) -> Path:
    """Return a store built from the bundled example trajectories (offline distiller)."""
    db = tmp_path / "mcp.db"
    memp("ingest", str(EXAMPLES), "--db", str(db), "-m", "offline")
    return db


def test_initialize_lists_the_tools_with_typed_input_schemas(store_path: Path) -> None:
    async def body(client: ClientSession) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in run(store_path, body)}
    assert set(tools) == TOOLS
    recall = tools["recall"].input_schema
    assert recall["required"] == ["task"]
    assert recall["properties"]["k"]["type"] == "integer"
    assert "query" in json.dumps(recall["properties"]["policy"])
    assert tools["recall"].description and tools["report_outcome"].description
    assert tools["prune_plan"].input_schema["properties"]["apply"]["default"] is False
    assert {"recall_id", "prompt_block", "matches"} <= set(tools["recall"].output_schema["properties"])


def test_recall_then_report_outcome_credits_the_memory(store_path: Path) -> None:
    async def body(client: ClientSession) -> Any:
        recalled = await call(client, "recall", task="nginx fails to start after a config change", k=2, min_score=0)
        reported = await call(client, "report_outcome", recall_id=recalled["recall_id"], outcome="success")
        return recalled, reported

    recalled, reported = run(store_path, body)
    assert recalled["recall_id"].startswith("r-")
    assert len(recalled["matches"]) == 2
    best = recalled["matches"][0]
    assert "nginx" in best["task"].lower()
    assert recalled["prompt_block"].startswith(f'<procedural-memory recall_id="{recalled["recall_id"]}">')
    assert f'<memory id="{best["memory_id"]}"' in recalled["prompt_block"]
    assert reported["outcome"] == "success"
    # Every memory handed over is credited, failed runs shown as warnings included.
    shown = recalled["matches"] + recalled["warnings"]
    assert sorted(reported["credited"]) == sorted(m["memory_id"] for m in shown)
    store = open_store(store_path)
    assert store.memories.get(best["memory_id"]).succeeded == 1


def test_learn_adds_a_memory_and_list_and_show_find_it(store_path: Path) -> None:
    run_dict = {
        "task": "rotate the haproxy logs and compress old ones",
        "steps": [
            {"action": "ls /var/log/haproxy", "observation": "haproxy.log 2.1G"},
            {"action": "logrotate -f /etc/logrotate.d/haproxy", "observation": "rotated"},
        ],
        "outcome": "success",
    }

    async def body(client: ClientSession) -> Any:
        learned = await call(client, "learn", trajectory=run_dict, build="trajectory")
        again = await call(client, "learn", trajectory=run_dict, build="trajectory")
        listed = await call(client, "list_memories", limit=1)
        shown = await call(client, "show_memory", memory_id=listed[0]["memory_id"])
        missing = await client.call_tool("show_memory", {"memory_id": 99999})
        return learned, again, listed, shown, missing

    learned, again, listed, shown, missing = run(store_path, body)
    assert learned["added"] == 1 and again["added"] == 0 and again["skipped"] == 1
    assert listed[0]["task"] == run_dict["task"]
    assert "logrotate -f" in shown["text"]
    assert missing.is_error and "99999" in missing.content[0].text


def test_prune_plan_does_not_apply_unless_asked(store_path: Path) -> None:
    async def body(client: ClientSession) -> Any:
        plan = await call(client, "prune_plan", max_memories=1)
        applied = await call(client, "prune_plan", max_memories=1, apply=True)
        return plan, applied

    before = len(open_store(store_path).memories.list(status="active"))
    plan, applied = run(store_path, body)
    assert plan["applied"] is False and len(plan["retirements"]) == before - 1
    assert applied["applied"] is True
    assert len(open_store(store_path).memories.list(status="active")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_refuses_to_start_without_a_token(store_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "memp_cli", "mcp", "--http", "8765", "--db", str(store_path)],
                          env=_env(store_path), capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert "bearer token" in done.stderr


def test_http_answers_only_with_the_bearer_token(store_path: Path) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    port = _free_port()
    env = {**_env(store_path), "MEMP_MCP_TOKEN": "s3cret-token"}
    server = subprocess.Popen([sys.executable, "-m", "memp_cli", "mcp", "--http", str(port), "--db", str(store_path)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                refused = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
        assert refused.status_code == 401

        async def main() -> Any:
            with anyio.fail_after(TIMEOUT):
                headers = {"Authorization": "Bearer s3cret-token"}
                async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
                        streamable_http_client(url, http_client=http) as (read, write), \
                        ClientSession(read, write) as client:
                    await client.initialize()
                    return await call(client, "recall", task="put a clean mug in the cabinet", k=1)

        answer = anyio.run(main)
        assert answer["recall_id"].startswith("r-") and len(answer["matches"]) == 1
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)
