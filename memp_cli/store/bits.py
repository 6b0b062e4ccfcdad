"""One-bit vectors: sign bits of projected vectors, and a query's asymmetric score against them.

A vector's bits are the signs of its components after a fixed projection: a centre (a mean of the store's vectors,
or a list's centroid: lists.py) subtracted, then a fixed orthogonal mixing (`mixing`). MiniLM's raw components share
a large common direction and differ in spread, so raw sign bits carry little; centred and mixed, every bit is close to
a random hyperplane's. Rows are scored by the query's own projected components where their bits are set
(`asymmetric`): much closer to the cosine than a Hamming distance, and no bits of the query are taken.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


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


def asymmetric(rows: Any, weights: Any) -> Any:
    """Return each row's sum of the query's projected components where its bit is set (higher is nearer), from
    (rows, words) bits."""
    import numpy as np

    # A table per byte of the bits: the sum of the byte's eight weights for each of its 256 values, then one look-up
    # per byte of each row (the rows' bits unpacked and multiplied took 16 ms for 2,000 rows; this takes ~0.3).
    padded = np.zeros(8 * 8 * rows.shape[1], dtype=np.float32)
    padded[: len(weights)] = weights
    table = np.ascontiguousarray((_byte_bits() @ padded.reshape(-1, 8).T).T).ravel()  # byte b's 256 sums at 256 b
    row_bytes = np.ascontiguousarray(rows, dtype="<u8").view(np.uint8)  # (rows, bytes)
    index = row_bytes + (256 * np.arange(row_bytes.shape[1], dtype=np.intp))
    return np.take(table, index).sum(axis=1)


@lru_cache(maxsize=1)
def _byte_bits() -> Any:
    """Return the (256, 8) float32 table of each byte value's bits, lowest first."""
    import numpy as np

    return np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.float32)
