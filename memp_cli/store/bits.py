"""One-bit vectors: the sign bits of recall's first pass in large stores, and their Hamming scan.

Bits are laid out in blocks (see bitfile.py): a block's ids (int64), then its memories' sign bits in 64-bit words,
column-major (every memory's first word, then every memory's second, ...), so the scan is a handful of whole-array
XOR and popcount operations per block. At 1M memories of 384 dimensions that is 48 MB of bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def words(dim: int) -> int:
    """Return how many 64-bit words hold the sign bits of a `dim`-dimensional vector."""
    return (dim + 63) // 64


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


def distances(blocks: Iterable[tuple[Any, Any]], query: Sequence[float]) -> tuple[Any, Any]:
    """Return (ids, Hamming distances) of every memory in the blocks to the query's sign bits."""
    import numpy as np

    q = sign_bits(query)[0]
    all_ids, all_dist = [], []
    for ids, block in blocks:
        # Word by word into one uint16 row per block: no (words, rows) temporaries, each word read once.
        dist = np.bitwise_count(block[0] ^ q[0]).astype(np.uint16)
        for w in range(1, len(q)):
            dist += np.bitwise_count(block[w] ^ q[w])
        all_dist.append(dist)
        all_ids.append(ids)
    if not all_ids:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint16)
    return np.concatenate(all_ids), np.concatenate(all_dist)


def top(ids: Any, dist: Any, n: int, bits: int) -> list[int]:
    """Return the ids of the `n` memories of smallest distance, nearest first (ties by position)."""
    import numpy as np

    if not len(ids):
        return []
    # The n-th smallest distance from a histogram (distances are small integers): one pass, where argpartition
    # takes twice as long as the whole scan. Ties at that distance are all kept, then cut back to n by distance.
    cumulative = np.cumsum(np.bincount(dist, minlength=bits + 1))
    limit = int(np.searchsorted(cumulative, min(n, len(ids))))
    chosen = np.flatnonzero(dist <= limit)
    chosen = chosen[np.argsort(dist[chosen], kind="stable")][:n]
    return [int(i) for i in ids[chosen]]
