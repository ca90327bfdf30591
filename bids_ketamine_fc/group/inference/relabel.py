"""Relabellings for permutation tests: drawn at random, or all of them when they are few.

A permutation test exchanges rows (participants) of what is permuted: the group labels, or the
rows of the Freedman-Lane regressors, or the participants' outcomes. Two orders that give the same
arrangement of those rows give the same statistic, so a test has only as many distinct
relabellings as the rows have distinct arrangements: ``n! / prod(m_k!)`` for rows repeated
``m_k`` times (20 for two groups of 3; ``n!`` when every row differs). When that number is at most
the count requested, :func:`relabellings` enumerates every distinct arrangement once (an exact
test, as PALM does) instead of drawing the same few again and again; the smallest attainable p is
then one over their number.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

#: Largest number of distinct arrangements ever enumerated (bounds memory and time).
MAX_ENUMERATED = 1_000_000


def _row_codes(rows: np.ndarray) -> np.ndarray:
    """Integer code of each row (equal rows, equal codes), in first-seen order."""
    rows = np.asarray(rows)
    rows = rows.reshape(len(rows), -1)
    _, first, codes = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # codes numbered by first appearance
    return rank[codes.ravel()]


def count_distinct(rows: np.ndarray) -> int:
    """Return the number of distinct arrangements of ``rows``: ``n! / prod(m_k!)``.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(n,)`` or ``(n, k)``: what a relabelling moves between participants.

    Returns
    -------
    int
        Exact count (a Python integer, possibly huge).
    """
    counts = Counter(_row_codes(rows).tolist())
    total = math.factorial(sum(counts.values()))
    for count in counts.values():
        total //= math.factorial(count)
    return total


def _arrangements(codes: np.ndarray) -> np.ndarray:
    """Every distinct arrangement of ``codes`` as a ``(count, n)`` array, first = ``codes``."""
    n = codes.size
    remaining = Counter(codes.tolist())
    out, current = [], []

    def place() -> None:
        if len(current) == n:
            out.append(list(current))
            return
        for code in sorted(remaining):
            if remaining[code]:
                remaining[code] -= 1
                current.append(code)
                place()
                current.pop()
                remaining[code] += 1

    place()
    table = np.array(out, dtype=np.int64).reshape(-1, n)
    first = np.flatnonzero((table == codes).all(axis=1))[0]
    return np.concatenate([table[first : first + 1], np.delete(table, first, axis=0)])


def _orders_of(codes: np.ndarray, arrangements: np.ndarray) -> np.ndarray:
    """Orders ``o`` with ``codes[o] == arrangement`` for each arrangement (row)."""
    orders = np.empty_like(arrangements)
    for code in np.unique(codes):
        sources = np.flatnonzero(codes == code)  # rows holding this code, in order
        where = arrangements == code
        orders[where] = np.tile(sources, len(arrangements))
    return orders


def relabellings(
    rows: np.ndarray, n_requested: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Return the orders of a permutation test: identity first, exhaustive when few exist.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(n,)`` or ``(n, k)``: what is exchanged between participants (labels, regressors).
    n_requested : int
        Relabellings wanted, the identity included.
    rng : numpy.random.Generator
        Draws the random orders (not used when enumerating).

    Returns
    -------
    orders : numpy.ndarray
        ``(n_orders, n)`` int64; row 0 is the identity. Row ``k`` is the order in which the
        permuted quantity is read: participant ``j`` receives ``rows[orders[k, j]]``.
    exhaustive : bool
        True when ``orders`` holds every distinct arrangement exactly once (then
        ``n_orders = count_distinct(rows)``, possibly fewer than requested), else False
        (``n_requested`` orders, the non-identity ones uniform at random, with replacement).
    """
    codes = _row_codes(rows)
    n = codes.size
    distinct = count_distinct(codes)
    if distinct <= min(int(n_requested), MAX_ENUMERATED):
        return _orders_of(codes, _arrangements(codes)), True
    table = np.tile(np.arange(n), (int(n_requested), 1))
    table[1:] = rng.permuted(table[1:], axis=1)
    return table, False


def smallest_p(n_orders: int) -> float:
    """Smallest attainable permutation p with ``n_orders`` relabellings (identity included)."""
    return 1.0 / max(int(n_orders), 1)
