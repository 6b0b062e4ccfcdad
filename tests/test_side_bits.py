"""Compact vectors and the sign-bit side file: the same top results as the exact search, a side file never trusted."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memp_cli.embed import OnnxEmbedder
from memp_cli.records import Step, Trajectory
from memp_cli.store import NewMemory, bitfile, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real_tasks

needs_data = pytest.mark.skipif(not real_tasks.available(), reason="../shared/data (real trajectories) is absent")


def _items(vectors: Any, start: int = 0) -> list[NewMemory]:
    return [
        NewMemory(Trajectory(f"task {start + i}", [Step("look", None, "ok")], "success", metadata={"n": start + i}),
                  "trajectory", None, f"run {start + i}", 3, [float(x) for x in v])
        for i, v in enumerate(vectors)
    ]


def _written(path: Path, vectors: Any, start: int = 0) -> None:
    """Store memories of these vectors at `path` and close the store (which brings its side file up to date)."""
    store: Any = open_store(path)
    store.memories.add(_items(vectors, start=start), "memp-minilm")
    store.close()


@pytest.fixture(scope="module")
def real() -> tuple[Any, Any]:
    """Return (memory vectors, query vectors): MiniLM embeddings of real tasks, and pairwise mixes of them."""
    if not real_tasks.available():
        pytest.skip("../shared/data (real trajectories) is absent")
    tasks = real_tasks.real_tasks()
    embedded = np.asarray(OnnxEmbedder().embed(tasks), dtype=np.float32)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(embedded))
    queries, base = embedded[order[:40]], embedded[order[40:]]
    a, b = rng.integers(0, len(base), 600), rng.integers(0, len(base), 600)
    mixes = base[a] + 0.3 * base[b]
    return np.vstack([base, mixes / np.linalg.norm(mixes, axis=1, keepdims=True)]), queries


@pytest.fixture(scope="module")
def real_store(real, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real") / "memp.db"
    store = open_store(path)
    store.memories.add(_items(real[0]), "memp-minilm")
    store.close()
    return path


@needs_data
def test_float16_and_the_side_file_return_the_float32_top_results(real, real_store: Path) -> None:
    vectors, queries = real
    store = open_store(real_store)
    hits = 0
    for q in queries:
        sims = vectors @ q
        fifth = -np.partition(-sims, 4)[4]
        exact = store.vectors.nearest(q.tolist(), 5, exact=True)
        # The side-file pass (sign bits, then the stored float16 vectors) finds what the full scan finds.
        assert store.vectors.nearest(q.tolist(), 5, exact=False) == exact
        # Stored as float16, the top 5 are the float32 top 5 (a result tied with the 5th within 1e-5 counts).
        hits += sum(sims[i - 1] >= fifth - 1e-5 for i, _ in exact)
        for i, s in exact:
            assert s == pytest.approx(float(sims[i - 1]), abs=2e-3)
    assert hits / (5 * len(queries)) >= 0.99
    assert bitfile.side_path(real_store).exists()


@needs_data
def test_the_list_probe_and_re_ranking_return_the_exact_top_results(real, real_store: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import shutil

    from memp_cli.store import lists
    from memp_cli.store import vectors as vectors_module

    # The store is small: give it lists (about sqrt(n) of them) as a large store has, so a search looks at the rows
    # of a few lists only and re-ranks a fraction of those.
    monkeypatch.setattr(lists, "FIT_MIN", 256)
    monkeypatch.setattr(lists, "PROBE_ROWS", 400)
    monkeypatch.setattr(vectors_module, "MIN_CANDIDATES", 100)
    path = tmp_path / "memp.db"
    shutil.copy(real_store, path)
    _, queries = real
    store = open_store(path)
    found = 0
    for q in queries:
        exact = store.vectors.nearest(q.tolist(), 5, exact=True)
        probed = store.vectors.nearest(q.tolist(), 5, exact=False)
        # Each result is as near as the exact 5th (ties within 1e-5 are not misses), with its exact cosine.
        found += sum(s >= exact[-1][1] - 1e-5 for _, s in probed)
        assert dict(probed).items() <= dict(store.vectors.nearest(q.tolist(), 50, exact=True)).items()
    # A fifth of the rows looked at: a rare near neighbour lies in a list not looked at (all are found at 1M, 0.99).
    assert found / (5 * len(queries)) >= 0.97
    index = store.vectors._bits()
    assert len(index.fitted.centroids) == lists.list_count(len(index)) > lists.PROBES
    # A search looked at a few lists' rows, and kept the best few by each code of those.
    near = np.argsort(-(index.fitted.centroids @ queries[0]))[: lists.PROBES]
    assert 100 < len(index.positions(near)) < len(index) / 3
    assert len(index.candidates(queries[0], 50)) <= 75  # the best 37 by each code


def test_the_mixing_is_orthogonal_and_the_bits_are_taken_about_the_centre() -> None:
    from memp_cli.store import bits

    mix = bits.mixing(384)
    assert np.abs(mix @ mix.T - np.eye(384)).max() < 1e-5
    assert np.count_nonzero(mix) > 384 * 300  # every output mixes most inputs, not a few
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    centre = vectors.mean(axis=0)
    assert (bits.codes(vectors, centre) == bits.sign_bits((vectors - centre) @ mix)).all()
    assert not (bits.codes(vectors, centre) == bits.codes(vectors, np.zeros(384, dtype=np.float32))).all()


def _side(store: Any) -> Any:
    return store.vectors.side_file


@needs_data
@pytest.mark.parametrize("damage", ["deleted", "truncated", "torn header", "stale", "another store's"])
def test_a_damaged_or_stale_side_file_is_rebuilt_and_the_results_stay_right(real, real_store: Path,
                                                                            damage: str) -> None:
    _, queries = real
    side = bitfile.side_path(real_store)
    reference = open_store(real_store)
    expected = [reference.vectors.nearest(q.tolist(), 5, exact=True) for q in queries[:5]]
    raw = side.read_bytes()
    header = bitfile.Header.unpack(raw[:4096])
    assert header is not None
    if damage == "deleted":
        side.unlink()
    elif damage == "truncated":
        side.write_bytes(raw[: len(raw) // 2])
    elif damage == "torn header":
        side.write_bytes(raw[:20] + bytes([raw[20] ^ 1]) + raw[21:])
    else:
        # A well-formed header that says another generation, or another store, with its fit and rows zeroed.
        wrong = (replace(header, generation=header.generation - 1) if damage == "stale" else
                 replace(header, token="0" * 32))
        body = bytearray(raw)
        body[4096:] = bytes(len(body) - 4096)
        side.write_bytes(wrong.pack() + bytes(body[len(wrong.pack()):]))
    store = open_store(real_store)
    assert [store.vectors.nearest(q.tolist(), 5, exact=False) for q in queries[:5]] == expected
    assert _side(store).rebuilt == 1
    assert bitfile.Header.unpack(side.read_bytes()[:4096]) == header  # rebuilt at the store's state
    assert store.check()["ok"]


def test_a_write_without_its_append_is_caught_up_by_the_next_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((1200, 32)).astype(np.float32)
    path = tmp_path / "memp.db"
    _written(path, vectors[:1000])  # the writer brings the side file up to date as it closes
    assert bitfile.Header.unpack(bitfile.side_path(path).read_bytes()[:4096]).count == 1000  # type: ignore[union-attr]
    # A writer that dies between its commit and the append (it never closes): the file is behind by its rows.
    crashed: Any = open_store(path)
    crashed.memories.add(_items(vectors[1000:], start=1000), "memp-minilm")
    reader: Any = open_store(path)
    for n in (1000, 1100, 1199):
        assert reader.vectors.nearest(vectors[n].tolist(), 1, exact=False)[0][0] == n + 1
    assert _side(reader).rebuilt == 0  # appended, not rebuilt
    assert bitfile.Header.unpack(bitfile.side_path(path).read_bytes()[:4096]).count == 1200  # type: ignore[union-attr]
    # A rolled-back write leaves the file as it was: searches inside a transaction never write it.
    with pytest.raises(RuntimeError), reader.write():
        reader.memories.add(_items(vectors[:5] + 1, start=2000), "memp-minilm")
        assert reader.vectors.nearest(vectors[3].tolist(), 1, exact=False)[0][0] == 4  # exact scan, file untouched
        raise RuntimeError("rolled back")
    assert bitfile.Header.unpack(bitfile.side_path(path).read_bytes()[:4096]).count == 1200  # type: ignore[union-attr]
    assert reader.check()["ok"]
    assert oct(os.stat(bitfile.side_path(path)).st_mode & 0o777) == "0o600"


def test_a_concurrent_writer_and_reader_keep_the_side_file_consistent(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((1500, 32)).astype(np.float32)
    path = tmp_path / "memp.db"
    _written(path, vectors[:1000])
    written: list[int] = []  # memory ids committed so far, in order
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:
        store: Any = open_store(path)
        try:
            for start in range(1000, 1500, 50):
                store.memories.add(_items(vectors[start : start + 50], start=start), "memp-minilm")
                written.extend(range(start + 1, start + 51))
        finally:
            store.close()
            done.set()

    def read() -> None:
        store: Any = open_store(path)
        while not done.is_set() or len(written) < 500:
            if not written:
                continue
            newest = written[-1]  # committed before this search began: the bit pass must find it
            got = store.vectors.nearest(vectors[newest - 1].tolist(), 1, exact=False)
            if got[0][0] != newest:
                failures.append(f"memory {newest} not found: {got}")
            if done.is_set():
                break

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    final: Any = open_store(path)
    assert final.check()["ok"]
    assert [final.vectors.nearest(vectors[n].tolist(), 1, exact=False)[0][0] for n in (0, 999, 1499)] == [1, 1000, 1500]


def test_scoped_searches_through_the_lists_keep_to_their_scope(tmp_path: Path, monkeypatch) -> None:
    from memp_cli.store import lists
    from memp_cli.store import vectors as vectors_module

    monkeypatch.setattr(vectors_module, "QUANTIZED_ABOVE", 5)  # scopes this small take the list probe too
    monkeypatch.setattr(lists, "FIT_MIN", 256)
    monkeypatch.setattr(lists, "PROBE_ROWS", 200)
    rng = np.random.default_rng(11)
    # 40 clusters of 30; scope "few" holds 6 memories of one far cluster, scope "spread" every 10th memory.
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    vectors = centres[np.arange(1200) % 40] + 0.3 * rng.standard_normal((1200, 32)).astype(np.float32)
    items = _items(vectors)
    for n, item in enumerate(items):
        item.scope = "few" if n % 40 == 7 and n < 240 else "spread" if n % 10 == 0 else "rest"
    store: Any = open_store(tmp_path / "memp.db")
    store.memories.add(items, "memp-minilm")
    assert len(store.vectors._bits().fitted.centroids) > lists.PROBES
    for q in vectors[:40:3]:
        for scope in ("few", "spread"):
            probed = store.vectors.nearest(q.tolist(), 5, exact=False, scopes=[scope])
            exact = store.vectors.nearest(q.tolist(), 5, exact=True, scopes=[scope])
            assert len(probed) == 5 and {i for i, _ in probed} <= {m.id for m in store.memories.list(scopes=[scope])}
            assert [round(s, 4) for _, s in probed] == [round(s, 4) for _, s in exact]


def test_rows_appended_past_the_tail_share_are_sorted_in_by_a_rebuild_keeping_the_fit(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    from memp_cli.store import bitfile, lists

    monkeypatch.setattr(lists, "FIT_MIN", 256)
    monkeypatch.setattr(bitfile, "TAIL_MIN", 100)
    rng = np.random.default_rng(13)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    path = tmp_path / "memp.db"
    _written(path, vectors[:1000])
    first = bitfile.read_header(bitfile.side_path(path))
    assert first is not None and first.ordered == first.count == 1000 and first.lists == lists.list_count(1000)
    for start, stop in ((1000, 1090), (1090, 1200), (1200, 2000)):
        writer: Any = open_store(path)
        writer.memories.add(_items(vectors[start:stop], start=start), "memp-minilm")
        writer.close()
        header = bitfile.read_header(bitfile.side_path(path))
        assert header is not None and header.count == stop
        if stop == 1090:  # 90 appended: within TAIL_MIN, caught up in place, looked at by their lists
            assert (header.ordered, header.fit_crc) == (1000, first.fit_crc) and writer.vectors.side_file.rebuilt == 0
        elif stop == 1200:  # 200 appended: a rebuild sorts them in, with the same fit (1,200 < 4 x 1,000)
            assert header.ordered == 1200 and writer.vectors.side_file.rebuilt == 1
            assert (header.fit_count, header.lists) == (1000, first.lists)
        else:  # 2,000 is under 4 x 1,000 still: the same fit again
            assert header.ordered == 2000 and header.fit_count == 1000
        reader: Any = open_store(path)
        for n in (0, start, stop - 1):
            assert reader.vectors.nearest(vectors[n].tolist(), 1, exact=False)[0][0] == n + 1
        assert reader.check()["ok"]
    # Four times the vectors of the fit: the next rebuild makes a fit afresh.
    _written(path, rng.standard_normal((2500, 32)).astype(np.float32), start=2000)
    header = bitfile.read_header(bitfile.side_path(path))
    assert header is not None and header.fit_count == 4500 and header.lists == lists.list_count(4500)


def test_where_the_side_file_cannot_be_written_its_rows_are_held_in_memory(tmp_path: Path, monkeypatch) -> None:
    from memp_cli.store import lists

    monkeypatch.setattr(lists, "FIT_MIN", 256)
    rng = np.random.default_rng(17)
    vectors = rng.standard_normal((1500, 32)).astype(np.float32)
    path = tmp_path / "memp.db"
    bitfile.side_path(path).mkdir()  # a folder where the file would be: it cannot be opened for writing
    store: Any = open_store(path)
    store.memories.add(_items(vectors), "memp-minilm")
    for n in (0, 700, 1499):
        assert store.vectors.nearest(vectors[n].tolist(), 3, exact=False) == store.vectors.nearest(
            vectors[n].tolist(), 3, exact=True)
    index = store.vectors._bits()
    assert len(index) == 1500 and len(index.fitted.centroids) == lists.list_count(1500)
    assert (np.diff(index.rows["list"]) >= 0).all()  # held in list order, as a rebuilt file holds them
    assert bitfile.side_path(path).is_dir() and not any(bitfile.side_path(path).iterdir())


def test_a_count_in_meta_that_disagrees_is_rebuilt_once_and_a_killed_rebuild_leaves_no_file(tmp_path: Path) -> None:
    import sqlite3

    rng = np.random.default_rng(19)
    vectors = rng.standard_normal((1200, 32)).astype(np.float32)
    path = tmp_path / "memp.db"
    _written(path, vectors)
    # What a rebuild killed before its rename leaves behind: the next rebuild writes over it and renames it in.
    bitfile.side_path(path).with_name("memp.db-bits.tmp").write_bytes(b"half a file")
    with sqlite3.connect(path) as conn:  # a write behind memp's back: the count no longer matches the rows
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vectors_count'")
    store: Any = open_store(path)
    for n in (0, 600, 1199):
        assert store.vectors.nearest(vectors[n].tolist(), 1, exact=False)[0][0] == n + 1
    assert store.vectors.side_file.rebuilt == 1  # not once a search
    assert "the vector count in meta is 1201, not 1200" in store.check()["problems"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("memp.db-bits")) == ["memp.db-bits"]


def test_check_allows_rounding_and_nothing_more() -> None:
    from memp_cli.store import bits, lists

    rng = np.random.default_rng(23)
    vectors = rng.standard_normal((5000, 64)).astype(np.float32)
    fitted = lists.fit(vectors[::2], len(vectors))
    row = lists.encode([7], vectors[:1], fitted)[0]
    assert lists.matches(row, vectors[0], fitted)
    part = (vectors[0] - fitted.centre) @ bits.mixing(64)
    for component, expected in ((int(np.argmin(np.abs(part))), None), (int(np.argmax(np.abs(part))), False)):
        flipped = row.copy()
        flipped["codes"][component // 64] ^= np.uint64(1) << np.uint64(component % 64)
        # The smallest component: a flip there is rounding only when it is within the tolerance of zero.
        want = bool(abs(part[component]) <= 1e-5) if expected is None else expected
        assert lists.matches(flipped, vectors[0], fitted) is want
        assert lists.matches(flipped, vectors[0], fitted, tolerance=abs(float(part[component])) + 1e-6)
    other = row.copy()
    other["list"] = (int(row["list"]) + 1) % len(fitted.centroids)  # another list: far from a tie
    assert not lists.matches(other, vectors[0], fitted)
