"""The side file `<store>-bits`: every stored vector's sign bits, memory-mapped, rebuilt from the store.

Derived, never trusted. The store counts its vector writes in `meta`, in the same transaction as each write
(`vectors_generation` on every add and removal, `vectors_removals` on removals, `vectors_count`, and a random
`vectors_token` per store); the file's header records the counts it holds, the store file's inode, the token and a
checksum. A reader maps the file when its header matches the store; when the file is behind by additions only, the
rows added since (ids above the file's largest) are appended under an exclusive lock, then the header; on any other
mismatch (a removal, another store's file, a short, torn or missing file) the whole file is rebuilt from
`memory_vectors` into a new file renamed into place, so processes that mapped the old one keep a consistent copy.
The file is only written outside transactions, from a committed snapshot: a crash between a commit and the append
leaves a file that is behind, which the next reader catches up. Where the folder cannot be written, the bits are
held in memory instead.

Layout: a header (4,096 bytes at 384 dimensions: the counts, then the centre the bits are taken about, float32),
then blocks of BLOCK memories: their ids (int64), then their sign bits in 64-bit words, column-major (bits.py scans
them). Rows are only appended; the unused tail of the last block is never read. The centre is the mean of the first
CHUNK stored vectors (the origin below CENTRE_MIN), fixed at each rebuild (rows appended later are taken about the
same centre).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bits

MAGIC = b"MEMPBITS"
VERSION = 2  # 2: bits of the centred, mixed vectors (bits.project); 1 held raw signs
HEADER = struct.Struct("<8sIIIIQqqqq32s")
HEADER_BYTES = 4096
BLOCK = 32768
# Rows read from SQLite at a time when building or catching up.
CHUNK = 16384
# A rebuilt file's bits are taken about the mean of its first CHUNK vectors once the store holds this many.
CENTRE_MIN = 4096
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


@dataclass(frozen=True)
class Header:
    """A side file's header: the store state it holds, and where its rows end."""

    dim: int
    inode: int
    generation: int
    removals: int
    count: int
    max_id: int
    token: str
    centre: bytes = b""  # float32 little-endian, dim of them; empty means the origin

    def centre_vector(self) -> Any:
        """Return the centre the bits are taken about, as float32."""
        import numpy as np

        if not self.centre:
            return np.zeros(self.dim, dtype=np.float32)
        return np.frombuffer(self.centre, dtype="<f4").astype(np.float32)

    def pack(self) -> bytes:
        """Return the header's bytes, checksum last."""
        body = HEADER.pack(MAGIC, VERSION, self.dim, bits.words(self.dim), BLOCK, self.inode, self.generation,
                           self.removals, self.count, self.max_id, self.token.encode()[:32])
        body += self.centre or bytes(4 * self.dim)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, raw: bytes) -> Header | None:
        """Return the header in `raw`, None when it is not a whole, current, intact one."""
        if len(raw) < HEADER.size + 4:
            return None
        magic, version, dim, words, block, inode, gen, removals, count, max_id, token = HEADER.unpack_from(raw)
        if magic != MAGIC or version != VERSION or block != BLOCK or words != bits.words(dim):
            return None
        end = HEADER.size + 4 * dim
        if len(raw) < end + 4 or struct.unpack_from("<I", raw, end)[0] != zlib.crc32(raw[:end]):
            return None
        return cls(dim, inode, gen, removals, count, max_id, token.rstrip(b"\0").decode(), bytes(raw[HEADER.size:end]))

    def holds(self, state: VectorState, dim: int, inode: int) -> bool:
        """Return True when the file holds exactly the store's vectors at `state`."""
        return (self.dim, self.inode, self.token, self.generation, self.removals, self.count) == (
            dim, inode, state.token, state.generation, state.removals, state.count)

    def behind(self, state: VectorState, dim: int, inode: int) -> bool:
        """Return True when the store only added vectors since the file was written (it can be caught up)."""
        return ((self.dim, self.inode, self.token, self.removals) == (dim, inode, state.token, state.removals)
                and self.generation < state.generation and self.count < state.count)


def header_bytes(dim: int) -> int:
    """Return the bytes the header takes at `dim` dimensions: whole pages, HEADER_BYTES at least."""
    return max(HEADER_BYTES, -(-(HEADER.size + 4 * dim + 4) // 4096) * 4096)


def _block_bytes(dim: int) -> int:
    return 8 * BLOCK * (1 + bits.words(dim))


def _file_bytes(count: int, dim: int) -> int:
    return header_bytes(dim) + -(-count // BLOCK) * _block_bytes(dim)


@contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """Read in one transaction, so that the state and the rows read agree."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _centre(conn: Any, dim: int) -> bytes:
    """Return the mean of the first CHUNK stored vectors (float32 bytes): the centre a rebuilt file's bits take."""
    import numpy as np

    rows = conn.execute(f"SELECT embedding FROM memory_vectors ORDER BY memory_id LIMIT {CHUNK}").fetchall()
    if len(rows) < CENTRE_MIN:
        # The mean of a few rows lies close to each of them, whose bits about it would then be noise: the origin.
        return bytes(4 * dim)
    halves = np.frombuffer(b"".join(r[0] for r in rows), dtype="<f2").reshape(len(rows), dim)
    return halves.astype(np.float32).mean(axis=0).astype("<f4").tobytes()


def _rows(conn: Any, after: int, dim: int, centre: Any) -> Iterator[tuple[Any, Any]]:
    """Yield (ids, sign bits about `centre`) of the stored vectors with ids above `after`, in id order, CHUNK rows
    at a time."""
    import numpy as np

    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute("SELECT memory_id, embedding FROM memory_vectors WHERE memory_id > ? ORDER BY memory_id", [after])
    while rows := cursor.fetchmany(CHUNK):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        halves = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").reshape(len(rows), dim)
        yield ids, bits.codes(halves, centre)


def _write_rows(fd: int, start: int, ids: Any, row_bits: Any, dim: int) -> None:
    """Write rows at positions start.. of the file's blocks (ids, then each word's column)."""
    import numpy as np

    words = bits.words(dim)
    done = 0
    while done < len(ids):
        position = start + done
        block, row = divmod(position, BLOCK)
        n = min(BLOCK - row, len(ids) - done)
        base = header_bytes(dim) + block * _block_bytes(dim)
        os.pwrite(fd, np.ascontiguousarray(ids[done : done + n], dtype="<i8").tobytes(), base + 8 * row)
        columns = np.ascontiguousarray(np.asarray(row_bits[done : done + n], dtype="<u8").T)
        for w in range(words):
            os.pwrite(fd, columns[w].tobytes(), base + 8 * BLOCK * (1 + w) + 8 * row)
        done += n


class SideBits:
    """The sign bits of one store's vectors: its side file mapped (or, where it cannot be written, in memory)."""

    def __init__(self, conn: Any, store_path: Path, dim: int) -> None:
        self._conn = conn
        self._store_path = Path(store_path)
        self.path = side_path(self._store_path)
        self._dim = dim
        self._map: Any = None
        self._mapped: tuple[int, int] = (0, 0)  # (inode, length) of the mapping
        self._views: list[tuple[Any, Any]] = []
        self._viewed: Header | None = None
        self._memory: tuple[VectorState, list[tuple[Any, Any]], Any] | None = None
        self.centre: Any = None  # the centre of the bits last returned by `blocks` (float32)
        self.rebuilt = 0  # how many times this process rebuilt the file (tests and the bench read it)

    def _inode(self) -> int:
        try:
            return os.stat(self._store_path).st_ino
        except OSError:
            return 0

    def blocks(self, state: VectorState) -> list[tuple[Any, Any]] | None:
        """Return (ids, bits) blocks holding every vector at `state`; None inside a transaction if the file is behind."""
        inode = self._inode()
        if self._memory is not None and self._memory[0] == state:
            self.centre = self._memory[2]
            return self._memory[1]
        header = self._current_header()
        if header is not None and header.holds(state, self._dim, inode):
            return self._block_views(header)
        if self._remap() and (header := self._current_header()) is not None and header.holds(state, self._dim, inode):
            return self._block_views(header)
        if self._conn.in_transaction:
            return None  # only a committed snapshot may be written to the file
        return self._sync(inode)

    # -- reading the mapped file ----------------------------------------------------------------------------------

    def _current_header(self) -> Header | None:
        """Return the mapped file's header when the mapping is still the file at the path, whole."""
        if self._map is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        header = Header.unpack(self._map[: header_bytes(self._dim)])
        if header is None or st.st_ino != self._mapped[0]:
            return None
        need = _file_bytes(header.count, self._dim)
        if st.st_size < need or self._mapped[1] < need:
            return None  # truncated, or grown past the mapping
        return header

    def _remap(self) -> bool:
        """Map the file at the path afresh; return False when there is none to map."""
        import mmap

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if st.st_size < HEADER_BYTES:
                return False
            self._map = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
            self._mapped = (st.st_ino, st.st_size)
            self._viewed = None
            return True
        finally:
            os.close(fd)

    def _block_views(self, header: Header) -> list[tuple[Any, Any]]:
        """Return numpy views of the mapped file's blocks (no copies), made once per header."""
        import numpy as np

        if self._viewed == header:
            self.centre = header.centre_vector()
            return self._views
        words, size = bits.words(self._dim), _block_bytes(self._dim)
        views = []
        for block in range(-(-header.count // BLOCK)):
            rows = min(BLOCK, header.count - block * BLOCK)
            base = header_bytes(self._dim) + block * size
            ids = np.frombuffer(self._map, dtype="<i8", count=rows, offset=base)
            block_bits = np.frombuffer(self._map, dtype="<u8", count=words * BLOCK, offset=base + 8 * BLOCK)
            views.append((ids, block_bits.reshape(words, BLOCK)[:, :rows]))
        self._views, self._viewed = views, header
        self.centre = header.centre_vector()
        return views

    # -- writing ---------------------------------------------------------------------------------------------------

    def _sync(self, inode: int) -> list[tuple[Any, Any]]:
        """Bring the file in line with the store (caught up or rebuilt) under its lock, and map it."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here: keep the bits in memory
            return self._in_memory()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return self._in_memory()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino != os.fstat(fd).st_ino:  # replaced while we waited: lock that one
                    return self._sync(inode)
            except OSError:
                return self._sync(inode)
            with _snapshot(self._conn):
                state = read_state(self._conn)
                assert state is not None
                header = Header.unpack(os.pread(fd, header_bytes(self._dim), 0))
                size = os.fstat(fd).st_size
                whole = header is not None and size >= _file_bytes(header.count, self._dim)
                current = whole and header is not None and (
                    header.holds(state, self._dim, inode)
                    or (header.behind(state, self._dim, inode) and self._catch_up(fd, header, state, inode))
                )
                if not current:
                    self._rebuild(state, inode)
        except OSError:
            return self._in_memory()
        finally:
            os.close(fd)  # closing releases the lock
        if not self._remap() or (header := self._current_header()) is None:
            return self._in_memory()
        return self._block_views(header)

    def _append(self, fd: int, count: int, max_id: int, centre: Any) -> tuple[int, int]:
        """Write the sign bits (about `centre`) of the vectors above id `max_id` after the file's first `count` rows;
        return the new (count, largest id)."""
        for ids, row_bits in _rows(self._conn, max_id, self._dim, centre):
            need = _file_bytes(count + len(ids), self._dim)
            if os.fstat(fd).st_size < need:
                os.ftruncate(fd, need)
            _write_rows(fd, count, ids, row_bits, self._dim)
            count += len(ids)
            max_id = int(ids[-1])
        return count, max_id

    def _catch_up(self, fd: int, header: Header, state: VectorState, inode: int) -> bool:
        """Append the rows added since the header's state, then the new header; False when they do not add up."""
        count, max_id = self._append(fd, header.count, header.max_id, header.centre_vector())
        if count != state.count:
            return False  # rows went missing or came in below the file's largest id: rebuild
        os.pwrite(fd, Header(self._dim, inode, state.generation, state.removals, count, max_id, state.token,
                             header.centre).pack(), 0)
        return True

    def _rebuild(self, state: VectorState, inode: int) -> None:
        """Write the whole file afresh from the store's vectors, and rename it into place."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _file_bytes(state.count, self._dim))
            centre = _centre(self._conn, self._dim)
            count, max_id = self._append(fd, 0, 0, Header(self._dim, 0, 0, 0, 0, 0, "", centre).centre_vector())
            # The header holds what was read: a count in `meta` that disagrees leaves the file unmatched, so the
            # search goes on in memory from the same rows rather than trusting it.
            os.pwrite(fd, Header(self._dim, inode, state.generation, state.removals, count, max_id,
                                 state.token, centre).pack(), 0)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self.rebuilt += 1

    def _in_memory(self) -> list[tuple[Any, Any]]:
        """Return the bits read straight from the store, held by this process (no file is written)."""
        import numpy as np

        with _snapshot(self._conn):
            state = read_state(self._conn)
            assert state is not None
            centre = Header(self._dim, 0, 0, 0, 0, 0, "", _centre(self._conn, self._dim)).centre_vector()
            parts = list(_rows(self._conn, 0, self._dim, centre))
        if parts:
            ids = np.concatenate([p[0] for p in parts])
            block = np.ascontiguousarray(np.concatenate([p[1] for p in parts]).T)
            blocks = [(ids, block)]
        else:
            blocks = []
        self._memory = (state, blocks, centre)
        self.centre = centre
        return blocks


def vector_problems(conn: Any, store_path: Path, vectors: int, dim: int) -> list[str]:
    """Return how the vector counters and a side file that claims to be current differ from the stored vectors."""
    import numpy as np

    state = read_state(conn)
    if state is None:
        return ["the store keeps no vector counters (schema change m014 missing)"]
    problems = []
    if state.count != vectors:
        problems.append(f"the vector count in meta is {state.count}, not {vectors}")
    path = side_path(Path(store_path))
    try:
        raw = path.read_bytes()
        inode = os.stat(store_path).st_ino
    except OSError:
        return problems  # no side file: the next search builds it
    header = Header.unpack(raw[: header_bytes(dim)])
    if header is None or not header.holds(state, dim, inode) or len(raw) < _file_bytes(header.count, dim):
        return problems  # stale or foreign: never trusted, rebuilt at the next search
    side = SideBits(conn, Path(store_path), dim)
    side._map, side._mapped = raw, (os.stat(path).st_ino, len(raw))
    held_ids = np.concatenate([ids for ids, _ in side._block_views(header)] or [np.empty(0, dtype=np.int64)])
    held_bits = np.concatenate([b.T for _, b in side._block_views(header)] or [np.empty((0, bits.words(dim)))])
    rows = _rows(conn, 0, dim, header.centre_vector())
    stored = dict(zip(*(np.concatenate(p) for p in zip(*rows)))) if vectors else {}
    wrong = sum(1 for i, row in zip(held_ids.tolist(), held_bits) if i not in stored or (stored[i] != row).any())
    if len(held_ids) != vectors:
        problems.append(f"the side file {path.name} holds {len(held_ids)} vectors, not {vectors}")
    if wrong:
        problems.append(f"{wrong} memories' sign bits in the side file {path.name} do not match their vectors")
    return problems
