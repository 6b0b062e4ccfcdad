"""The side file's layout: its header, its fit, where its rows are, and reading the store's vectors into rows.

Layout: a header page (HEADER_BYTES: the store state the file holds, its row counts, the fit's size and checksum),
then the fit (lists.py: the centre and the centroids, float32, and each list's first row, int64) in whole pages, then
the rows (lists.record_dtype: id, list, residual scale, codes), the first `ordered` sorted by list, the rest appended
in id order.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bits, lists

MAGIC = b"MEMPBITS"
VERSION = 3  # 3: rows in lists with a residual code (lists.py); 2 held every row's global bits only
HEADER = struct.Struct("<8sIIIQqqqq32sqIqI")
HEADER_BYTES = 4096
PAGE = 4096
# Rows read from SQLite at a time when building or catching up.
CHUNK = 16384
STATE_KEYS = ("vectors_generation", "vectors_removals", "vectors_count", "vectors_token")


@dataclass(frozen=True)
class VectorState:
    """What the store says about its vectors: write counters, count and token (from `meta`)."""

    generation: int
    removals: int
    count: int
    token: str


def read_state(conn: Any) -> VectorState | None:
    """Return the store's vector state, None when the schema does not keep one."""
    marks = ",".join("?" * len(STATE_KEYS))
    found = dict(tuple(r) for r in conn.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", STATE_KEYS))
    if len(found) != len(STATE_KEYS):
        return None
    return VectorState(int(found["vectors_generation"]), int(found["vectors_removals"]),
                       int(found["vectors_count"]), str(found["vectors_token"]))


def side_path(store_path: Path) -> Path:
    """Return the side file that holds the sign bits of the store at `store_path`."""
    return store_path.with_name(store_path.name + "-bits")


def fit_bytes(dim: int, list_count: int) -> int:
    """Return the bytes of a fit section, unpadded: centre, centroids, list offsets."""
    return 4 * dim * (1 + list_count) + 8 * (list_count + 1)


@dataclass(frozen=True)
class Header:
    """A side file's header: the store state it holds, its rows (the first `ordered` in list order), and its fit."""

    dim: int
    inode: int
    generation: int
    removals: int
    count: int
    max_id: int
    token: str
    ordered: int
    lists: int
    fit_count: int  # the vectors the store held when the fit was made
    fit_crc: int

    def pack(self) -> bytes:
        """Return the header's bytes, checksum last."""
        body = HEADER.pack(MAGIC, VERSION, self.dim, bits.words(self.dim), self.inode, self.generation,
                           self.removals, self.count, self.max_id, self.token.encode()[:32], self.ordered, self.lists,
                           self.fit_count, self.fit_crc)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, raw: bytes) -> Header | None:
        """Return the header at the start of `raw`, None when it is not a whole, current, intact one."""
        if len(raw) < HEADER.size + 4:
            return None
        (magic, version, dim, words, inode, gen, removals, count, max_id, token, ordered, list_count, fit_count,
         fit_crc) = HEADER.unpack_from(raw)
        if magic != MAGIC or version != VERSION or words != bits.words(dim) or not 0 <= ordered <= count:
            return None
        if struct.unpack_from("<I", raw, HEADER.size)[0] != zlib.crc32(raw[: HEADER.size]) or list_count < 1:
            return None
        return cls(dim, inode, gen, removals, count, max_id, token.rstrip(b"\0").decode(), ordered, list_count,
                   fit_count, fit_crc)

    def holds(self, state: VectorState, dim: int, inode: int) -> bool:
        """Return True when the file holds exactly the store's vectors at `state`."""
        return (self.dim, self.inode, self.token, self.generation, self.removals, self.count) == (
            dim, inode, state.token, state.generation, state.removals, state.count)

    def behind(self, state: VectorState, dim: int, inode: int) -> bool:
        """Return True when the store only added vectors since the file was written (it can be caught up)."""
        return ((self.dim, self.inode, self.token, self.removals) == (dim, inode, state.token, state.removals)
                and self.generation < state.generation and self.count < state.count)

    def rows_start(self) -> int:
        """Return where the rows begin: after the header page and the fit's whole pages."""
        return rows_start(self.dim, self.lists)

    def file_bytes(self) -> int:
        """Return the bytes a whole file of this header takes."""
        return self.rows_start() + self.count * lists.record_dtype(self.dim).itemsize


def rows_start(dim: int, list_count: int) -> int:
    """Return where a file's rows begin at `dim` dimensions and `list_count` lists."""
    return HEADER_BYTES + -(-fit_bytes(dim, list_count) // PAGE) * PAGE


def pack_fit(fitted: lists.Fit, offsets: Any) -> bytes:
    """Return a fit section's bytes: the centre, the centroids (float32) and each list's first row (int64)."""
    import numpy as np

    return (np.asarray(fitted.centre, dtype="<f4").tobytes() + np.asarray(fitted.centroids, dtype="<f4").tobytes()
            + np.asarray(offsets, dtype="<i8").tobytes())


def unpack_fit(raw: Any, header: Header) -> tuple[lists.Fit, Any] | None:
    """Return (fit, list offsets) from a fit section's bytes (a buffer from HEADER_BYTES on), None when its checksum
    fails."""
    import numpy as np

    size = fit_bytes(header.dim, header.lists)
    section = memoryview(raw)[HEADER_BYTES : HEADER_BYTES + size]
    if len(section) < size or zlib.crc32(section) != header.fit_crc:
        return None
    dim, n = header.dim, header.lists
    centre = np.frombuffer(section, dtype="<f4", count=dim)
    centroids = np.frombuffer(section, dtype="<f4", count=n * dim, offset=4 * dim).reshape(n, dim)
    offsets = np.frombuffer(section, dtype="<i8", count=n + 1, offset=4 * dim * (1 + n))
    return lists.Fit(centre, centroids, header.fit_count), offsets


def read_vectors(conn: Any, dim: int, after: int = 0) -> Iterator[tuple[Any, Any]]:
    """Yield (ids, float32 vectors) of the stored vectors with ids above `after`, in id order, CHUNK rows at a time."""
    import numpy as np

    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute("SELECT memory_id, embedding FROM memory_vectors WHERE memory_id > ? ORDER BY memory_id", [after])
    while rows := cursor.fetchmany(CHUNK):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        halves = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").reshape(len(rows), dim)
        yield ids, halves.astype(np.float32)


def sample(conn: Any, dim: int, count: int) -> Any:
    """Return float32 vectors of up to lists.SAMPLE_PER_LIST per list of a `count`-vector fit, spread evenly over the
    stored ids (a store's early and late memories both shape the lists)."""
    import numpy as np

    cursor = conn.cursor()
    cursor.row_factory = None
    ids = np.fromiter((r[0] for r in cursor.execute("SELECT memory_id FROM memory_vectors ORDER BY memory_id")),
                      dtype=np.int64)
    want = lists.SAMPLE_PER_LIST * lists.list_count(count)
    picked = ids if len(ids) <= want else ids[np.linspace(0, len(ids) - 1, want).astype(np.int64)]
    blobs: list[bytes] = []
    for start in range(0, len(picked), 500):
        chunk = picked[start : start + 500].tolist()
        marks = ",".join("?" * len(chunk))
        blobs.extend(r[0] for r in cursor.execute(
            f"SELECT embedding FROM memory_vectors WHERE memory_id IN ({marks}) ORDER BY memory_id", chunk))
    return np.frombuffer(b"".join(blobs), dtype="<f2").reshape(len(blobs), dim).astype(np.float32)


def new_fit(conn: Any, dim: int, count: int, old: lists.Fit | None) -> lists.Fit:
    """Return the fit a rebuilt file takes: the old one while the store holds a quarter to four times the vectors it
    was made at (and is as small or as large), else one made afresh from a sample."""
    if old is not None and old.count // 4 <= count < 4 * max(old.count, 1) and (
            (count < lists.FIT_MIN) == (old.count < lists.FIT_MIN)):
        return old
    if count < lists.FIT_MIN:
        return lists.origin(dim, count)
    return lists.fit(sample(conn, dim, count), count)
