"""The side file `<store>-bits`: every stored vector's list and bit codes (lists.py), memory-mapped, rebuilt from the store.

Derived, never trusted. The store counts its vector writes in `meta`, in the same transaction as each write
(`vectors_generation` on every add and removal, `vectors_removals` on removals, `vectors_count`, and a random
`vectors_token` per store); the file's header records the counts it holds, the store file's inode, the token and
checksums (bitlayout.py). A reader maps the file when its header matches the store; when the file is behind by
additions only, the rows added since (ids above the file's largest) are appended under an exclusive lock, then the
header; on any other mismatch (a removal, another store's file, a short, torn or missing file), and once the rows
appended since the last rebuild outgrow TAIL_SHARE of it, the whole file is rebuilt from `memory_vectors` into a new
file renamed into place, so processes that mapped the old one keep a consistent copy. The file is only written
outside transactions, from a committed snapshot: a crash between a commit and the append leaves a file that is behind,
which the next reader catches up. Where the folder cannot be written, the rows are held in memory instead.

A rebuild sorts the rows by list; rows appended later keep to the same fit and are looked at by their list too. A
rebuild keeps the fit of the same store (its token) while the store holds a quarter to four times the vectors it was
made at and stays on the same side of lists.FIT_MIN; else it makes one afresh (bitlayout.new_fit).
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import lists
from .bitlayout import (
    HEADER_BYTES,
    Header,
    VectorState,
    new_fit,
    pack_fit,
    read_state,
    read_vectors,
    rows_start,
    side_path,
    unpack_fit,
)

__all__ = ["HEADER_BYTES", "Header", "SideBits", "VectorState", "read_header", "read_state", "side_path",
           "vector_problems"]

# Rows appended after a rebuild are caught up until they pass this many, or this share of the sorted ones.
TAIL_MIN = 32768
TAIL_SHARE = 8


def read_header(path: Path) -> Header | None:
    """Return the header of the side file at `path`, None when there is none intact."""
    try:
        with path.open("rb") as f:
            return Header.unpack(f.read(HEADER_BYTES))
    except OSError:
        return None


@contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """Read in one transaction, so that the state and the rows read agree."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _tail_full(ordered: int, count: int) -> bool:
    """Return True when the rows appended since the last rebuild are too many to keep looking at by list alone."""
    return count - ordered > max(TAIL_MIN, ordered // TAIL_SHARE)


class SideBits:
    """The list index of one store's vectors: its side file mapped (or, where it cannot be written, in memory)."""

    def __init__(self, conn: Any, store_path: Path, dim: int) -> None:
        self._conn = conn
        self._store_path = Path(store_path)
        self.path = side_path(self._store_path)
        self._dim = dim
        self._map: Any = None
        self._mapped: tuple[int, int] = (0, 0)  # (inode, length) of the mapping
        self._viewed: tuple[Header, lists.Index] | None = None
        self._memory: tuple[VectorState, lists.Index] | None = None
        self.rebuilt = 0  # how many times this process rebuilt the file (tests and the bench read it)

    def _inode(self) -> int:
        try:
            return os.stat(self._store_path).st_ino
        except OSError:
            return 0

    def index(self, state: VectorState) -> lists.Index | None:
        """Return the index of every vector at `state`; None inside a transaction if the file is behind."""
        inode = self._inode()
        if self._memory is not None and self._memory[0] == state:
            return self._memory[1]
        header = self._current_header()
        if header is not None and header.holds(state, self._dim, inode) and (found := self._views(header)):
            return found
        if self._remap() and (header := self._current_header()) is not None and header.holds(
                state, self._dim, inode) and (found := self._views(header)):
            return found
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
        header = Header.unpack(self._map[:HEADER_BYTES])
        if header is None or st.st_ino != self._mapped[0] or header.dim != self._dim:
            return None
        need = header.file_bytes()
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
            if st.st_size < HEADER_BYTES or not stat.S_ISREG(st.st_mode):
                return False  # too short to hold a header, or no file (a folder, a device)
            try:
                self._map = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                return False
            self._mapped = (st.st_ino, st.st_size)
            self._viewed = None
            return True
        finally:
            os.close(fd)

    def _views(self, header: Header) -> lists.Index | None:
        """Return the index over the mapped file (numpy views, no copies), made once per header; None when its fit
        fails its checksum."""
        import numpy as np

        if self._viewed is not None and self._viewed[0] == header:
            return self._viewed[1]
        if self._viewed is not None and self._viewed[0].fit_crc == header.fit_crc and (
                self._viewed[0].ordered == header.ordered):
            fitted, offsets = self._viewed[1].fitted, self._viewed[1].offsets  # rows appended: the same fit
        else:
            found = unpack_fit(self._map, header)
            if found is None:
                return None
            fitted, offsets = found
        rows = np.frombuffer(self._map, dtype=lists.record_dtype(self._dim), count=header.count,
                             offset=header.rows_start())
        index = lists.Index(rows, header.ordered, offsets, fitted)
        self._viewed = (header, index)
        return index

    # -- writing ---------------------------------------------------------------------------------------------------

    def _sync(self, inode: int) -> lists.Index | None:
        """Bring the file in line with the store (caught up or rebuilt) under its lock, and map it."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here: keep the rows in memory
            return self._in_memory()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return self._in_memory()
        state: VectorState | None = None
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
                header = Header.unpack(os.pread(fd, HEADER_BYTES, 0))
                old = self._read_fit(fd, header)
                whole = header is not None and old is not None and os.fstat(fd).st_size >= header.file_bytes()
                current = whole and header is not None and old is not None and (
                    header.holds(state, self._dim, inode)
                    or (header.behind(state, self._dim, inode) and self._catch_up(fd, header, old[0], state, inode))
                )
                if not current:
                    kept = old[0] if old is not None and header is not None and header.token == state.token else None
                    self._rebuild(state, inode, kept)
        except OSError:
            state = None  # held in memory instead, once the lock is released
        finally:
            os.close(fd)  # closing releases the lock
        if state is None or not self._remap() or (header := self._current_header()) is None or (
                found := self._views(header)) is None:
            return self._in_memory()
        if not header.holds(state, self._dim, inode):
            # The count in `meta` disagrees with the rows (a write made behind memp's back): the file holds the rows
            # read, which this process keeps using at this state rather than rebuilding the file at every search.
            self._memory = (state, found)
        return found

    def _read_fit(self, fd: int, header: Header | None) -> tuple[lists.Fit, Any] | None:
        """Return a copy of the fit (and list offsets) in the open file, None when it has none intact."""
        import numpy as np

        if header is None or header.dim != self._dim:
            return None
        raw = os.pread(fd, header.rows_start(), 0)
        found = unpack_fit(raw, header)
        if found is None:
            return None
        fitted, offsets = found
        return lists.Fit(np.array(fitted.centre), np.array(fitted.centroids), fitted.count), np.array(offsets)

    def _catch_up(self, fd: int, header: Header, fitted: lists.Fit, state: VectorState, inode: int) -> bool:
        """Append the rows added since the header's state, then the new header; False when they do not add up or
        have outgrown the sorted rows (a rebuild sorts them in)."""
        if _tail_full(header.ordered, state.count):
            return False
        count, max_id = header.count, header.max_id
        start, width = header.rows_start(), lists.record_dtype(self._dim).itemsize
        for ids, vectors in read_vectors(self._conn, self._dim, max_id):
            rows = lists.encode(ids, vectors, fitted)
            need = start + (count + len(rows)) * width
            if os.fstat(fd).st_size < need:
                os.ftruncate(fd, need)
            os.pwrite(fd, rows.tobytes(), start + count * width)
            count += len(rows)
            max_id = int(ids[-1])
        if count != state.count:
            return False  # rows went missing or came in below the file's largest id: rebuild
        os.fsync(fd)  # the rows on disk before the header that covers them (a power loss leaves the file behind)
        os.pwrite(fd, Header(self._dim, inode, state.generation, state.removals, count, max_id, state.token,
                             header.ordered, header.lists, header.fit_count, header.fit_crc).pack(), 0)
        return True

    def _rows(self, count: int, fitted: lists.Fit) -> tuple[Any, Any, Any, int]:
        """Return every stored vector's row (in id order), the order that sorts them by list, the lists' offsets in
        that order, and the largest id."""
        import numpy as np

        rows = np.empty(count, dtype=lists.record_dtype(self._dim))
        filled, max_id = 0, 0
        for ids, vectors in read_vectors(self._conn, self._dim):
            if filled + len(ids) > len(rows):  # more than `meta` counts: keep them all, the header says what was read
                rows = np.concatenate([rows, np.empty(filled + len(ids) - len(rows), dtype=rows.dtype)])
            rows[filled : filled + len(ids)] = lists.encode(ids, vectors, fitted)
            filled += len(ids)
            max_id = int(ids[-1])
        order, offsets = lists.list_order(rows[:filled], len(fitted.centroids))
        return rows[:filled], order, offsets, max_id

    def _rebuild(self, state: VectorState, inode: int, old: lists.Fit | None) -> None:
        """Write the whole file afresh from the store's vectors, and rename it into place."""
        fitted = new_fit(self._conn, self._dim, state.count, old)
        rows, order, offsets, max_id = self._rows(state.count, fitted)
        fit = pack_fit(fitted, offsets)
        # One name: writers take turns under the lock, and a rebuild killed midway leaves a file the next one reuses.
        tmp = self.path.with_name(f"{self.path.name}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            start = rows_start(self._dim, len(fitted.centroids))
            os.ftruncate(fd, start + rows.nbytes)
            os.pwrite(fd, fit, HEADER_BYTES)
            for at in range(0, len(rows), 65536):  # in list order, a slice at a time: no sorted copy of them all
                os.pwrite(fd, rows[order[at : at + 65536]].tobytes(), start + at * rows.dtype.itemsize)
            # The header holds what was read: a count in `meta` that disagrees leaves the file unmatched (see _sync).
            os.pwrite(fd, Header(self._dim, inode, state.generation, state.removals, len(rows), max_id, state.token,
                                 len(rows), len(fitted.centroids), fitted.count, zlib.crc32(fit)).pack(), 0)
            os.fsync(fd)  # whole on disk before the rename makes it the file
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self.rebuilt += 1

    def _in_memory(self) -> lists.Index:
        """Return the index read straight from the store, held by this process (no file is written)."""
        with _snapshot(self._conn):
            state = read_state(self._conn)
            assert state is not None
            fitted = new_fit(self._conn, self._dim, state.count, None)
            rows, order, offsets, _ = self._rows(state.count, fitted)
        index = lists.Index(rows[order], len(rows), offsets, fitted)
        self._memory = (state, index)
        return index


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
    header = Header.unpack(raw[:HEADER_BYTES])
    found = unpack_fit(raw, header) if header is not None and header.dim == dim else None
    if header is None or found is None or not header.holds(state, dim, inode) or len(raw) < header.file_bytes():
        return problems  # stale or foreign: never trusted, rebuilt at the next search
    held = np.frombuffer(raw, dtype=lists.record_dtype(dim), count=header.count, offset=header.rows_start())
    # Every stored vector's row made afresh under the file's fit, a chunk at a time, matched to the held rows by id; a
    # row that differs is looked at again alone, where rounding may explain it (lists.matches).
    order = np.argsort(held["id"], kind="stable")
    held_ids = held["id"][order]
    seen = np.zeros(len(held), dtype=bool)
    wrong = 0
    for ids, chunk in read_vectors(conn, dim):
        if not len(held):
            break
        rows = lists.encode(ids, chunk, found[0])
        at = np.searchsorted(held_ids, ids).clip(0, len(held) - 1)
        present = held_ids[at] == ids
        pos = order[at[present]]
        seen[pos] = True
        differ = (held["list"][pos] != rows["list"][present]) | (
            held["codes"][pos] != rows["codes"][present]).any(axis=1)
        vecs = chunk[present]
        wrong += sum(1 for j in np.flatnonzero(differ) if not lists.matches(held[pos[j]], vecs[j], found[0]))
    wrong += int(np.count_nonzero(~seen))  # rows of no stored vector, or a second row of one
    if len(held) != vectors:
        problems.append(f"the side file {path.name} holds {len(held)} vectors, not {vectors}")
    if wrong:
        problems.append(f"{wrong} memories' sign bits in the side file {path.name} do not match their vectors")
    return problems
