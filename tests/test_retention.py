"""The pure retention planner: tables and hypothesis properties."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipd.record import ClipRecord, ClipSummary
from clipd.retention import GB, Plan, Policy, Reason, TmpFile, Usage, plan

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
H = 3600.0


def rec(
    job: str, age_s: float, size: int = 100, day: str = "2027-01-10", state: str = "ok"
) -> ClipRecord:
    mtime_ns = int((NOW - age_s) * 1e9)
    return ClipRecord(
        job_id=job,
        relpath=f"{day}/Clip_{job}.mp4",
        day=day,
        title="Clip",
        ext=".mp4",
        size_bytes=size,
        mtime_ns=mtime_ns,
        ctime_ns=mtime_ns,
        inode=1,
        sha256="0" * 64,
        ingested_at=NOW - age_s,
        verified_at=NOW - age_s,
        state=state,
    )


def planned(p: Plan) -> list[tuple[str, Reason]]:
    return [(d.job_id or d.relpath, d.reason) for d in p.deletions]


AGE_ONLY = Policy(max_age_s=24 * H, protect_recent_s=300)


@pytest.mark.parametrize(
    ("records", "policy", "usage", "expected"),
    [
        pytest.param(
            [rec("a", 1 * H), rec("b", 30 * H), rec("c", 25 * H)],
            AGE_ONLY,
            None,
            [("b", Reason.EXPIRED), ("c", Reason.EXPIRED)],
            id="expired-oldest-first",
        ),
        pytest.param([rec("a", 23 * H)], AGE_ONLY, None, [], id="under-max-age-kept"),
        pytest.param(
            [rec("a", 30 * H, state="deleting")],
            AGE_ONLY,
            None,
            [],
            id="row-already-being-deleted-skipped",
        ),
        pytest.param(
            [rec("a", 1 * H, 400), rec("b", 2 * H, 400), rec("c", 3 * H, 400)],
            Policy(max_size_bytes=900, protect_recent_s=0),
            None,
            [("c", Reason.SIZE)],
            id="size-evicts-oldest-until-under",
        ),
        pytest.param(
            [rec("a", 1 * H, 400), rec("b", 2 * H, 400), rec("c", 30 * H, 400)],
            Policy(max_age_s=24 * H, max_size_bytes=500, protect_recent_s=0),
            None,
            [("c", Reason.EXPIRED), ("b", Reason.SIZE)],
            id="expired-then-size",
        ),
        pytest.param(
            [rec("a", 60, 400), rec("b", 120, 400)],
            Policy(max_size_bytes=100, protect_recent_s=300),
            None,
            [],
            id="protect-window-wins-over-size",
        ),
        pytest.param(
            [rec("a", 1 * H, 100), rec("b", 2 * H, 100), rec("c", 3 * H, 100)],
            Policy(high_watermark_percent=90, low_watermark_percent=80),
            Usage(1000, 950, 50),
            [("c", Reason.DISK), ("b", Reason.DISK)],
            id="disk-high-mark-evicts-to-low-mark",
        ),
        pytest.param(
            [rec("a", 1 * H, 100), rec("b", 2 * H, 100)],
            Policy(high_watermark_percent=90, low_watermark_percent=80),
            Usage(1000, 850, 150),
            [],
            id="between-marks-nothing",
        ),
        pytest.param(
            [rec("a", 1 * H, 100), rec("b", 2 * H, 100)],
            Policy(min_free_bytes=200),
            Usage(1000, 850, 150),
            [("b", Reason.MIN_FREE)],
            id="min-free-floor",
        ),
    ],
)
def test_plan_table(
    records: list[ClipRecord],
    policy: Policy,
    usage: Usage | None,
    expected: list[tuple[str, Reason]],
) -> None:
    assert planned(plan(records, usage, policy, NOW)) == expected


def test_plan_keeps_clip_being_downloaded() -> None:
    records = [rec("a", 30 * H), rec("b", 31 * H)]
    p = plan(records, None, AGE_ONLY, NOW, busy=frozenset({"b"}))
    assert planned(p) == [("a", Reason.EXPIRED)]


def test_plan_removes_only_stale_tmp_files() -> None:
    tmp = [
        TmpFile("2027-01-10/Clip_x.mp4.tmp", 10, int((NOW - 2 * H) * 1e9)),
        TmpFile("2027-01-10/Clip_y.mp4.tmp", 10, int((NOW - 10 * 60) * 1e9)),
        TmpFile(".clipd/index.sqlite3.tmp", 10, 0),
        TmpFile("2027-01-10/.hidden.tmp", 10, 0),
    ]
    p = plan([], None, Policy(stale_tmp_s=H), NOW, tmp_files=tmp)
    assert planned(p) == [("2027-01-10/Clip_x.mp4.tmp", Reason.STALE_TMP)]


def test_plan_never_touches_hidden_or_index_paths() -> None:
    hidden = replace(rec("a", 99 * H), relpath=".clipd/quarantine/Clip_a.mp4")
    assert plan([hidden], None, AGE_ONLY, NOW).deletions == ()


def test_plan_lists_day_folders_it_empties_but_never_today() -> None:
    records = [
        rec("a", 30 * H, day="2027-01-10"),
        rec("b", 30 * H, day="2027-01-11"),
        rec("c", 1 * H, day="2027-01-11"),
        rec("d", 30 * H, day="2027-01-15"),
    ]
    entries = {"2027-01-10": 1, "2027-01-11": 2, "2027-01-15": 1, "2027-01-01": 0}
    p = plan(records, None, AGE_ONLY, NOW, day_entries=entries)
    assert p.empty_days == ("2027-01-01", "2027-01-10")


def test_plan_reports_unmet_target_when_everything_left_is_protected() -> None:
    p = plan([rec("a", 60, 500)], None, Policy(max_size_bytes=100, protect_recent_s=300), NOW)
    assert p.unmet == (Reason.SIZE,)


def test_policy_uses_decimal_gigabytes() -> None:
    from clipd.config import RetentionConfig

    policy = Policy.from_config(RetentionConfig(max_size_gb=5.0, min_free_gb=0.5))
    assert policy.max_size_bytes == 5 * GB == 5_000_000_000
    assert policy.min_free_bytes == 500_000_000


# -- properties ----------------------------------------------------------------------------

records_st = st.lists(
    st.tuples(st.floats(0, 100 * H), st.integers(1, 1000)), min_size=0, max_size=30
).map(lambda items: [rec(f"j{i}", age, size) for i, (age, size) in enumerate(items)])

policy_st = st.builds(
    Policy,
    max_age_s=st.sampled_from([0.0, 1 * H, 24 * H]),
    max_size_bytes=st.sampled_from([0, 500, 5000]),
    high_watermark_percent=st.floats(50, 100),
    low_watermark_percent=st.just(50.0),
    min_free_bytes=st.sampled_from([0, 100, 2000]),
    protect_recent_s=st.sampled_from([0.0, 300.0, 2 * H]),
)

usage_st = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 20_000), st.integers(0, 20_000)).map(
        lambda t: Usage(t[0] + t[1], t[0], t[1])
    ),
)


def _after(
    records: list[ClipRecord], usage: Usage | None, p: Plan
) -> tuple[list[ClipRecord], Usage | None]:
    gone = {d.job_id for d in p.deletions}
    kept = [r for r in records if r.job_id not in gone]
    if usage is not None:
        usage = Usage(usage.total_bytes, usage.used_bytes - p.bytes, usage.free_bytes + p.bytes)
    return kept, usage


def summary(r: ClipRecord) -> ClipSummary:
    return ClipSummary(r.job_id, r.relpath, r.size_bytes, r.mtime_ns, r.state)


@settings(max_examples=200, deadline=None)
@given(records_st, policy_st, usage_st, st.randoms(use_true_random=False))
def test_plan_over_index_summaries_equals_plan_over_full_records(
    records: list[ClipRecord], policy: Policy, usage: Usage | None, rnd: random.Random
) -> None:
    # The cleanup shell plans with Index.summaries(), in no particular order.
    shuffled = [summary(r) for r in records]
    rnd.shuffle(shuffled)
    assert plan(shuffled, usage, policy, NOW) == plan(records, usage, policy, NOW)


@settings(max_examples=300, deadline=None)
@given(records_st, policy_st, usage_st)
def test_targets_hold_after_applying_whenever_they_can(
    records: list[ClipRecord], policy: Policy, usage: Usage | None
) -> None:
    p = plan(records, usage, policy, NOW)
    kept, after = _after(records, usage, p)
    protected = [r for r in kept if NOW - r.mtime_ns / 1e9 < policy.protect_recent_s]
    if p.unmet:
        # Only when every clip left is protected.
        assert len(protected) == len(kept)
        return
    if policy.max_size_bytes:
        assert sum(r.size_bytes for r in kept) <= policy.max_size_bytes
    if (
        after is not None
        and policy.min_free_bytes
        and usage is not None
        and usage.free_bytes < policy.min_free_bytes
    ):
        assert after.free_bytes >= policy.min_free_bytes
    if policy.max_age_s:
        assert all(NOW - r.mtime_ns / 1e9 <= policy.max_age_s for r in kept if r not in protected)


@settings(max_examples=300, deadline=None)
@given(records_st, policy_st, usage_st)
def test_nothing_younger_than_protection_window_is_planned(
    records: list[ClipRecord], policy: Policy, usage: Usage | None
) -> None:
    p = plan(records, usage, policy, NOW)
    for d in p.deletions:
        assert NOW * 1e9 - d.mtime_ns >= policy.protect_recent_s * 1e9


@settings(max_examples=300, deadline=None)
@given(records_st, policy_st, usage_st)
def test_size_driven_plan_takes_only_clips_older_than_all_kept(
    records: list[ClipRecord], policy: Policy, usage: Usage | None
) -> None:
    p = plan(records, usage, replace(policy, max_age_s=0.0), NOW)
    gone = {d.job_id for d in p.deletions}
    kept = [r for r in records if r.job_id not in gone]
    for d in p.deletions:
        for r in kept:
            assert (d.mtime_ns, d.job_id) < (r.mtime_ns, r.job_id)


@settings(max_examples=300, deadline=None)
@given(records_st, policy_st, usage_st)
def test_planning_is_idempotent(
    records: list[ClipRecord], policy: Policy, usage: Usage | None
) -> None:
    p = plan(records, usage, policy, NOW)
    kept, after = _after(records, usage, p)
    assert plan(kept, after, policy, NOW).deletions == ()


def test_a_drain_begun_at_the_high_mark_goes_on_down_to_the_low_mark() -> None:
    # The filesystem freed less than planned (metadata, the index's journal): usage is now
    # between the marks. A fresh look leaves it there; a drain in progress goes on.
    policy = Policy(high_watermark_percent=80, low_watermark_percent=50)
    records = [rec(f"c{i}", (10 - i) * H, size=10) for i in range(10)]
    usage = Usage(total_bytes=100, used_bytes=53, free_bytes=47)
    assert plan(records, usage, policy, NOW).deletions == ()
    draining = plan(records, usage, policy, NOW, draining=True)
    assert planned(draining) == [("c0", Reason.DISK)]
    assert draining.disk_used_after is not None and draining.disk_used_after <= 50
    below = Usage(total_bytes=100, used_bytes=50, free_bytes=50)
    assert plan(records, below, policy, NOW, draining=True).deletions == ()
