"""The store package: upgrades from released schemas, the migration rules, one transaction, and `check`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlite_utils
from conftest import EXAMPLES

from memp_cli import formats
from memp_cli.distill import offline_script
from memp_cli.embed import OnnxEmbedder
from memp_cli.ingest import build_memory
from memp_cli.migrations import migrations
from memp_cli.recall import recall_many
from memp_cli.store import NewMemory, bits, open_store
from memp_cli.store import db as store_db

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["rinse a dirty cup and put it in the coffee maker", "nginx will not start", "fix the failing unit test",
           "buy shoes under 50 dollars", "heat an egg"]


def _names() -> list[str]:
    return [m.name for m in migrations.pending(sqlite_utils.Database(memory=True))]


@pytest.fixture(scope="module")
def items() -> list[NewMemory]:
    """The bundled example runs as ingest builds them: offline scripts, proceduralization, MiniLM vectors."""
    runs = [t for f in sorted(EXAMPLES.glob("*.jsonl")) for t in formats.read(formats.Source(f, str(f)))]
    vectors = OnnxEmbedder().embed([r.task for r in runs])
    out = []
    for run, vector in zip(runs, vectors):
        script = offline_script(run)
        text, tokens = build_memory(run, "proceduralization", script)
        out.append(NewMemory(run, "proceduralization", script, text, tokens, vector))
    return out


def _write_as_released(path: Path, released: str, items: list[NewMemory]) -> None:
    """Make a store as the release whose last migration was `released` left it, holding `items`.

    The rows are written the way that release's Store.add_memories wrote them: the vec0 copy `memory_vec`, then the
    plain `memory_vectors` (from m006) and the bit pages (from m007) when the schema has them, `kind` and `scripts`.
    """
    conn = store_db.connect(path)
    names = _names()
    migrations.apply(sqlite_utils.Database(conn), stop_before=names[names.index(released) + 1])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    dim = len(items[0].vector)
    stamp = "2026-12-01T00:00:00+00:00"
    with store_db.write(conn):
        conn.execute(f"CREATE VIRTUAL TABLE memory_vec USING vec0(memory_id INTEGER PRIMARY KEY, "
                     f"embedding float[{dim}] distance_metric=cosine)")
        conn.execute("INSERT INTO meta(key, value) VALUES ('embed_model', 'memp-minilm'), ('embed_dim', ?)", [str(dim)])
        ids = []
        for item in items:
            t, s = item.trajectory, item.script
            assert s is not None
            conn.execute(
                "INSERT INTO trajectories(id, task, steps, outcome, score, source_id, source_file, source_line, "
                "metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [t.id, t.task, json.dumps([x.to_dict() for x in t.steps]), t.outcome, t.score, t.source_id,
                 t.source_file, t.source_line, json.dumps(t.metadata), stamp],
            )
            conn.execute(
                "INSERT INTO scripts(trajectory_id, model, prompt_version, script, input_tokens, output_tokens, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [t.id, s.model, s.prompt_version, s.text, s.input_tokens, s.output_tokens, stamp],
            )
            memory_id = conn.execute(
                "INSERT INTO memories(trajectory_id, kind, task, script, trajectory, tokens, model, prompt_version, "
                "created_at, updated_at, status, flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', NULL)",
                [t.id, item.build, t.task, s.text, item.trajectory_text, item.tokens, s.model, s.prompt_version,
                 stamp, stamp],
            ).lastrowid
            blob = store_db.pack(item.vector)
            conn.execute("INSERT INTO memory_vec(memory_id, embedding) VALUES (?, ?)", [memory_id, blob])
            if "memory_vectors" in tables:
                conn.execute("INSERT INTO memory_vectors(memory_id, embedding) VALUES (?, ?)", [memory_id, blob])
            conn.execute(
                "INSERT INTO memory_history(memory_id, version, event, new_script, new_trajectory, model, reason, "
                "created_at) VALUES (?, 1, 'built', ?, ?, ?, 'ingested', ?)",
                [memory_id, s.text, item.trajectory_text, s.model, stamp],
            )
            ids.append(memory_id)
        if "memory_bit_pages" in tables:  # m007's layout: one page of int64 ids, then the sign bits column-major
            page_bits = np.ascontiguousarray(bits.sign_bits([i.vector for i in items]).T)
            conn.execute("INSERT INTO memory_bit_pages(page, ids, bits) VALUES (0, ?, ?)",
                         [np.asarray(ids, dtype="<i8").tobytes(), page_bits.tobytes()])
    conn.close()


def _comparable(memory: Any) -> dict[str, Any]:
    data = memory.to_dict()
    data.pop("created_at")
    return data


@pytest.mark.parametrize("released", ["m008_full_text_on_text_changes", "m004_keywords_and_full_text"])
def test_a_store_from_a_release_upgrades_and_answers_as_a_new_one(tmp_path: Path, items, released: str) -> None:
    _write_as_released(tmp_path / "old.db", released, items)
    fresh = open_store(tmp_path / "fresh.db")
    fresh.memories.add(items, "memp-minilm")
    store: Any = open_store(tmp_path / "old.db")

    applied = [m.name for m in migrations.applied(sqlite_utils.Database(store.db))]
    assert applied == _names()
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"memory_vectors", "script_cache"} <= tables
    assert not {"memory_vec", "memory_bits", "memory_bit_pages", "scripts"} & tables
    columns = {r[1] for r in store.db.execute("PRAGMA table_info(memories)")}
    assert "build" in columns and "kind" not in columns
    report = store.check()
    assert report["ok"], report["problems"]
    assert report["vectors"] == report["memories"] == len(items)

    ids = list(range(1, len(items) + 1))
    assert [_comparable(m) for m in store.memories.get_many(ids)] == [
        _comparable(m) for m in fresh.memories.get_many(ids)
    ]
    assert store.memories.get(1).build == "proceduralization"
    script = items[0].script
    assert script is not None
    # m015: offline scripts leave the cache (made again, the same); version 1 copies no text, and reads back whole.
    assert store.memories.cached_script(items[0].trajectory.id, "offline", script.prompt_version) is None
    assert store.db.execute("SELECT count(*) FROM script_cache").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM memory_history WHERE new_script IS NOT NULL").fetchone()[0] == 0
    assert store.memories.history(1)[0]["new_script"] == script.text
    assert [{**h, "created_at": None} for h in store.memories.history(1)] == [
        {**h, "created_at": None} for h in fresh.memories.history(1)
    ]
    for vector in OnnxEmbedder().embed(QUERIES):
        for exact in (True, False):
            assert store.vectors.nearest(vector, 5, exact=exact) == fresh.vectors.nearest(vector, 5, exact=exact)
        assert store.vectors.similarities(vector, ids) == pytest.approx(fresh.vectors.similarities(vector, ids))
    assert store.keywords.full_text(["nginx", "mug"], 5) == fresh.keywords.full_text(["nginx", "mug"], 5)
    for policy in ("query", "hybrid", "avefact"):
        ours = recall_many(store, QUERIES, 3, policy, log=False)
        theirs = recall_many(fresh, QUERIES, 3, policy, log=False)
        assert [[m.memory.id for m in r.matches] for r in ours] == [[m.memory.id for m in r.matches] for r in theirs]
    # The upgraded store knows its trajectories (a re-ingest adds nothing) and purges as a new one does.
    assert store.memories.add(items, "memp-minilm") == {}
    more = open_store(tmp_path / "old.db")
    store.memories.retire(2, "test")
    assert store.memories.purge_retired() == 1
    assert more.check()["ok"] and more.vectors.count() == len(items) - 1


def test_migrations_are_sqlite_utils_functions_that_import_nothing_from_memp() -> None:
    tree = ast.parse((ROOT / "memp_cli" / "migrations.py").read_text())
    imported = [
        n.module or "." for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.level or "memp" in (n.module or ""))
    ]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if "memp" in a.name]
    assert imported == []
    names = _names()
    assert names[:8] == [
        "m001_initial", "m002_outcomes_history_retirement", "m003_held_memories", "m004_keywords_and_full_text",
        "m005_binary_index", "m006_plain_vectors", "m007_bit_pages", "m008_full_text_on_text_changes",
    ]
    assert store_db.LATEST_MIGRATION == names[-1]


def test_an_up_to_date_store_opens_and_searches_without_sqlite_utils(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    code = (
        "import sys\nfrom pathlib import Path\nfrom memp_cli.store import open_store\n"
        f"store = open_store(Path({str(isolated / 'memp.db')!r}))\n"
        "print(len(store.vectors.nearest(store.vectors.vector(1), 3)), 'sqlite_utils' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "False"]


def test_writes_inside_one_transaction_land_together_or_not_at_all(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    store = open_store(isolated / "memp.db")
    with pytest.raises(RuntimeError), store.write():
        store.settings.set("update_policy", "vanilla")
        store.memories.retire(1, "test")
        store.log.record_outcome(None, [2], "failure", None, "vanilla", None, applied=True)
        raise RuntimeError("interrupted")
    assert store.settings.get("update_policy") is None
    assert store.memories.get(1).status == "active" and store.memories.get(2).failed == 0
    with store.write():
        store.settings.set("update_policy", "vanilla")
        store.memories.retire(1, "test")
    assert open_store(isolated / "memp.db").memories.get(1).status == "retired"


def test_search_skips_held_and_retired_memories_on_both_paths(memp, isolated: Path, monkeypatch) -> None:
    import memp_cli.store.vectors as vectors_module

    memp("ingest", str(EXAMPLES))
    store = open_store(isolated / "memp.db")
    query = OnnxEmbedder().embed(["put a clean mug in the coffee machine"])[0]
    nearest = [i for i, _ in store.vectors.nearest(query, 10, exact=True)]
    for memory_id in nearest[:8]:
        store.memories.retire(memory_id, "test")
    exact = store.vectors.nearest(query, 3, exact=True)
    assert [i for i, _ in exact][:2] == nearest[8:10]
    # So few candidates that the bit pass finds mostly retired memories: the search still returns 3 active ones.
    monkeypatch.setattr(vectors_module, "MIN_CANDIDATES", 4)
    monkeypatch.setattr(vectors_module, "OVERSAMPLE", 1)
    assert store.vectors.nearest(query, 3, exact=False) == exact


def test_check_finds_vectors_that_do_not_match(memp, isolated: Path) -> None:
    from memp_cli.store.bitfile import read_header, side_path

    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    store: Any = open_store(isolated / "memp.db")
    assert store.check()["ok"]
    store.vectors.nearest(store.vectors.vector(1), 3, exact=False)  # writes the side file
    side = side_path(isolated / "memp.db")
    raw = bytearray(side.read_bytes())
    header = read_header(side)
    assert header is not None
    raw[header.rows_start() + 16] ^= 0xFF  # memory 1's first code byte (one list: the rows in id order)
    side.write_bytes(bytes(raw))
    with store.write():
        store.db.execute("DELETE FROM memory_vectors WHERE memory_id = 3")  # behind the counters' back
    problems = store.check()["problems"]
    assert "1 memories have no vector" in problems
    assert "the vector count in meta is 5, not 4" in problems
    assert "the side file memp.db-bits holds 5 vectors, not 4" in problems
    assert any("sign bits in the side file memp.db-bits do not match" in p for p in problems)


def test_the_counters_in_meta_follow_every_write_and_check_compares_them(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    store: Any = open_store(isolated / "memp.db")

    def real() -> tuple[int, int]:
        one = store.db.execute
        return (one("SELECT count(*) FROM memory_keywords").fetchone()[0],
                one("SELECT count(*) FROM memories WHERE status = 'active'").fetchone()[0])

    def counted() -> tuple[int, int]:
        return tuple(store.keywords.state()[1:3])  # type: ignore[return-value]

    assert counted() == real() and real()[1] > 3
    recall_many(store, ["nginx will not start"], 3, "avefact", log=False)  # extracts every memory's keywords
    assert counted() == real() and real()[0] > 0
    store.memories.retire(1, "test")
    store.memories.retire(2, "test")
    store.memories.retire(2, "again")
    assert counted() == real()
    store.memories.restore(1)
    assert counted() == real()
    assert store.memories.purge_retired() == 1
    assert counted() == real()
    with pytest.raises(RuntimeError), store.write():
        store.memories.retire(3, "test")
        raise RuntimeError("interrupted")  # the counter's move is undone with the write
    store.keywords.reset()
    assert counted() == real() and real()[0] == 0
    assert store.check()["ok"]
    with store.write():
        store.db.execute("UPDATE meta SET value = '7' WHERE key = 'active_memories'")  # behind the triggers' back
    assert store.check()["problems"] == [f"meta counter active_memories says 7, the store holds {real()[1]}"]
