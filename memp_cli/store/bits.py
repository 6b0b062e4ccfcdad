"""One-bit vectors: the sign bits of recall's first pass in large stores, their Hamming scan and their re-ranking.

A vector's bits are the signs of its components after a fixed projection: the store's centre (a mean of its vectors,
kept in the side file's header) subtracted, then a fixed orthogonal mixing (`mixing`). MiniLM's raw components share
a large common direction and differ in spread, so raw sign bits carry little; centred and mixed, every bit is close to
a random hyperplane's, and the first word alone ranks well enough to pick whom the other words are read for.

Bits are laid out in blocks (see bitfile.py): a block's ids (int64), then its memories' sign bits in 64-bit words,
column-major (every memory's first word, then every memory's second, ...). The search (`candidates`) reads the
first word of every memory (8 MB at 1M memories, a sixth of the bits), keeps the nearest share by that word, scores
those on all their words, and re-ranks the best by the query's own components against their bits (an asymmetric
score, much closer to the cosine than a Hamming distance), for the stored vectors to settle.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

# The prefix pass runs from this many rows on; below, every word of every row is scanned (as fast, and exact).
PREFIX_ABOVE = 200_000
# The prefix pass keeps the nearest 1/PREFIX_SHARE of the rows by their first word (at least PREFIX_MIN), and the
# best RERANK of those by all their words go on to the asymmetric score.
PREFIX_SHARE = 20
PREFIX_MIN = 20_000
RERANK = 2_000


def words(dim: int) -> int:
    """Return how many 64-bit words hold the sign bits of a `dim`-dimensional vector."""
    return (dim + 63) // 64


def _hadamard(n: int) -> Any:
    import numpy as np

    h = np.ones((1, 1), dtype=np.float32)
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


@lru_cache(maxsize=4)
def mixing(dim: int) -> Any:
    """Return the fixed orthogonal (dim, dim) float32 matrix the bits are taken through, the same on every machine.

    Two rounds of random signs and Hadamard blocks (of the largest power of two up to 128 dividing `dim`), with a
    fixed shuffle between: every entry is an integer over the block size, so no two builds can differ (a random
    rotation by QR depends on the LAPACK it runs on, and took 0.7-1.5 s under load).
    """
    import numpy as np

    block = 1
    while block < 128 and dim % (2 * block) == 0:
        block *= 2
    h = np.kron(np.eye(dim // block, dtype=np.float32), _hadamard(block)) / np.float32(np.sqrt(block))
    rng = np.random.default_rng(18)  # integers only: the same signs and shuffle from every numpy
    signs = [rng.integers(0, 2, dim) * 2 - 1 for _ in range(2)]
    shuffle = rng.permutation(dim)
    first = signs[0][:, None].astype(np.float32) * h
    return np.ascontiguousarray((first[:, shuffle] * signs[1][None, :].astype(np.float32)) @ h)


def project(vectors: Any, centre: Any) -> Any:
    """Return float rows centred on `centre` and mixed: what the sign bits are the signs of."""
    import numpy as np

    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    return (matrix - np.asarray(centre, dtype=np.float32)) @ mixing(matrix.shape[1])


def sign_bits(vectors: Any) -> Any:
    """Return the sign bits of float rows as a (rows, words) uint64 array: bit i is set when component i > 0."""
    import numpy as np

    matrix = np.atleast_2d(np.asarray(vectors))
    if matrix.dtype.kind != "f":
        matrix = matrix.astype(np.float32)
    packed = np.packbits(matrix > 0, axis=1, bitorder="little")
    pad = words(matrix.shape[1]) * 8 - packed.shape[1]
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view("<u8")


def codes(vectors: Any, centre: Any) -> Any:
    """Return the stored sign bits of float rows: the signs of their projection (`project`)."""
    return sign_bits(project(vectors, centre))


def _first_word(blocks: Sequence[tuple[Any, Any]], q0: Any, total: int) -> Any:
    """Return the Hamming distance of every row's first word to the query's (uint8), block after block."""
    import numpy as np

    out = np.empty(total, dtype=np.uint8)
    width = max((len(ids) for ids, _ in blocks), default=0)
    xor = np.empty(width, dtype=np.uint64)
    start = 0
    for ids, block in blocks:
        n = len(ids)
        np.bitwise_xor(block[0], q0, out=xor[:n])
        np.bitwise_count(xor[:n], out=out[start : start + n])
        start += n
    return out


def distances(blocks: Sequence[tuple[Any, Any]], q: Any) -> Any:
    """Return the Hamming distance (uint16) of every row in the blocks to the query's sign bits `q`."""
    import numpy as np

    total = sum(len(ids) for ids, _ in blocks)
    out_dist = np.empty(total, dtype=np.uint16)
    width = max((len(ids) for ids, _ in blocks), default=0)
    xor, count = np.empty(width, dtype=np.uint64), np.empty(width, dtype=np.uint8)
    start = 0
    for ids, block in blocks:
        n = len(ids)
        dist, x, c = out_dist[start : start + n], xor[:n], count[:n]
        # Word by word into preallocated rows, written in place: no temporaries per block, each word read once.
        for w in range(len(q)):
            np.bitwise_xor(block[w], q[w], out=x)
            np.bitwise_count(x, out=c)
            if w:
                np.add(dist, c, out=dist)
            else:
                dist[:] = c
        start += n
    return out_dist


def gather(blocks: Sequence[tuple[Any, Any]], positions: Any) -> Any:
    """Return the bits of the rows at these positions (ascending) of the blocks, column-major: (words, rows)."""
    import numpy as np

    sizes = np.fromiter((len(ids) for ids, _ in blocks), dtype=np.int64, count=len(blocks))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n_words = blocks[0][1].shape[0] if blocks else 0
    out = np.empty((n_words, len(positions)), dtype=np.uint64)
    cuts = np.searchsorted(positions, starts)
    for b, (_, block) in enumerate(blocks):
        lo, hi = cuts[b], cuts[b + 1]
        if hi > lo:
            rows = positions[lo:hi] - starts[b]
            for w in range(n_words):  # a word's column at a time: contiguous reads, in ascending order
                out[w, lo:hi] = block[w][rows]
    return out


def _limit(values: Any, n: int) -> int:
    """Return the least small integer that at least `n` of `values` are within (len(values) > n)."""
    import numpy as np

    # Guessed from every 64th value, then moved until it holds n: a few passes over the values, where a partition
    # or a histogram of them all took 3-8 ms at 1M under load.
    sample = values[::64]
    at = min(len(sample) - 1, n // 64)
    limit = int(np.partition(sample, at)[at])
    while limit > 0 and np.count_nonzero(values < limit) >= n:
        limit -= 1
    while np.count_nonzero(values <= limit) < n:
        limit += 1
    return limit


def _nearest(values: Any, n: int) -> Any:
    """Return the ascending positions of `n` smallest small integers (ties at the n-th cut by position)."""
    import numpy as np

    if len(values) <= n:
        return np.arange(len(values))
    limit = _limit(values, n)
    # Not every tie: far from the query, Hamming distances tie in their tens of thousands.
    below, tied = np.flatnonzero(values < limit), np.flatnonzero(values == limit)
    return np.union1d(below, tied[: n - len(below)])


def _within(values: Any, n: int) -> Any:
    """Return the positions of the small integers up to the least limit that at least `n` of them are within."""
    import numpy as np

    if len(values) <= n:
        return np.arange(len(values))
    return np.flatnonzero(values <= _limit(values, n))


def asymmetric(columns: Any, weights: Any) -> Any:
    """Return each row's sum of the query's projected components where its bit is set (higher is nearer), from
    column-major bits (words, rows)."""
    import numpy as np

    # A table per byte of the bits: the sum of the byte's eight weights for each of its 256 values, then one look-up
    # per byte of each row (the rows' bits unpacked and multiplied took 16 ms for 2,000 rows; this takes ~0.3).
    padded = np.zeros(8 * 8 * len(columns), dtype=np.float32)
    padded[: len(weights)] = weights
    table = np.ascontiguousarray((_byte_bits() @ padded.reshape(-1, 8).T).T).ravel()  # byte b's 256 sums at 256 b
    row_bytes = np.ascontiguousarray(columns.T).view(np.uint8)  # (rows, bytes)
    index = row_bytes + (256 * np.arange(row_bytes.shape[1], dtype=np.intp))
    return np.take(table, index).sum(axis=1)


@lru_cache(maxsize=1)
def _byte_bits() -> Any:
    """Return the (256, 8) float32 table of each byte value's bits, lowest first."""
    import numpy as np

    return np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.float32)


def candidates(blocks: Sequence[tuple[Any, Any]], query: Sequence[float], centre: Any, n: int,
               keep: Any = None, timings: dict[str, float] | None = None) -> Any:
    """Return the positions (ascending, in the blocks' row order) of the `n` rows whose bits rank nearest the query.

    `keep`, when given, is the ascending positions the search keeps to (a scope's members). `timings` receives the
    ms of the scan (`scan_ms`: prefix, gather, Hamming) and of the re-ranking (`rerank_ms`).
    """
    import time

    import numpy as np

    started = time.perf_counter()
    weights = project(query, centre)[0]
    q = sign_bits(weights)[0]
    total = sum(len(ids) for ids, _ in blocks)
    rows = total if keep is None else len(keep)
    if rows > PREFIX_ABOVE:
        first = _first_word(blocks, q[0], total)
        pool = _within(first if keep is None else first[keep], max(PREFIX_MIN, rows // PREFIX_SHARE))
        pool = pool if keep is None else keep[pool]
        pool_bits = gather(blocks, pool)
        dist = distances([(pool, pool_bits)], q)
    else:
        dist = distances(blocks, q)
        pool = keep
        dist = dist if keep is None else dist[keep]
    scanned = time.perf_counter()
    best = _nearest(dist, RERANK)
    pool, dist = (best if pool is None else pool[best]), dist[best]
    if len(pool) > n:
        # Hamming distances tie in their hundreds; the query's own components against the bits break them. The
        # asymmetric score leaves out each row's distance from the centre, so the nearest half as many by Hamming distance
        # are kept as well: where the centre lies far from a cluster (rows added since it was fixed), they hold
        # what the score misses.
        scores = asymmetric(gather(blocks, pool), weights)
        chosen = np.union1d(np.argpartition(-scores, n - 1)[:n], _nearest(dist, max(1, n // 2)))
        pool = pool[chosen]
    if timings is not None:
        timings["scan_ms"] = 1000 * (scanned - started)
        timings["rerank_ms"] = 1000 * (time.perf_counter() - scanned)
    return pool


def ids_at(blocks: Sequence[tuple[Any, Any]], positions: Any) -> Any:
    """Return the memory ids of the rows at these positions (ascending) of the blocks."""
    import numpy as np

    sizes = np.fromiter((len(ids) for ids, _ in blocks), dtype=np.int64, count=len(blocks))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty(len(positions), dtype=np.int64)
    cuts = np.searchsorted(positions, starts)
    for b, (ids, _) in enumerate(blocks):
        lo, hi = cuts[b], cuts[b + 1]
        out[lo:hi] = ids[positions[lo:hi] - starts[b]]
    return out


def all_ids(blocks: Sequence[tuple[Any, Any]]) -> Any:
    """Return every row's memory id, in the blocks' row order."""
    import numpy as np

    return np.concatenate([ids for ids, _ in blocks]) if blocks else np.empty(0, dtype=np.int64)
