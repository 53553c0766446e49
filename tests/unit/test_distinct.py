"""Distinct counts in fixed memory: exact up to EXACT_MAX, a HyperLogLog estimate past it."""

from __future__ import annotations

import pickle
import sys

from deployer.testing.distinct import _M, EXACT_MAX, DistinctCounter, value_hash


def test_exact_up_to_the_bound_with_repeats_and_types() -> None:
    c = DistinctCounter()
    for i in range(EXACT_MAX):
        c.add(f"p{i}")
        c.add(f"p{i}")
    c.add(None)
    assert c.count == EXACT_MAX and not c.estimated and c.text() == f"{EXACT_MAX:,}"
    # "1" and 1 are different values; a tuple of join keys is one value.
    d = DistinctCounter()
    for v in ("1", 1, ("a", 1), ("a", 1), ["a", 1]):
        d.add(v)
    assert d.count == 4


def test_estimate_within_bound_at_100k_and_memory_fixed() -> None:
    # Standard error 1.04/sqrt(4096) = 1.6%: allow 5% (3 sigma); the hash is stable, so this is too.
    for n in (5_000, 100_000):
        c = DistinctCounter()
        for i in range(n):
            c.add(f"{{process-entity-{i:09d}}}")
        assert c.estimated
        assert abs(c.count - n) / n < 0.05, (n, c.count)
        assert c.text().startswith("~")
        # The exact phase is gone: only the registers are kept, the same size whatever n is.
        assert c._exact is None and c._registers is not None and len(c._registers) == _M
        assert sys.getsizeof(pickle.dumps(c)) < 2 * _M
    # Repeats do not move the estimate.
    before = c.count
    for i in range(1_000):
        c.add(f"{{process-entity-{i:09d}}}")
    assert c.count == before


def test_estimate_text_rounds_to_three_digits() -> None:
    c = DistinctCounter()
    for i in range(12_345):
        c.add(i)
    text = c.text()
    assert text.startswith("~") and text.endswith("0") and "," in text


def test_hash_is_stable_across_processes() -> None:
    # blake2b of the repr, not Python's salted hash(): a pinned value.
    assert value_hash("host-1") == 7749811908576260301
