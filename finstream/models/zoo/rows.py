"""Rows of X as models see them: the feature matrix, and time-ordered row selections within each symbol.

X is sorted by (symbol, time) and carries no time column, so "time order" here means a row's position
among the rows of its own symbol: tails, recent rows and forward-chaining blocks are cut per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SYMBOL = "symbol"


def feature_names_of(X: pd.DataFrame) -> list[str]:
    """The model feature columns of X: every column except `symbol`."""
    return [str(c) for c in X.columns if c != SYMBOL]


def feature_matrix(X: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """X's feature columns as a float64 (n, f) array, in the order the model was fit on.

    The common layout (`symbol` first, then exactly the features) takes a cheap positional slice: this is
    the single-row serving hot path.
    """
    cols = X.columns
    if len(cols) == len(feature_names) + 1 and cols[0] == SYMBOL and list(cols[1:]) == feature_names:
        return X.iloc[:, 1:].to_numpy(dtype=np.float64)
    missing = [c for c in feature_names if c not in cols]
    if missing:
        raise KeyError(f"X lacks the model's feature columns {missing}")
    return X[feature_names].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class SymbolRows:
    """Where each row of X sits within its symbol: `codes` (symbol id), `pos` (0 = earliest), `count`."""

    codes: np.ndarray
    pos: np.ndarray
    counts: np.ndarray
    #: row indices of X grouped by symbol, time order kept within each symbol
    order: np.ndarray
    #: start of each symbol's run in `order`
    starts: np.ndarray

    @classmethod
    def of(cls, X: pd.DataFrame) -> SymbolRows:
        if SYMBOL not in X.columns:
            raise KeyError("X needs a `symbol` column to order rows within each symbol")
        codes, _ = pd.factorize(X[SYMBOL].to_numpy(), sort=False)
        counts = np.bincount(codes, minlength=int(codes.max(initial=-1)) + 1)
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        pos = np.empty(len(codes), dtype=np.int64)
        pos[order] = np.arange(len(codes)) - np.repeat(starts, counts)
        return cls(codes.astype(np.int64), pos, counts.astype(np.int64), order, starts)

    @property
    def row_count(self) -> np.ndarray:
        """Number of rows of each row's symbol."""
        return self.counts[self.codes]

    def tail_mask(self, fraction: float) -> np.ndarray:
        """True for the latest `fraction` of each symbol's rows (at least one row, at most all but one)."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        n = self.row_count
        tail = np.clip(np.round(n * fraction).astype(np.int64), 1, np.maximum(n - 1, 1))
        return self.pos >= n - tail

    def recent_mask(self, max_rows: int) -> np.ndarray:
        """True for about the latest `max_rows` rows overall: the same latest share of every symbol."""
        total = len(self.codes)
        if total <= max_rows:
            return np.ones(total, dtype=bool)
        keep = np.ceil(self.row_count * (max_rows / total)).astype(np.int64)
        return self.pos >= self.row_count - keep

    def blocks(self, n_blocks: int) -> np.ndarray:
        """Block id 0..n_blocks-1 per row: each symbol's rows cut into `n_blocks` contiguous time blocks."""
        if n_blocks < 2:
            raise ValueError(f"need at least 2 time blocks, got {n_blocks}")
        return (self.pos * n_blocks) // self.row_count

    def windows(self, window: int) -> np.ndarray:
        """(n, window) row indices of X: row t and the window-1 rows of its symbol before it, oldest first.

        Rows with fewer earlier rows are left-padded by repeating the symbol's first row, so every window
        uses rows up to t only (causal).
        """
        if window < 1:
            raise ValueError(f"window must be >= 1 row, got {window}")
        back = np.clip(self.pos[:, None] - (window - 1) + np.arange(window, dtype=np.int64)[None, :], 0, None)
        return self.order[self.starts[self.codes][:, None] + back]
