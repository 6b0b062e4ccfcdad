"""The one seam for chat-model calls: resolve a model, ask it for JSON, retry what the provider failed at.

Provider errors (time-outs, rate limits, dropped connections) are retried with exponential backoff; an answer that
arrives but cannot be parsed is asked for once more, then given up on: asking a third time rarely helps and costs.
Calls may run on several threads at once (memp_cli/pool.py); a rate limit seen by one pauses them all.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import MalformedAnswer, ModelError
from .tokens import count_tokens

if TYPE_CHECKING:
    import llm

T = TypeVar("T")
Warn = Callable[[str], None]

ATTEMPTS = 3
# How many places in an answer are tried as the start of its JSON before giving up on it.
MAX_CANDIDATES = 16
REASK = "\n\n(Your previous answer could not be used: {error}. Answer with the JSON only.)"


def _quiet(_: str) -> None:
    return None


@dataclass
class CallSettings:
    """How this process calls models: whether to log each call to llm's database, and options for every model."""

    log: bool = False
    options: dict[str, str] = field(default_factory=dict)


# Set once by the command line (`--log`, `-o/--option`); the Python API may set it too.
CALLS = CallSettings()


def llm_logs_on() -> bool:
    """Return whether the user's llm logs prompts (`llm logs on`, the default; `llm logs off` makes a marker file)."""
    import llm

    return not (llm.user_dir() / "logs-off").exists()


def configure(log: bool = False, options: Sequence[tuple[str, str]] = ()) -> None:
    """Set how memp's model calls are made: logged to llm's log database when asked, with these model options.

    Logging is off by default (an ingest makes a call per run); `log` turns it on, and so does $MEMP_LOG=1 unless
    the user has turned llm's own logging off with `llm logs off`.
    """
    CALLS.log = log or (os.environ.get("MEMP_LOG", "") not in ("", "0") and llm_logs_on())
    CALLS.options = dict(options)


def _model_options(model: llm.Model) -> dict[str, Any]:
    """Return the configured options as `model` takes them, or raise ModelError naming the one it refuses."""
    if not CALLS.options:
        return {}
    try:
        model.Options(**CALLS.options)
    except Exception as exc:  # noqa: BLE001 (pydantic's ValidationError, or a plugin's own)
        raise ModelError(f"model {model.model_id} does not take these options ({CALLS.options}): "
                         f"{' '.join(str(exc).split())[:200]}") from None
    return dict(CALLS.options)


def _log_call(response: Any) -> None:
    """Write a model's response to llm's log database, as `llm prompt` does (`llm logs` shows it)."""
    import sqlite_utils
    from llm.cli import logs_db_path
    from llm.migrations import migrate

    path = logs_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    migrate(db)
    response.log_to_db(db)


def resolve_name(name: str | None) -> str:
    """Return the chat model to use: the name given, else $MEMP_MODEL, else llm's default."""
    if name:
        return name
    if os.environ.get("MEMP_MODEL"):
        return os.environ["MEMP_MODEL"]
    import llm

    return llm.get_default_model()


def chat_model(name: str, role: str = "model") -> llm.Model:
    """Return the `llm` chat model called `name` (id or alias), or raise ModelError when it is unknown or lacks a key."""
    import llm

    try:
        model = llm.get_model(name)
        model.get_key()  # raises when the model needs a key nobody set
    except (llm.UnknownModelError, llm.NeedsKeyException) as exc:
        raise ModelError(f"{role} {name} unavailable: {exc}") from None
    return model


def retry_delay() -> float:
    """Return the first backoff delay in seconds: $MEMP_RETRY_DELAY, else 1."""
    try:
        return max(0.0, float(os.environ.get("MEMP_RETRY_DELAY", "1")))
    except ValueError:
        return 1.0


class Pause:
    """When this process may call a model again: a rate limit seen by any thread holds every thread back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0

    def hold(self, seconds: float) -> float:
        """Keep every caller from starting a call for `seconds` from now; return when the hold ends."""
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)
            return self._until

    def release(self, until: float) -> None:
        """End the hold that `hold` returned `until` for, unless another caller held longer meanwhile."""
        with self._lock:
            if self._until <= until:
                self._until = 0.0

    def wait(self) -> float:
        """Sleep until no other caller's hold is left; return how long this caller slept."""
        slept = 0.0
        while True:
            with self._lock:
                until = self._until
            left = until - time.monotonic()
            if left <= 0:
                return slept
            time.sleep(left)
            slept += left
            with self._lock:
                if self._until <= until:  # not held longer meanwhile
                    return slept


# One per process: the provider's limits are per key, not per thread.
PAUSE = Pause()
RATE_LIMIT = re.compile(r"\b429\b|rate.?limit|too many requests|quota", re.IGNORECASE)


def is_rate_limit(exc: BaseException) -> bool:
    """Return True when an error reads as the provider's rate limit (HTTP 429, "rate limit", a RateLimitError)."""
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status == 429 or bool(RATE_LIMIT.search(f"{type(exc).__name__} {exc}"))


def with_backoff(call: Callable[[], T], what: str, warn: Warn = _quiet, attempts: int = ATTEMPTS) -> T:
    """Return `call()`, retried on any error with exponential backoff; raise ModelError after the last attempt.

    The first delay is $MEMP_RETRY_DELAY seconds (default 1), doubling each time. Plugins raise errors of every
    type for time-outs, rate limits and dropped connections, so none is singled out for retrying; a rate limit
    also pauses every other thread's next call (PAUSE) until its wait is over, since they share the key's limit.
    """
    delay = retry_delay()
    for attempt in range(attempts):
        PAUSE.wait()
        try:
            return call()
        except Exception as exc:  # provider errors come in many types
            if attempt == attempts - 1:
                raise ModelError(f"{what} failed: {exc} ({attempts} attempts)") from exc
            wait = delay * 2**attempt
            warn(f"{what}: {exc}; retrying in {wait:g}s")
            until = PAUSE.hold(wait) if is_rate_limit(exc) else None  # every other thread waits it out too
            time.sleep(wait)
            if until is not None:
                PAUSE.release(until)
    raise AssertionError("unreachable")


def _candidates(text: str) -> Iterator[str]:
    """Yield the places JSON may start in an answer: fenced blocks first, then each '{' or '[' in order."""
    for fence in re.finditer(r"```(?:json)?[ \t]*\n?(.*?)```", text, re.DOTALL | re.IGNORECASE):
        yield fence.group(1)
    yield text


def extract_json(text: str, parse: Callable[[Any], T]) -> T:
    """Return `parse` of the first JSON object or array in `text` that it accepts; raise ValueError if none.

    Looks in fenced ```json blocks first, then at each '{' or '[' in turn (so "Step [1] ... {...}" still works).
    `parse` raises ValueError (or TypeError, KeyError) for a value of the wrong shape.
    """
    decoder = json.JSONDecoder()
    error = "no JSON object or array in the answer"
    tried = 0
    for body in _candidates(text):
        i = 0
        while tried < MAX_CANDIDATES:
            starts = [p for p in (body.find("{", i), body.find("[", i)) if p >= 0]
            if not starts:
                break
            start = min(starts)
            tried += 1
            try:
                value, end = decoder.raw_decode(body, start)
            except (json.JSONDecodeError, RecursionError) as exc:
                error = f"not valid JSON: {getattr(exc, 'msg', exc)}"
                i = start + 1
                continue
            try:
                return parse(value)
            except (ValueError, TypeError, KeyError) as exc:
                error = str(exc) or type(exc).__name__
                i = end  # whatever is nested inside this value was part of the wrong answer
    raise ValueError(error)


@dataclass
class Answer(Generic[T]):
    """A model's parsed answer, its raw text and what it cost (summed over a re-ask)."""

    value: T
    text: str
    input_tokens: int
    output_tokens: int


def ask_json(
    model: llm.Model,
    prompt: str,
    *,
    parse: Callable[[Any], T],
    system: str | None = None,
    schema: dict[str, Any] | None = None,
    warn: Warn = _quiet,
) -> Answer[T]:
    """Return the model's answer to `prompt`, parsed; raise MalformedAnswer or ModelError when there is none.

    `schema` is passed only to models that support one. Provider errors are retried with backoff; a malformed
    answer is asked for once more, with the reason it could not be used.
    """
    kwargs: dict[str, Any] = {}
    if system is not None:
        kwargs["system"] = system
    if schema is not None and getattr(model, "supports_schema", False):
        kwargs["schema"] = schema
    kwargs.update(_model_options(model))
    name = model.model_id
    tokens_in = tokens_out = 0
    text, asked = "", prompt
    for ask in range(2):

        def send(asked: str = asked) -> tuple[str, Any]:
            response = model.prompt(asked, **kwargs)
            text = response.text()
            if CALLS.log:
                _log_call(response)
            return text, response.usage()

        text, usage = with_backoff(send, f"model {name}", warn)
        # Not every plugin reports usage; count with tiktoken then, so costs are never blank.
        tokens_in += usage.input if usage.input is not None else count_tokens((system or "") + asked)
        tokens_out += usage.output if usage.output is not None else count_tokens(text)
        try:
            return Answer(extract_json(text, parse), text, tokens_in, tokens_out)
        except ValueError as exc:
            if ask == 1:
                raise MalformedAnswer(f"model {name} gave no usable answer ({exc})") from None
            warn(f"model {name} gave an answer that could not be used ({exc}); asking once more")
            asked = prompt + REASK.format(error=exc)
    raise AssertionError("unreachable")
