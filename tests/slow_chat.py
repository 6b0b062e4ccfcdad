"""A chat model that takes its time: answers each run with a procedure made from its task, after a fixed latency.

Registered through llm's plugin manager, as tests/conftest.py's FakeChat is. Run as a script, it registers itself and
runs `memp` with the arguments given (for a process a test can kill): $SLOW_CHAT_LATENCY sets the latency and
$SLOW_CHAT_LOG names a file that gets one line per answer given.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import llm

TASK = re.compile(r"^Task: (.*)$", re.MULTILINE)


def answer_for(task: str) -> str:
    """Return the procedure the slow model answers for a run of `task` (the same whoever asks, in whatever order)."""
    return json.dumps({"when_to_use": f"tasks like {task}", "parameters": ["{thing}"],
                       "steps": [f"look into {task}", "fix {thing}"], "pitfalls": []})


def script_for(task: str) -> str:
    """Return the script memp renders from answer_for(task)."""
    return f"When to use: tasks like {task}\nParameters: {{thing}}\nSteps:\n1. look into {task}\n2. fix {{thing}}"


@dataclass
class Call:
    """One call the model took: which run, when it started and ended (time.monotonic), and what it did."""

    task: str
    start: float
    end: float = 0.0
    outcome: str = "answered"


class SlowChat(llm.Model):
    """Answers after `latency` seconds; `rate_limit` tasks get one 429 first, `unusable` tasks never a procedure."""

    model_id = "slow-chat"
    supports_schema = True

    def __init__(self, latency: float = 0.0, log: str | None = None) -> None:
        self.latency = latency
        self.log = log
        self.rate_limit: set[str] = set()
        self.unusable: set[str] = set()
        self.calls: list[Call] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def]
        found = TASK.search(prompt.prompt)
        task = found.group(1) if found else "?"
        call = Call(task, time.monotonic())
        with self._lock:
            self.calls.append(call)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            limited = task in self.rate_limit
            self.rate_limit.discard(task)
        try:
            if limited:
                call.outcome = "429"
                raise RuntimeError("429 Too Many Requests: rate limit reached")
            if self.latency:
                time.sleep(self.latency)
            reply = "I would rather not." if task in self.unusable else answer_for(task)
            call.outcome = "unusable" if task in self.unusable else "answered"
        finally:
            call.end = time.monotonic()
            with self._lock:
                self.running -= 1
        if self.log:
            with open(self.log, "a") as out:
                out.write(task + "\n")
        response.set_usage(input=len(prompt.prompt.split()), output=len(reply.split()))
        yield reply


class SlowPlugin:
    """Registers one SlowChat with llm."""

    __name__ = "SlowPlugin"

    def __init__(self, chat: SlowChat) -> None:
        self.chat = chat

    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(self.chat)


def register(chat: SlowChat) -> None:
    """Make `chat` known to llm (undo with unregister())."""
    llm.plugins.pm.register(SlowPlugin(chat), name="slow-chat-plugin")


def unregister() -> None:
    """Forget the slow model registered by register()."""
    llm.plugins.pm.unregister(name="slow-chat-plugin")


if __name__ == "__main__":
    register(SlowChat(float(os.environ.get("SLOW_CHAT_LATENCY", "0")), os.environ.get("SLOW_CHAT_LOG")))
    from memp_cli.cli import main

    sys.argv = ["memp", *sys.argv[1:]]
    main()
