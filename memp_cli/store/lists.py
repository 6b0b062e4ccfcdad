"""The side file's index: vectors grouped in lists around centroids, each row's two bit codes, and the probe search.

A fit (`fit`) is k-means on a sample of the stored vectors: about sqrt(n) centroids, and the centre of them all. Each
row is then kept in the list of its nearest centroid with two 1-bit codes of `dim` bits each:
- the signs of its vector about the centre, mixed (bits.codes): the global code;
- the signs of its residual (the vector less its centroid), mixed: the residual code, with one float (`scale`) that
  makes it an estimate of the query's product with the residual (the RaBitQ estimator: <q, r> is about
  |r|^2 / |r|_1 * <mix q, signs>).
A search (`Index.candidates`) scores the centroids, takes the rows of the best PROBES lists, ranks them by both
codes against the query's own components (an asymmetric score: no bits of the query are taken) and keeps the best of
each for the stored vectors to settle. On 1M vectors of real tasks and their mixes (bench/compact.py), the rows of
the best 8 lists (8,192 rows at least) looked at and the best 150 by each score rescored kept recall@5 at 0.997 for
held-out tasks and 0.885 for paraphrases, where scanning every row's global bits kept 0.974 and 0.606.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import bits

# A search looks at the rows of the best PROBES lists, and of more lists until it has PROBE_ROWS rows at least (so a
# store of up to PROBE_ROWS is looked at whole); more again when a scope leaves too few of their rows.
PROBES = 8
PROBE_ROWS = 8192
# A fit is made from this many vectors a list (spread over the store), in ITERATIONS rounds of k-means.
SAMPLE_PER_LIST = 48
ITERATIONS = 8
MAX_LISTS = 4096
# Below this many vectors there is one list (every row is looked at) about the origin: the mean of a few rows lies
# close to each of them, whose bits about it would be noise.
FIT_MIN = 4096


def list_count(n: int) -> int:
    """Return how many lists a fit of `n` vectors makes (one below FIT_MIN, about sqrt(n) above)."""
    if n < FIT_MIN:
        return 1
    return min(MAX_LISTS, max(1, round(n**0.5)))


def record_dtype(dim: int) -> Any:
    """Return the numpy dtype of one row: memory id, list, residual scale, global then residual code words."""
    import numpy as np

    return np.dtype([("id", "<i8"), ("list", "<i4"), ("scale", "<f4"), ("codes", "<u8", (2 * bits.words(dim),))])


@dataclass(frozen=True)
class Fit:
    """The centre and centroids the codes are taken about (float32), and how many vectors the store held then."""

    centre: Any
    centroids: Any  # (lists, dim), unit rows
    count: int


def origin(dim: int, count: int) -> Fit:
    """Return the fit of a small store: one list, about the origin."""
    import numpy as np

    return Fit(np.zeros(dim, dtype=np.float32), np.zeros((1, dim), dtype=np.float32), count)


def fit(sample: Any, count: int) -> Fit:
    """Return the fit for a store of `count` vectors from a sample of them (float32 rows), seeded: the same sample
    makes the same fit."""
    import numpy as np

    sample = np.asarray(sample, dtype=np.float32)
    lists = min(list_count(count), len(sample))
    if lists <= 1:
        return origin(sample.shape[1], count)
    rng = np.random.default_rng(18)
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(ITERATIONS):
        # Spherical k-means: assigned by inner product, each centroid the normalised sum of its rows.
        nearest = _nearest_list(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        empty = np.bincount(nearest, minlength=lists) == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]  # an empty list restarts from a random row
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        centroids = (sums / norms).astype(np.float32)
    return Fit(sample.mean(axis=0).astype(np.float32), centroids, count)


def _nearest_list(vectors: Any, centroids: Any) -> Any:
    """Return each row's list: the centroid of the largest inner product (int32), a few thousand rows at a time."""
    import numpy as np

    out = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), 8192):
        out[start : start + 8192] = np.argmax(vectors[start : start + 8192] @ centroids.T, axis=1)
    return out


def encode(ids: Any, vectors: Any, fitted: Fit) -> Any:
    """Return the rows (record_dtype) of these memories' vectors under `fitted`."""
    import numpy as np

    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    dim = matrix.shape[1]
    out = np.empty(len(matrix), dtype=record_dtype(dim))
    out["id"] = ids
    lists = _nearest_list(matrix, fitted.centroids) if len(fitted.centroids) > 1 else np.zeros(len(matrix), np.int32)
    out["list"] = lists
    words = bits.words(dim)
    out["codes"][:, :words] = bits.codes(matrix, fitted.centre)
    residual = (matrix - fitted.centroids[lists]) @ bits.mixing(dim)
    out["codes"][:, words:] = bits.sign_bits(residual)
    l1 = np.abs(residual).sum(axis=1)
    l2 = np.einsum("ij,ij->i", residual, residual)
    out["scale"] = np.divide(l2, l1, out=np.zeros_like(l1), where=l1 > 0)
    return out


def matches(row: Any, vector: Any, fitted: Fit, tolerance: float = 1e-5) -> bool:
    """Return True when a held row is what `vector` encodes to under `fitted`, up to rounding: a component within
    `tolerance` of zero may take either sign, and a centroid within it of the nearest either list (a product of many
    rows at once rounds differently from one row's, so rows caught up one at a time can differ so)."""
    import numpy as np

    x = np.asarray(vector, dtype=np.float32)
    dim, words = len(x), bits.words(len(x))
    near = fitted.centroids @ x
    held = int(row["list"])
    if not 0 <= held < len(near) or near[held] < near.max() - tolerance:
        return False
    mix = bits.mixing(dim)
    for part, words_held in (((x - fitted.centre) @ mix, row["codes"][:words]),
                             ((x - fitted.centroids[held]) @ mix, row["codes"][words:])):
        flipped = np.unpackbits((bits.sign_bits(part)[0] ^ words_held).view(np.uint8), bitorder="little")[:dim]
        if (np.abs(part[flipped.astype(bool)]) > tolerance).any():
            return False
    return True


@dataclass
class Index:
    """The rows of a side file (or of memory): the first `ordered` in list order (`offsets` bound each list's rows),
    the rest appended since in id order."""

    rows: Any  # record_dtype array (a view of the mapped file, or held)
    ordered: int
    offsets: Any  # (lists + 1,) int64 positions into the ordered rows
    fitted: Fit
    _tail_lists: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def ids(self) -> Any:
        """Return every row's memory id, in row order."""
        return self.rows["id"]

    def _tail(self) -> Any:
        if self._tail_lists is None:
            self._tail_lists = self.rows["list"][self.ordered :].copy()
        return self._tail_lists

    def positions(self, lists: Any, keep: Any = None) -> Any:
        """Return the positions of the rows of these lists (list after list as given, then the tail's), within `keep` (a
        boolean mask of rows) when given."""
        import numpy as np

        lo, hi = self.offsets[lists], self.offsets[lists + 1]
        lens = hi - lo
        total = int(lens.sum())
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        ordered = starts + np.arange(total, dtype=np.int64)
        tail = self._tail()
        if len(tail):
            chosen = np.zeros(len(self.offsets) - 1, dtype=bool)
            chosen[lists] = True
            ordered = np.concatenate([ordered, self.ordered + np.flatnonzero(chosen[tail])])
        return ordered if keep is None else ordered[keep[ordered]]

    def candidates(self, query: Any, n: int, keep: Any = None, timings: dict[str, float] | None = None) -> Any:
        """Return the positions of at most 1.5 n rows the bits rank nearest the query: the best 3/4 n by each code (on
        1M real-task mixes, 0.91 of the paraphrases' exact top 5 against 0.89 for the best n/2 by each, for ~1 ms).

        `keep`, when given, is a boolean mask of the rows the search keeps to (a scope's members); `timings` gets the
        ms of choosing the rows (`scan_ms`) and of scoring them (`rerank_ms`).
        """
        import time

        import numpy as np

        started = time.perf_counter()
        q = np.asarray(query, dtype=np.float32)
        centroids = self.fitted.centroids
        lists = len(centroids)
        near = centroids @ q
        order = np.argsort(-near) if lists > PROBES else np.arange(lists)
        probes = min(lists, PROBES)
        members = len(self.rows) if keep is None else int(np.count_nonzero(keep))
        want = max(2 * n, min(members, PROBE_ROWS), -(-members * probes // lists))
        if lists > probes:  # as many of the best lists as hold `want` rows (the scope's share of them, scoped)
            held = np.cumsum(np.diff(self.offsets)[order]) * (members / max(len(self.rows), 1))
            probes = max(probes, min(lists, int(np.searchsorted(held, want)) + 1))
        while True:
            pos = self.positions(order[:probes], keep)
            if len(pos) >= min(want, members) or probes >= lists:
                break
            probes = min(lists, 2 * probes)  # a scope with few rows in these lists: look further
        scanned = time.perf_counter()
        n = max(1, 3 * n // 4)
        if len(pos) > n:
            chosen = self.rows[pos]
            words = chosen["codes"].shape[1] // 2
            wide = bits.asymmetric(chosen["codes"][:, :words], bits.project(q, self.fitted.centre)[0])
            if lists == 1:  # one list about the origin: the residual code is the global one, so 2n by it
                pick = np.argpartition(-wide, min(len(pos), 2 * n) - 1)[: 2 * n]
            else:
                turned = q @ bits.mixing(len(q))
                residual = near[chosen["list"]] + chosen["scale"] * (
                    2 * bits.asymmetric(chosen["codes"][:, words:], turned) - turned.sum())
                pick = np.union1d(np.argpartition(-residual, n - 1)[:n], np.argpartition(-wide, n - 1)[:n])
            pos = pos[pick]
        if timings is not None:
            timings["scan_ms"] = 1000 * (scanned - started)
            timings["rerank_ms"] = 1000 * (time.perf_counter() - scanned)
        return pos


def list_order(rows: Any, lists: int) -> tuple[Any, Any]:
    """Return the order that sorts rows by list (then as they came), and the offsets of each list's first row then."""
    import numpy as np

    order = np.argsort(rows["list"], kind="stable")
    counts = np.bincount(rows["list"], minlength=lists)
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

