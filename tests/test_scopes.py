"""Scopes: namespaces inside one store that recall, list, prune, export and update keep apart."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, traj, write_jsonl
from test_mcp import call, run

from memp_cli import Memp
from memp_cli.records import Step, Trajectory
from memp_cli.store import NewMemory, open_store, scan
from memp_cli.store import vectors as store_vectors

POLICIES = ("procedural", "query", "avefact", "hybrid", "random")
TASKS = ["put a clean mug in the coffee machine", "nginx fails to start after a config change",
         "fix the failing unit test", "heat an egg and put it on the table"]


def _example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(EXAMPLES.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _twin(row: dict[str, Any], mark: str) -> dict[str, Any]:
    """Return the run with the same task and actions but observations marked: another run, as alike as can be."""
    steps = [{**s, "observation": f"{s.get('observation', '')} [{mark}]"} for s in row["steps"]]
    return {**row, "id": f"{row.get('id', '')}-{mark}", "steps": steps}


@pytest.fixture
def two_scopes(memp, tmp_path: Path) -> int:
    """Ingest the bundled examples into scope a, and their twins (same tasks) into scope b; return how many each."""
    rows = _example_rows()
    memp("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows)), "--scope", "a", "-m", "offline")
    memp("ingest", str(write_jsonl(tmp_path / "b.jsonl", [_twin(r, "b") for r in rows])), "--scope", "b",
         "-m", "offline")
    return len(rows)


def _scopes_of(recall: dict[str, Any]) -> set[str]:
    return {m["scope"] for m in recall["matches"] + recall["warnings"]}


@pytest.mark.parametrize("policy", POLICIES)
def test_recall_never_crosses_scopes_under_any_policy(memp, two_scopes: int, policy: str) -> None:
    for task in TASKS:
        for scope in ("a", "b"):
            got = memp.json("recall", task, "-k", "6", "-p", policy, "--min-score", "0", "--scope", scope)
            assert got["matches"], f"{policy} found nothing for {task!r} in {scope}"
            assert _scopes_of(got) == {scope}
        both = memp.json("recall", task, "-k", "6", "-p", policy, "--min-score", "0", "--scope", "a", "--scope", "b")
        every = memp.json("recall", task, "-k", "6", "-p", policy, "--min-score", "0", "--scope", "*")
        if policy != "random":
            # Twins tie with their originals: asked for both scopes, both answer.
            assert _scopes_of(both) == _scopes_of(every) == {"a", "b"}
        # The default is the write scope, 'default', which holds nothing here.
        assert memp.json("recall", task, "-p", policy, "--min-score", "0")["matches"] == []


def test_batch_recall_on_preloaded_vectors_keeps_to_its_scope(memp, two_scopes: int) -> None:
    out = memp("recall", "-", "-k", "5", "--min-score", "0", "--scope", "b", "-p", "query",
               input="\n".join(TASKS) + "\n").stdout
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(TASKS)
    assert all(_scopes_of(a) == {"b"} for a in answers)


def test_each_store_part_filters_by_scope(memp, two_scopes: int) -> None:
    from memp_cli import keywords
    from memp_cli.embed import OnnxEmbedder
    from memp_cli.procedure_index import index_for

    store = open_store(Path(memp.json("stats")["path"]))
    in_a = {m.id for m in store.memories.list(scopes=["a"])}
    assert len(in_a) == two_scopes
    hits = store.keywords.full_text(["nginx", "mug", "test", "egg"], 100, ["a"])
    assert hits and {i for i, _ in hits} <= in_a
    assert len(store.keywords.full_text(["nginx", "mug", "test", "egg"], 100)) > len(hits)
    embedder = OnnxEmbedder()
    keywords.ensure(store, embedder)
    assert set(store.keywords.index(["a"])[0]) == in_a
    assert len(store.keywords.index()[0]) == 2 * two_scopes
    [vector] = embedder.embed([TASKS[0]])
    assert {i for i, _ in store.vectors.nearest(vector, 100, scopes=["a"])} == in_a
    index = index_for(store, embedder, "memp-minilm")
    assert {int(i) for i in index.ids[index.in_scopes(["a"])]} == in_a
    assert store.memories.scopes_of([m.trajectory_id for m in store.memories.list(scopes=["b"], limit=2)]) \
        == {m.trajectory_id: "b" for m in store.memories.list(scopes=["b"], limit=2)}


def _memory(task: str, vector: list[float], scope: str) -> NewMemory:
    run_ = Trajectory(task, [Step("act")], "success")
    return NewMemory(run_, "trajectory", None, f"Task: {task}", 5, vector, scope=scope)


def test_a_small_scope_crowded_out_of_the_bit_pass_still_gets_k(tmp_path: Path, monkeypatch) -> None:
    rng = random.Random(7)
    query = [1.0] + [0.0] * 383

    def near(spread: float) -> list[float]:
        return [1.0] + [rng.gauss(0, spread) for _ in range(383)]

    store = open_store(tmp_path / "bits.db")
    # 400 memories of scope big lie right by the query; the 5 of scope small are far from it.
    items = [_memory(f"big {n}", near(0.01), "big") for n in range(400)]
    items += [_memory(f"small {n}", near(1.0), "small") for n in range(5)]
    store.memories.add(items, "memp-minilm")
    small = {m.id for m in store.memories.list(scopes=["small"])}
    monkeypatch.setattr(store_vectors, "QUANTIZED_ABOVE", 10)
    monkeypatch.setattr(store_vectors, "MIN_CANDIDATES", 20)
    monkeypatch.setattr(store_vectors, "OVERSAMPLE", 2)
    for exact in (None, True, False):
        hits = store.vectors.nearest(query, 3, exact=exact, scopes=["small"])
        assert len(hits) == 3 and {i for i, _ in hits} <= small
    assert {i for i, _ in store.vectors.nearest(query, 3)} <= {m.id for m in store.memories.list(scopes=["big"])}
    store.vectors.preload()
    [hits] = store.vectors.nearest_many([query], 3, scopes=["small"])
    assert len(hits) == 3 and {i for i, _ in hits} <= small
    assert store.vectors.nearest_many([query], 3, scopes=["none"]) == [[]]
    assert len(store.memories.random_ids(50, seed=1, scopes=["small"])) == 5


def test_the_exact_scan_of_a_scope_reads_that_scopes_vectors_only(tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    store = open_store(tmp_path / "scan.db")
    items = [_memory(f"task {n}", rng.standard_normal(384).tolist(), "small" if n % 50 == 0 else "big")
             for n in range(2000)]
    store.memories.add(items, "memp-minilm")
    store.memories.retire(store.memories.list(scopes=["small"])[0].id, "test")
    small = {m.id for m in store.memories.list(scopes=["small"], status="active")}
    read: list[int] = []
    chunk_arrays = scan.chunk_arrays

    def counted(*chunk: Any) -> Any:
        ids, matrix = chunk_arrays(*chunk)
        read.extend(int(i) for i in ids)
        return ids, matrix

    monkeypatch.setattr(scan, "chunk_arrays", counted)
    monkeypatch.setattr(scan, "SCAN_CHUNK", 16)  # several chunks, scored side by side
    query = rng.standard_normal(384).tolist()
    for exact in (True, None):
        read.clear()
        hits = store.vectors.nearest(query, 5, exact=exact, scopes=["small"])
        assert sorted(read) == sorted(small)  # the 39 active memories of the scope, not the 2,000
        vectors = {i: np.asarray(store.vectors.vector(i)) for i in small}
        expected = sorted(small, key=lambda i: -float(vectors[i] @ query) / float(np.linalg.norm(vectors[i])))[:5]
        assert [i for i, _ in hits] == expected
    read.clear()
    # Unscoped, every vector is read (by id range), the retired memory left out.
    every = store.vectors.nearest(query, 5, exact=True)
    assert len(read) == 1999 and len(every) == 5


def test_stats_and_list_count_each_scope(memp, two_scopes: int) -> None:
    stats = memp.json("stats")
    assert stats["scopes"] == {"a": two_scopes, "b": two_scopes}
    listed = memp.json("list", "--scope", "b")
    assert len(listed) == two_scopes and {m["scope"] for m in listed} == {"b"}
    assert len(memp.json("list", "--scope", "*")) == 2 * two_scopes
    assert memp.json("list") == []
    memp("prune", "--max-memories", "1", "--apply", "--scope", "a")
    assert memp.json("stats")["scopes"] == {"a": 1, "b": two_scopes}


def _copies(mark: str) -> list[dict[str, Any]]:
    """Return two runs of one task with the same steps (near-copies prune --dedupe merges)."""
    actions = ("go to countertop 1", "take mug 1 from countertop 1", "go to coffeemachine 1", "put mug 1 in coffeemachine 1")
    run_ = traj("put a mug in the coffee machine", actions=actions)
    return [{**run_, "steps": [{**s, "observation": f"{s['observation']} {mark} {n}"} for s in run_["steps"]]}
            for n in (1, 2)]


def test_dedupe_merges_within_a_scope_never_across(memp, tmp_path: Path) -> None:
    first, second = _copies("apart")
    memp("ingest", str(write_jsonl(tmp_path / "x.jsonl", [first])), "--scope", "x", "-m", "offline")
    memp("ingest", str(write_jsonl(tmp_path / "y.jsonl", [second])), "--scope", "y", "-m", "offline")
    plan = memp.json("prune", "--dedupe", "0.95", "--scope", "*")
    assert [r for r in plan if r["rule"] == "duplicate"] == []
    # The same pair inside one scope is merged: the rule does fire on these two.
    memp("ingest", str(write_jsonl(tmp_path / "z.jsonl", _copies("once more"))), "--scope", "z", "-m", "offline")
    plan = memp.json("prune", "--dedupe", "0.95", "--scope", "*")
    merged = [r for r in plan if r["rule"] == "duplicate"]
    assert len(merged) == 1
    store = open_store(Path(memp.json("stats")["path"]))
    assert store.memories.get(merged[0]["memory_id"]).scope == "z"
    assert store.memories.get(merged[0]["merge_into"]).scope == "z"


def test_the_env_var_chooses_the_scope_and_an_option_overrides_it(memp, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMP_SCOPE", "team-1")
    report = memp.json("ingest", str(EXAMPLES), "-m", "offline")
    assert report["scope"] == "team-1"
    assert memp.json("stats")["scopes"] == {"team-1": report["added"]}
    assert memp.json("recall", TASKS[1], "--min-score", "0")["matches"]
    assert memp.json("recall", TASKS[1], "--min-score", "0", "--scope", "other")["matches"] == []
    monkeypatch.setenv("MEMP_SCOPE", "other")
    assert memp.json("recall", TASKS[1], "--min-score", "0")["matches"] == []
    assert Memp().scope == "other" and Memp().recall(TASKS[1], min_score=0).matches == []


@pytest.mark.parametrize("bad", ["two words", "a/b", "x" * 65, "", ".hidden", "naïve"])
def test_a_bad_scope_name_is_a_usage_error(memp, bad: str, monkeypatch) -> None:
    for args in (["recall", "a task", "--scope", bad], ["ingest", str(EXAMPLES), "--scope", bad],
                 ["list", "--scope", bad], ["prune", "--scope", bad], ["export", "--scope", bad]):
        result = memp(*args, ok=False)
        assert result.exit_code == 2, (args, result.stderr)
        assert "scope" in result.stderr
    monkeypatch.setenv("MEMP_SCOPE", bad)
    if bad:  # an empty variable is no variable
        assert memp("recall", "a task", ok=False).exit_code == 2
        with pytest.raises(Exception, match="bad scope name"):
            Memp()
    assert memp.json("stats")["memories"] == 0, "nothing was stored"


def test_a_run_stored_in_one_scope_is_not_copied_into_another(memp, tmp_path: Path) -> None:
    first = memp.json("ingest", str(EXAMPLES), "--scope", "a", "-m", "offline")
    result = memp("ingest", str(EXAMPLES), "--scope", "b", "-m", "offline", "--json")
    again = json.loads(result.stdout)
    assert again["added"] == 0 and again["skipped"] == first["added"]
    assert again["other_scopes"] == {"a": first["added"]}
    assert f"{first['added']} of them already stored in scope a" in result.stderr
    assert memp.json("stats")["scopes"] == {"a": first["added"]}
    assert memp.json("ingest", str(EXAMPLES), "--scope", "a")["other_scopes"] == {}


def test_a_reported_run_goes_in_the_recalled_memorys_scope(memp, two_scopes: int, tmp_path: Path) -> None:
    recalled = memp.json("recall", TASKS[1], "--scope", "b", "--min-score", "0")
    new_run = write_jsonl(tmp_path / "new.jsonl", [traj("restart nginx once its config is fixed")])
    added = memp.json("update", "--recall", recalled["recall_id"], "--outcome", "success", "--trajectory",
                      str(new_run), "--policy", "vanilla")["added"]
    store = open_store(Path(memp.json("stats")["path"]))
    assert [store.memories.get(i).scope for i in added] == ["b"]
    # --scope puts it elsewhere; so does $MEMP_SCOPE.
    other = write_jsonl(tmp_path / "other.jsonl", [traj("reload nginx without downtime")])
    added = memp.json("update", "--recall", memp.json("recall", TASKS[1], "--scope", "b")["recall_id"],
                      "--outcome", "success", "--trajectory", str(other), "--policy", "vanilla", "--scope", "ops")["added"]
    assert [store.memories.get(i).scope for i in added] == ["ops"]


def test_a_batched_update_keeps_the_scope_until_it_is_applied(memp, two_scopes: int, tmp_path: Path) -> None:
    recalled = memp.json("recall", TASKS[0], "--scope", "a", "--min-score", "0")
    new_run = write_jsonl(tmp_path / "new.jsonl", [traj("rinse a mug and fill it with coffee")])
    pending = memp.json("update", "--recall", recalled["recall_id"], "--outcome", "success", "--trajectory",
                        str(new_run), "--policy", "vanilla", "--every", "2")
    assert pending["added"] == [] and pending["pending"] == 1
    added = memp.json("update", "--flush")["added"]
    store = open_store(Path(memp.json("stats")["path"]))
    assert [store.memories.get(i).scope for i in added] == ["a"]


def test_export_and_import_carry_scopes(memp, two_scopes: int, tmp_path: Path) -> None:
    memp("export", "--scope", "*", "-o", str(tmp_path / "all.jsonl"))
    only_b = memp("export", "--scope", "b", "-o", str(tmp_path / "only-b.jsonl"))
    assert "left out scopes a" in only_b.stderr
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert lines[0]["version"] == 2
    assert {m["scope"] for m in lines if m["type"] == "memory"} == {"a", "b"}

    memp("import", str(tmp_path / "all.jsonl"), "--db", str(tmp_path / "copy.db"))
    copy = open_store(tmp_path / "copy.db")
    assert copy.memories.stats()["scopes"] == {"a": two_scopes, "b": two_scopes}
    memp("import", str(tmp_path / "only-b.jsonl"), "--db", str(tmp_path / "moved.db"), "--scope", "c")
    assert open_store(tmp_path / "moved.db").memories.stats()["scopes"] == {"c": two_scopes}
    # A file from before scopes (format version 1, no scope) comes in in 'default'.
    old = [{k: v for k, v in line.items() if k != "scope"} for line in lines]
    old[0]["version"] = 1
    write_jsonl(tmp_path / "v1.jsonl", old)
    memp("import", str(tmp_path / "v1.jsonl"), "--db", str(tmp_path / "old.db"))
    assert open_store(tmp_path / "old.db").memories.stats()["scopes"] == {"default": 2 * two_scopes}


def test_the_python_api_takes_scope_and_scopes(tmp_path: Path) -> None:
    rows = _example_rows()
    with Memp(tmp_path / "api.db", model="offline", scope="a") as mem:
        mem.ingest(*rows)
        mem.ingest(*[_twin(r, "b") for r in rows], scope="b")
        assert {m.memory.scope for m in mem.recall(TASKS[1], k=6, min_score=0).matches} == {"a"}
        assert {m.memory.scope for m in mem.recall(TASKS[1], k=6, min_score=0, scopes="b").matches} == {"b"}
        assert {m.memory.scope for m in mem.recall(TASKS[1], k=6, min_score=0, scopes="*").matches} == {"a", "b"}
        assert {m.scope for m in mem.list(scopes=["a", "b"])} == {"a", "b"}
        assert mem.stats()["scopes"] == {"a": len(rows), "b": len(rows)}


def test_a_store_from_before_scopes_puts_every_memory_in_default(tmp_path: Path) -> None:
    from test_store import QUERIES, _write_as_released

    from memp_cli import formats
    from memp_cli.distill import offline_script
    from memp_cli.embed import OnnxEmbedder
    from memp_cli.ingest import build_memory

    runs = [t for f in sorted(EXAMPLES.glob("*.jsonl")) for t in formats.read(formats.Source(f, str(f)))]
    items = []
    for run_, vector in zip(runs, OnnxEmbedder().embed([r.task for r in runs])):
        script = offline_script(run_)
        text, tokens = build_memory(run_, "proceduralization", script)
        items.append(NewMemory(run_, "proceduralization", script, text, tokens, vector))
    _write_as_released(tmp_path / "old.db", "m008_full_text_on_text_changes", items)
    store = open_store(tmp_path / "old.db")
    assert store.memories.stats()["scopes"] == {"default": len(items)}
    assert {m.scope for m in store.memories.list()} == {"default"}
    indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_memories_scope_status" in indexes
    from memp_cli.recall import recall_many

    assert all(r.matches for r in recall_many(store, QUERIES[:2], 3, "query", log=False, scopes=["default"]))
    assert not any(r.matches for r in recall_many(store, QUERIES[:2], 3, "query", log=False, scopes=["x"]))


def test_the_mcp_tools_take_scopes(memp, two_scopes: int, tmp_path: Path) -> None:
    db = Path(memp.json("stats")["path"])

    async def body(client: Any) -> Any:
        in_b = await call(client, "recall", task=TASKS[1], k=4, min_score=0, scopes=["b"])
        nothing = await call(client, "recall", task=TASKS[1], k=4, min_score=0)
        listed = await call(client, "list_memories", scopes=["*"], limit=1000)
        learned = await call(client, "learn", trajectory=traj("rotate the nginx logs"), build="trajectory",
                             scope="ops")
        bad = await client.call_tool("recall", {"task": TASKS[1], "scopes": ["no good"]})
        return in_b, nothing, listed, learned, bad

    in_b, nothing, listed, learned, bad = run(db, body)
    assert in_b["matches"] and {m["scope"] for m in in_b["matches"]} == {"b"}
    assert nothing["matches"] == []
    assert {m["scope"] for m in listed} == {"a", "b"}
    assert learned["scope"] == "ops" and learned["added"] == 1
    assert bad.is_error
    assert open_store(db).memories.stats()["scopes"]["ops"] == 1


def test_a_procedure_index_from_before_scopes_is_read_not_embedded_again(memp, tmp_path: Path) -> None:
    import numpy as np

    from memp_cli import procedure_index
    from memp_cli.embed import OnnxEmbedder

    memp("ingest", str(EXAMPLES), "-m", "offline")
    store = open_store(Path(memp.json("stats")["path"]))
    path = procedure_index.index_path(store)
    # Rewrite the side file as version 7 wrote it: no scope in the entries, no scope_of, no scope names.
    with np.load(path, allow_pickle=False) as data:
        saved = {k: data[k] for k in data.files if k != "scope_of"}
    meta = json.loads(saved["meta"].tobytes())
    meta["version"] = "7"
    del meta["scopes"]
    index = procedure_index.ProcedureIndex.load(path)
    assert index is not None
    raws = [bytes(index._blob[int(a):int(b)]).decode().rsplit("\t", 1)[0].encode()
            for a, b in zip(index._offsets[:-1], index._offsets[1:])]
    saved.update(meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 blob=np.frombuffer(b"".join(raws), dtype=np.uint8),
                 offsets=np.cumsum([0] + [len(r) for r in raws], dtype=np.int64))
    with open(path, "wb") as f:
        np.savez(f, **saved)
    procedure_index._indexes.clear()

    class Counting(OnnxEmbedder):
        calls = 0

        def embed(self, texts: Any) -> Any:
            Counting.calls += 1
            return super().embed(texts)

    old = procedure_index.index_for(store, Counting(), "memp-minilm")
    assert Counting.calls == 0, "the keys were read, not embedded again"
    assert {old.entry(int(i)).scope for i in old.ids} == {"default"}  # type: ignore[union-attr]
    assert old.in_scopes(["default"]).all() and not old.in_scopes(["x"]).any()
    assert memp.json("recall", TASKS[1])["matches"]


def test_the_schemas_name_scopes_as_the_code_checks_them() -> None:
    from memp_cli import scopes

    schemas = Path(__file__).resolve().parents[1] / "memp_cli" / "schemas"
    found = []
    for path in sorted(schemas.glob("*.json")):

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("pattern"), str) and "A-Za-z0-9._-" in node["pattern"]:
                    found.append(node["pattern"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(json.loads(path.read_text()))
    assert len(found) >= 4  # memory, ingest, export, stats
    assert set(found) == {f"^{scopes.PATTERN}$"}
