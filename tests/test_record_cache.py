"""RecordCache on its own: generations, age, LRU order, with an injected clock.

The download-level behaviour (identity checks, cleanup in another process) is in
tests/test_jobs_cache.py; these pin down the cache's own rules at their edges.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from clipd.record import ClipRecord
from clipd.record_cache import CACHE_CAPACITY, MAX_AGE_S, CachedRecord, RecordCache

DAY = "2026-11-24"


def _record(job_id: str, seed: int = 0) -> ClipRecord:
    return ClipRecord(
        job_id, f"{DAY}/C_{job_id}.mp4", DAY, "C", ".mp4", 10 + seed, 2, 3, 4, "ab" * 32, 0.0, 0.0
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_the_documented_capacity_and_age() -> None:
    cache = RecordCache()
    assert (cache.capacity, cache.max_age_s) == (CACHE_CAPACITY, MAX_AGE_S) == (4096, 30.0)
    assert len(cache) == 0


def test_get_returns_the_entry_put_with_its_path_generation_and_read_time() -> None:
    clock = _Clock()
    cache = RecordCache(clock=clock)
    record = _record("a")
    cache.put(record, Path("/x/a.mp4"), 0, 99.5)
    assert cache.get("a", 0) == CachedRecord(record, Path("/x/a.mp4"), 0, 99.5)


def test_now_is_the_injected_clock() -> None:
    clock = _Clock()
    cache = RecordCache(clock=clock)
    clock.now = 1234.5
    assert cache.now() == 1234.5


def test_entry_expires_exactly_at_max_age_measured_from_read_time_not_put_time() -> None:
    clock = _Clock()
    cache = RecordCache(max_age_s=10.0, clock=clock)
    # Read 4 s before it was put: its age counts from the read.
    cache.put(_record("a"), Path("a"), 0, clock.now - 4.0)
    clock.now += 5.999
    assert cache.get("a", 0) is not None
    clock.now += 0.001  # 10.0 s after the read
    assert cache.get("a", 0) is None
    assert len(cache) == 0  # the expired entry is removed, not just hidden


def test_unknown_job_is_a_miss() -> None:
    cache = RecordCache()
    cache.put(_record("a"), Path("a"), 0, cache.now())
    assert cache.get("b", 0) is None
    assert len(cache) == 1


def test_older_generation_get_misses_but_keeps_newer_entries() -> None:
    cache = RecordCache()
    cache.put(_record("a"), Path("a"), 3, cache.now())
    assert cache.get("a", 2) is None  # a reader that saw an older index
    assert len(cache) == 1
    assert cache.get("a", 3) is not None


def test_newer_generation_on_get_empties_the_cache() -> None:
    cache = RecordCache()
    cache.put(_record("a"), Path("a"), 0, cache.now())
    cache.put(_record("b"), Path("b"), 0, cache.now())
    assert cache.get("zzz", 1) is None
    assert len(cache) == 0
    # and the cache now refuses records read at generation 0
    cache.put(_record("a"), Path("a"), 0, cache.now())
    assert len(cache) == 0


def test_newer_generation_on_put_empties_the_cache_then_keeps_the_new_entry() -> None:
    cache = RecordCache()
    cache.put(_record("a"), Path("a"), 0, cache.now())
    cache.put(_record("b"), Path("b"), 5, cache.now())
    assert len(cache) == 1
    assert cache.get("a", 5) is None
    entry = cache.get("b", 5)
    assert entry is not None and entry.generation == 5


def test_put_again_replaces_the_entry_and_makes_it_most_recent() -> None:
    cache = RecordCache(capacity=2)
    cache.put(_record("a"), Path("a"), 0, cache.now())
    cache.put(_record("b"), Path("b"), 0, cache.now())
    cache.put(_record("a", seed=1), Path("a2"), 0, cache.now())  # a is now newest
    cache.put(_record("c"), Path("c"), 0, cache.now())  # evicts b, the oldest
    assert cache.get("b", 0) is None
    entry = cache.get("a", 0)
    assert entry is not None and entry.local == Path("a2") and entry.record.size_bytes == 11
    assert len(cache) == 2


def test_drop_forgets_one_job_and_ignores_unknown_ones() -> None:
    cache = RecordCache()
    cache.put(_record("a"), Path("a"), 0, cache.now())
    cache.put(_record("b"), Path("b"), 0, cache.now())
    cache.drop("a")
    cache.drop("never-cached")
    assert cache.get("a", 0) is None
    assert cache.get("b", 0) is not None
    assert len(cache) == 1


_JOBS = st.sampled_from(["a", "b", "c", "d", "e"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _JOBS, st.integers(0, 4), st.floats(0.0, 20.0)),
        st.tuples(st.just("get"), _JOBS, st.integers(0, 4)),
        st.tuples(st.just("tick"), st.floats(0.0, 6.0)),
        st.tuples(st.just("drop"), _JOBS),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, capacity=st.integers(1, 4))
def test_property_never_returns_a_stale_or_older_generation_entry(
    ops: list[tuple[object, ...]], capacity: int
) -> None:
    """Whatever the sequence: a hit was read at the newest generation seen so far, is
    younger than max_age_s, is the last record put for that job, and the cache stays
    within its capacity."""
    clock = _Clock()
    cache = RecordCache(capacity=capacity, max_age_s=10.0, clock=clock)
    newest = 0
    last_put: dict[str, ClipRecord] = {}
    for n, op in enumerate(ops):
        if op[0] == "put":
            _, job, generation, ago = op
            assert isinstance(job, str) and isinstance(generation, int)
            assert isinstance(ago, float)
            record = _record(job, seed=n)
            cache.put(record, Path(job), generation, clock.now - ago)
            newest = max(newest, generation)
            if generation == newest:
                last_put[job] = record
        elif op[0] == "get":
            _, job, generation = op
            assert isinstance(job, str) and isinstance(generation, int)
            entry = cache.get(job, generation)
            newest = max(newest, generation)
            if entry is not None:
                assert entry.generation == generation == newest
                assert clock.now - entry.read_at < 10.0
                assert entry.record is last_put[job]
        elif op[0] == "tick":
            assert isinstance(op[1], float)
            clock.now += op[1]
        else:
            assert isinstance(op[1], str)
            cache.drop(op[1])
            assert cache.get(op[1], newest) is None
        assert len(cache) <= capacity
