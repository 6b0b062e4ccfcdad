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
    blocks = list(blocks)
    total = sum(len(ids) for ids, _ in blocks)
    out_ids = np.empty(total, dtype=np.int64)
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
        out_ids[start : start + n] = ids
        start += n
    return out_ids, out_dist


def top(ids: Any, dist: Any, n: int, bits: int) -> list[int]:
    """Return the ids of the `n` memories of smallest distance, nearest first (ties by position)."""
    import numpy as np

    if not len(ids):
        return []
    # The n-th smallest distance by introselect over the small integers (0.5 ms at 1M, where a histogram took 2 ms
    # and argpartition of the ids' order twice that). Ties at that distance are all kept, then cut back to n.
    n = min(n, len(ids))
    limit = np.partition(dist, n - 1)[n - 1]
    chosen = np.flatnonzero(dist <= limit)
    chosen = chosen[np.argsort(dist[chosen], kind="stable")][:n]
    return [int(i) for i in ids[chosen]]
