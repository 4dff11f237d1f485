"""An int8 copy of a flat index's matrix, to find candidates for its exact search.

A flat index (up to 20k vectors) is searched exactly, and a float32 matrix-vector product
over it is bound by memory: 10k x 384 floats are 15 MB, ~2.0 ms on one core of the
benchmark host. The same product over int8 rows (a quarter of the bytes, numkong's SIMD
kernels) takes ~0.35 ms. Scores from the int8 rows are off by at most a bound computed
from the actual rounding errors (returned by `Coarse.scores`); the caller computes exact float32
scores for the best candidates and keeps them only when that bound proves no other row
could beat the last one kept — else it searches every row exactly. So results are the
exact search's, and this stage only makes them cheaper (at 10k, real vectors, a search
for 200: 0.65 ms instead of 2.0 ms, 196 of 200 queries proved at 2x candidates, the rest
at 8x).

Each row is scaled by its own largest component (127 / max |x|), so a row's error is
its own rounding; the largest row error norm (and dequantized row norm) enters the bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Coarse", "available"]

CHUNK = 1024
#: Added to the bound for float32 rounding: of the norms above (~1e-7 relative), of the
#: approximate scores, and of the exact scores the caller compares them with (~1e-6).
SLACK = 1e-4


def _kernels() -> Any:
    try:
        import numkong
    except ImportError:  # pragma: no cover - numkong comes with usearch
        return None
    return numkong


def available() -> bool:
    """Whether the int8 kernels can be imported (numpy's own int8 product is no faster
    than the float32 one, so without them there is no point in a coarse stage)."""
    return _kernels() is not None


def _quantize(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(int8 rows, 1/scale per row, largest row error norm, largest dequantized row norm).

    In blocks of CHUNK rows, float32: temporaries of the whole matrix cost more in page
    faults than the arithmetic (a 10k matrix in one piece: 200 ms; in blocks: ~15 ms)."""
    import numpy as np

    count, dimension = matrix.shape
    rows = np.empty((count, dimension), dtype=np.int8)
    inverse = np.empty(count, dtype=np.float32)
    max_error = max_norm = 0.0
    for start in range(0, count, CHUNK):
        block = np.asarray(matrix[start:start + CHUNK], dtype=np.float32)
        peak = np.abs(block).max(axis=1)
        scale = np.float32(127.0) / np.where(peak > 0, peak, np.float32(127.0))
        scaled = np.rint(block * scale[:, None])
        np.clip(scaled, -127, 127, out=scaled)
        rows[start:start + CHUNK] = scaled
        inverse[start:start + CHUNK] = np.float32(1.0) / scale
        restored = scaled * inverse[start:start + CHUNK, None]
        max_norm = max(max_norm, float(np.sqrt(np.einsum("ij,ij->i", restored, restored).max())))
        restored -= block
        max_error = max(max_error, float(np.sqrt(np.einsum("ij,ij->i", restored, restored).max())))
    return rows, inverse, max_error, max_norm


class Coarse:
    """int8 rows parallel to a flat index's float32 rows (same row numbers)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self._nk = _kernels()
        self.rows, self.inverse, self.max_error, self.max_norm = _quantize(matrix)

    def copy(self) -> Coarse:
        import numpy as np

        new = object.__new__(Coarse)
        new._nk, new.rows, new.inverse = self._nk, np.array(self.rows), np.array(self.inverse)
        new.max_error, new.max_norm = self.max_error, self.max_norm
        return new

    def set(self, row: int, vector: np.ndarray) -> None:
        """Row ``row`` now holds ``vector`` (growing the arrays as the flat matrix grows).
        The bound only grows: a row's old error need not be forgotten to stay correct."""
        import numpy as np

        if row >= len(self.rows):
            grow = max(64, len(self.rows) // 2, row + 1 - len(self.rows))
            self.rows = np.concatenate([self.rows, np.zeros((grow, self.rows.shape[1]), dtype=np.int8)])
            self.inverse = np.concatenate([self.inverse, np.ones(grow, dtype=np.float32)])
        rows, inverse, error, norm = _quantize(vector[None, :])
        self.rows[row], self.inverse[row] = rows[0], inverse[0]
        self.max_error = max(self.max_error, error)
        self.max_norm = max(self.max_norm, norm)

    def scores(self, query: np.ndarray, used: int) -> tuple[np.ndarray, float]:
        """(approximate similarity of rows [0, used) to ``query``, the bound on how far any
        of them is from the exact float32 one)."""
        import numpy as np

        query = np.asarray(query, dtype=np.float32)
        peak = float(np.abs(query).max())
        scale = 127.0 / peak if peak > 0 else 1.0
        q8 = np.clip(np.rint(query * scale), -127, 127).astype(np.int8)
        q_error = float(np.linalg.norm(query.astype(np.float64) - q8.astype(np.float64) / scale))
        dots = np.asarray(self._nk.cdist(q8[None, :], self.rows[:used], metric="dot",
                                         out_dtype="float32"))[0]
        approx = dots * (self.inverse[:used] / np.float32(scale))
        # |q.x - q^.x^| <= |q| |x - x^| + |q - q^| |x^|; plus float32 rounding of both sides.
        bound = float(np.linalg.norm(query)) * self.max_error + q_error * self.max_norm + SLACK
        return approx, bound
