"""Bad input and foreign files (issue 14, cases 5-7): each is one line naming the file (and line), nothing is stored,
and memp writes nothing to a file that is not its own store."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import EXAMPLES, traj, write_jsonl

from memp_cli.ingest import IngestOptions, ingest
from memp_cli.store import db as store_db
from memp_cli.store import open_store
from memp_cli.store.runs import steps_text


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [traj(f"calibrate sensor {i} on bench {i % 7}", actions=(f"open panel {i}", f"set gain {i}"))
            for i in range(offset, offset + n)]


def _stored(db: Path) -> int:
    if not db.exists() or db.stat().st_size == 0:
        return 0
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM trajectories").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("memp: error: ")
    return line


def _memp_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memp_cli", *args], capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, **(env or {})})


# -- case 5: bad input stores nothing, in one line ------------------------------------------------------------------


def test_a_lone_surrogate_at_line_101_stores_nothing(memp, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "runs.jsonl", _rows(100))
    with path.open("a") as out:
        out.write('{"task": "broken \\ud800 here", "steps": [{"action": "a"}]}\n')
        out.write(json.dumps(_rows(1, 500)[0]) + "\n")
    line = _one_line_error(memp("ingest", str(path), "--build", "trajectory", ok=False))
    assert f"{path}:101: a lone surrogate \\ud800" in line
    assert _stored(tmp_path / "memp.db") == 0


def test_invalid_utf8_in_a_line_names_it(memp, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "runs.jsonl", _rows(3))
    with path.open("ab") as out:
        out.write(b'{"task": "caf\xe9", "steps": [{"action": "a"}]}\n')
    line = _one_line_error(memp("ingest", str(path), "--build", "trajectory", ok=False))
    assert f"{path}:4: not UTF-8 text" in line
    assert _stored(tmp_path / "memp.db") == 0


def test_a_file_name_that_is_not_utf8_is_read_and_named_printably(memp, tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    good = folder / os.fsdecode(b"caf\xe9-runs.jsonl")
    write_jsonl(good, _rows(3))
    report = memp.json("ingest", str(folder), "--build", "trajectory")
    assert report["added"] == 3
    sources = {r[0] for r in sqlite3.connect(tmp_path / "memp.db").execute("SELECT source_file FROM trajectories")}
    assert sources == {str(folder) + "/caf\\xe9-runs.jsonl"}
    bad = folder / os.fsdecode(b"bad-\xff.jsonl")
    bad.write_text("{not json\n")
    line = _one_line_error(memp("ingest", str(folder), "--build", "trajectory", ok=False))
    assert "bad-\\xff.jsonl:1: invalid JSON" in line


def test_a_newline_in_a_file_name_does_not_split_the_error(memp, tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.jsonl"
    path.write_text("{oops\n")
    line = _one_line_error(memp("ingest", str(path), ok=False))
    assert "two\\nlines.jsonl:1: invalid JSON" in line


def test_a_file_appended_to_during_ingest_is_read_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "growing.jsonl", _rows(150))
    store = open_store(tmp_path / "s.db")

    def append(total: int) -> None:
        # Between reading and storing: a second read would meet these lines (and fail on the last).
        with path.open("a") as out:
            out.writelines(json.dumps(r) + "\n" for r in _rows(50, 1000))
            out.write("{not json\n")

    report = ingest(store, [str(path)], IngestOptions(build="trajectory"), on_total=append)
    assert (report.read, report.added) == (150, 150)
    assert store.memories.stats()["trajectories"] == 150
    store.close()


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("big.jsonl", '{"task": "t", "steps": [{"action": "a"}], "score": 1' + "0" * 400 + "}\n",
         "big.jsonl:1: 'score' is too large a number"),
        ("inf.jsonl", '{"task": "t", "steps": [{"action": "a"}], "score": 1e999}\n', "inf.jsonl:1: 1e999 is too large"),
        ("nan.jsonl", '{"task": "t", "steps": [{"action": "a"}], "score": NaN}\n', "nan.jsonl:1: NaN is not a number"),
        ("calls.jsonl", json.dumps({"messages": [{"role": "user", "content": "deploy it"},
                                                {"role": "assistant", "content": "ok", "tool_calls": 5}]}) + "\n",
         "calls.jsonl:1: messages[1].tool_calls must be a list"),
        ("tau.json", '[{"task_id": 1, "reward": 1' + "0" * 400 + ', "traj": []}]', "runs[0]: 'reward' is too large"),
    ],
)
def test_odd_values_are_one_line_errors(memp, tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert message in _one_line_error(memp("ingest", str(path), ok=False))
    assert _stored(tmp_path / "memp.db") == 0


def test_odd_but_readable_values_are_read(memp, tmp_path: Path) -> None:
    claude = tmp_path / "session.jsonl"
    write_jsonl(claude, [
        {"type": "user", "sessionId": "s1", "message": {"role": "user", "content": "list the files"}},
        {"type": "assistant", "sessionId": "s1", "message": {"role": "assistant", "content": [
            {"type": "tool_use", "id": ["t", 1], "name": "Bash", "input": {"command": "ls -la"}}]}},
        {"type": "user", "sessionId": "s1", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": ["t", 1], "content": "README.md"}]}},
    ])
    log = tmp_path / "webshop.txt"
    log.write_text("Action: reset\nObservation: Instruction:\ni want a red scarf\n[Search]\n"
                   "Action: search[red scarf]\nObservation: results\n"
                   "Action: click[buy now]\nObservation: Your score (min 0.0, max 1.0): 0.5.\n")
    assert memp.json("ingest", str(claude), str(log), "--build", "trajectory")["added"] == 2
    rows = dict(sqlite3.connect(tmp_path / "memp.db").execute("SELECT task, score FROM trajectories"))
    assert rows["i want a red scarf"] == 0.5
    assert "README.md" in steps_text(sqlite3.connect(tmp_path / "memp.db").execute(
        "SELECT steps FROM trajectories WHERE task = 'list the files'").fetchone()[0])


# -- case 7: pipes are files ----------------------------------------------------------------------------------------


def test_a_fifo_is_read_as_a_file(memp, tmp_path: Path) -> None:
    fifo = tmp_path / "runs.jsonl"
    os.mkfifo(fifo)
    body = "".join(json.dumps(r) + "\n" for r in _rows(5))

    def feed() -> None:
        with fifo.open("w") as out:
            out.write(body)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        result = memp("ingest", str(fifo), "--build", "trajectory", "--json", ok=False)
    finally:
        if writer.is_alive():  # nothing read the pipe: open it here so the writer is not left blocked
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["read"], report["added"]) == (5, 5)


def test_process_substitution_is_read(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "src.jsonl", _rows(4))
    db = tmp_path / "p.db"
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m memp_cli ingest --json --build trajectory --db "{db}" <(cat "{src}")'],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 4


# -- case 5 and 7: options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("recall", "x", "-k", "0"),
        ("recall", "x", "-k", str(2**63)),
        ("recall", "x", "-k", str(2**31)),
        ("recall", "x", "--min-score", "nan"),
        ("recall", "x", "--max-tokens", "-1"),
        ("recall", "bad \udcff task"),
        ("show", str(2**63)),
        ("history", str(2**63 + 5)),
        ("restore", "0"),
        ("revert", "1", "--to", str(2**64)),
        ("prune", "--dedupe", "nan"),
        ("prune", "--dedupe", "0"),
        ("prune", "--dedupe", "-5"),
        ("prune", "--max-memories", "-1"),
        ("prune", "--stale-days", "-1"),
        ("prune", "--confident-below", "inf"),
        ("ingest", "--score", "nan", "x.jsonl"),
        ("ingest", "--success-threshold", "nan", "x.jsonl"),
        ("ingest", "--keep-best", "0", "x.jsonl"),
        ("update", "--memory", "1", "--score", "nan"),
        ("update", "--memory", str(2**63), "-o", "success"),
        ("update", "--memory", "1", "-o", "success", "--every", "-2"),
        ("list", "--limit", "-1"),
        ("export", "--skills", "out", "--min-success", "nan"),
        ("config", "update_every", "²"),
        ("config", "update_every", str(2**63)),
        ("eval", "x.jsonl", "--test-share", "nan"),
    ],
)
def test_bad_numbers_and_text_in_options_are_usage_errors(memp, args: tuple[str, ...]) -> None:
    result = memp(*args, ok=False)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "Invalid value" in result.stderr


def test_the_largest_k_still_answers(memp) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"), "--build", "trajectory")
    answer = memp.json("recall", "restart nginx", "-k", str(2**31 - 1))
    assert answer["matches"]


def test_a_recall_line_with_a_huge_k_is_named(memp) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"), "--build", "trajectory")
    result = memp("recall", "-", input=json.dumps({"task": "restart nginx", "k": 2**64}) + "\n", ok=False)
    assert "stdin:1" in _one_line_error(result)


def test_a_repeated_memory_is_credited_once(memp) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"), "--build", "trajectory")
    result = memp("update", "--memory", "1", "--memory", "1", "-o", "success", "-p", "vanilla")
    assert "credited 1 memories" in result.stderr
    assert memp.json("show", "1")["succeeded"] == 1


def test_the_python_api_credits_a_repeated_memory_once(tmp_path: Path) -> None:
    from memp_cli import Memp

    mem = Memp(tmp_path / "api.db")
    mem.ingest(str(EXAMPLES / "devops.jsonl"), build="trajectory")
    report = mem.update(memory_ids=[1, 1, 1], outcome="success", policy="vanilla")
    assert report.credited == [1]
    assert mem.store.memories.get(1).succeeded == 1


# -- case 6: never write to a file memp does not recognise ----------------------------------------------------------


def _untouched(path: Path) -> tuple[bytes, list[str]]:
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("kind", ["table", "view", "trigger-table", "not-sqlite"])
def test_another_programs_file_is_refused_untouched(memp, tmp_path: Path, kind: str) -> None:
    app = tmp_path / "app" / "app.db"
    app.parent.mkdir()
    if kind == "not-sqlite":
        app.write_text("name,amount\nrent,1200\n")
    else:
        conn = sqlite3.connect(app)
        statements = {
            "table": ["CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)", "INSERT INTO invoices VALUES (1, 2)"],
            "view": ["CREATE VIEW answer AS SELECT 42 AS n"],
            "trigger-table": ["CREATE TABLE t(x)", "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END"],
        }[kind]
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
    before = _untouched(app)
    for command in (("stats",), ("ingest", str(EXAMPLES / "devops.jsonl")), ("recall", "restart nginx")):
        line = _one_line_error(memp(*command, "--db", str(app), ok=False))
        assert "not a memp store" in line
    assert _untouched(app) == before  # same bytes (no WAL switch, no tables), no -wal, -shm or -journal beside it
    if kind != "not-sqlite":
        assert sqlite3.connect(app).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_fifo_as_the_store_is_refused_without_a_journal(memp, tmp_path: Path) -> None:
    fifo = tmp_path / "dev" / "store"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    line = _one_line_error(memp("stats", "--db", str(fifo), ok=False))
    assert "not a memp store (not a regular file)" in line
    assert sorted(p.name for p in fifo.parent.iterdir()) == ["store"]


def test_an_empty_sqlite_database_becomes_a_store(memp, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE scratch(x)")
    conn.execute("DROP TABLE scratch")
    conn.commit()
    conn.close()
    assert path.stat().st_size > 0
    assert memp.json("stats", "--db", str(path))["trajectories"] == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        empty = tmp_path / "empty.db"
        empty.touch(mode=0o644)
        assert _mode(empty) == 0o644
        fresh = tmp_path / "sub" / "fresh.db"
        for path in (empty, fresh):
            store = open_store(path)
            store.memories.stats()
            store.settings.set("update_every", "2")  # a write, so the WAL and its index exist
            side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(p.exists() for p in side)
            assert {p.name: _mode(p) for p in (path, *side)} == {p.name: 0o600 for p in (path, *side)}
            store.close()
    finally:
        os.umask(old)


# -- case 7: a full disk says what was stored -----------------------------------------------------------------------


def test_a_full_disk_says_how_much_was_stored_and_a_rerun_continues(memp, tmp_path: Path, monkeypatch) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"), "--build", "trajectory")
    db = tmp_path / "memp.db"
    before = _stored(db)
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    original = store_db.migrate

    def small(conn, path):  # type: ignore[no-untyped-def]
        original(conn, path)
        conn.execute(f"PRAGMA max_page_count = {pages + 120}")

    monkeypatch.setattr(store_db, "migrate", small)
    src = write_jsonl(tmp_path / "more.jsonl", _rows(400))
    line = _one_line_error(memp("ingest", str(src), "--build", "trajectory", ok=False))
    stored = _stored(db) - before
    assert 0 < stored < 400
    assert f"the disk is full: {stored} memories from this command were stored before it filled" in line
    assert "run it again" in line
    monkeypatch.setattr(store_db, "migrate", original)
    assert memp.json("ingest", str(src), "--build", "trajectory")["added"] == 400 - stored


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to look at open files")
def test_the_spool_is_private_and_has_no_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "runs.jsonl", _rows(3))
    store = open_store(tmp_path / "s.db")
    seen: list[tuple[str, int]] = []

    def look(total: int) -> None:
        for fd in Path("/proc/self/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
                seen.append((target, stat.S_IMODE(os.fstat(int(fd.name)).st_mode)))

    ingest(store, [str(path)], IngestOptions(build="trajectory"), on_total=look)
    store.close()
    assert seen and all(mode == 0o600 for _, mode in seen), seen


def test_runs_given_to_the_api_with_a_lone_surrogate_store_nothing(tmp_path: Path) -> None:
    from memp_cli import Memp
    from memp_cli.errors import InputError

    memp = Memp(tmp_path / "api.db")
    good = traj("water the plants")
    bad = {**traj("feed the cat"), "metadata": {"note": "x\udcff"}}
    with pytest.raises(InputError, match=r"<api>:2: holds \\xff, a lone surrogate"):
        memp.ingest(good, bad, build="trajectory")
    assert memp.store.memories.stats()["trajectories"] == 0
    with pytest.raises(InputError, match="'score' is too large"):
        memp.ingest({**good, "score": float("inf")}, build="trajectory")
