"""The pure conditional-request decision: tables per RFC 9110 and a few properties."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from clipd.conditional import Decision, Outcome, decide, entity_tags, parse_http_date

SHA = "ab" * 32
OTHER = "cd" * 32
MTIME_NS = 1_800_000_000_500_000_000  # .5 s: Last-Modified truncates to the second
LM = formatdate(1_800_000_000, usegmt=True)
BEFORE = formatdate(1_800_000_000 - 60, usegmt=True)
AFTER = formatdate(1_800_000_000 + 60, usegmt=True)
SIZE = 1000

FULL = Decision(Outcome.FULL)


def _decide(method: str = "GET", **headers: str) -> Decision:
    h = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return decide(method, h, SHA, MTIME_NS, SIZE)


@pytest.mark.parametrize(
    ("method", "headers", "outcome"),
    [
        ("GET", {}, Outcome.FULL),
        # If-Match (strong comparison), then If-Unmodified-Since only without If-Match
        ("GET", {"If-Match": f'"{SHA}"'}, Outcome.FULL),
        ("GET", {"If-Match": f'"{OTHER}", "{SHA}"'}, Outcome.FULL),
        ("GET", {"If-Match": "*"}, Outcome.FULL),
        ("GET", {"If-Match": f'W/"{SHA}"'}, Outcome.PRECONDITION_FAILED),
        ("GET", {"If-Match": f'"{OTHER}"'}, Outcome.PRECONDITION_FAILED),
        ("GET", {"If-Match": "garbage"}, Outcome.PRECONDITION_FAILED),
        ("GET", {"If-Unmodified-Since": BEFORE}, Outcome.PRECONDITION_FAILED),
        ("GET", {"If-Unmodified-Since": LM}, Outcome.FULL),
        ("GET", {"If-Unmodified-Since": "not a date"}, Outcome.FULL),
        ("GET", {"If-Match": f'"{SHA}"', "If-Unmodified-Since": BEFORE}, Outcome.FULL),
        # If-None-Match (weak comparison), then If-Modified-Since only without it
        ("GET", {"If-None-Match": f'"{SHA}"'}, Outcome.NOT_MODIFIED),
        ("HEAD", {"If-None-Match": f'W/"{SHA}"'}, Outcome.NOT_MODIFIED),
        ("GET", {"If-None-Match": "*"}, Outcome.NOT_MODIFIED),
        ("GET", {"If-None-Match": f'"{OTHER}"'}, Outcome.FULL),
        ("DELETE", {"If-None-Match": f'"{SHA}"'}, Outcome.PRECONDITION_FAILED),
        ("GET", {"If-Modified-Since": LM}, Outcome.NOT_MODIFIED),
        ("GET", {"If-Modified-Since": AFTER}, Outcome.NOT_MODIFIED),
        ("GET", {"If-Modified-Since": BEFORE}, Outcome.FULL),
        ("GET", {"If-Modified-Since": "yesterday"}, Outcome.FULL),
        ("GET", {"If-None-Match": f'"{OTHER}"', "If-Modified-Since": AFTER}, Outcome.FULL),
        # 412 wins over 304
        (
            "GET",
            {"If-Match": f'"{OTHER}"', "If-None-Match": f'"{SHA}"'},
            Outcome.PRECONDITION_FAILED,
        ),
    ],
)
def test_preconditions(method: str, headers: dict[str, str], outcome: Outcome) -> None:
    h = CIMultiDict(headers)
    assert decide(method, h, SHA, MTIME_NS, SIZE).outcome is outcome


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Range": "bytes=0-99"}, Decision(Outcome.PARTIAL, 0, 99)),
        ({"Range": "bytes=900-"}, Decision(Outcome.PARTIAL, 900, 999)),
        ({"Range": "bytes=-100"}, Decision(Outcome.PARTIAL, 900, 999)),
        ({"Range": "bytes=-5000"}, Decision(Outcome.PARTIAL, 0, 999)),
        ({"Range": "bytes=990-5000"}, Decision(Outcome.PARTIAL, 990, 999)),
        ({"Range": "BYTES = 1 - 2"}, Decision(Outcome.PARTIAL, 1, 2)),
        ({"Range": "bytes=999-999"}, Decision(Outcome.PARTIAL, 999, 999)),
        ({"Range": "bytes=1000-"}, Outcome.RANGE_NOT_SATISFIABLE),
        ({"Range": "bytes=-0"}, Outcome.RANGE_NOT_SATISFIABLE),
        ({"Range": "bytes=5-1"}, Outcome.FULL),
        ({"Range": "bytes=0-1,5-6"}, Outcome.FULL),
        ({"Range": "items=0-1"}, Outcome.FULL),
        ({"Range": "bytes=-"}, Outcome.FULL),
        ({"Range": "bytes=0-9", "If-Range": f'"{SHA}"'}, Decision(Outcome.PARTIAL, 0, 9)),
        ({"Range": "bytes=0-9", "If-Range": LM}, Decision(Outcome.PARTIAL, 0, 9)),
        ({"Range": "bytes=0-9", "If-Range": f'"{OTHER}"'}, Outcome.FULL),
        ({"Range": "bytes=0-9", "If-Range": f'W/"{SHA}"'}, Outcome.FULL),
        ({"Range": "bytes=0-9", "If-Range": BEFORE}, Outcome.FULL),
        ({"Range": "bytes=0-9", "If-Range": AFTER}, Outcome.FULL),
        ({"Range": "bytes=0-9", "If-Range": "nonsense"}, Outcome.FULL),
        ({"If-Range": f'"{OTHER}"'}, Outcome.FULL),
    ],
)
def test_ranges(headers: dict[str, str], expected: Decision | Outcome) -> None:
    decision = decide("GET", CIMultiDict(headers), SHA, MTIME_NS, SIZE)
    if isinstance(expected, Outcome):
        assert decision.outcome is expected
    else:
        assert (decision.outcome, decision.start, decision.end) == (
            expected.outcome,
            expected.start,
            expected.end,
        )


def test_stale_if_range_marks_the_range_ignored() -> None:
    decision = _decide(Range="bytes=0-9", If_Range=f'"{OTHER}"')
    assert decision.outcome is Outcome.FULL and decision.range_ignored


def test_head_ignores_range() -> None:
    decision = _decide("HEAD", Range="bytes=0-9")
    assert decision.outcome is Outcome.FULL and decision.range_ignored


def test_entity_tag_lists_parse() -> None:
    assert entity_tags('"a", W/"b" ,"c"') == ((False, "a"), (True, "b"), (False, "c"))
    assert entity_tags("*") == ()
    assert entity_tags('"a" junk') is None
    assert entity_tags("") is None


def test_http_dates() -> None:
    assert parse_http_date(LM) == 1_800_000_000
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date("nope") is None


@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.text(max_size=40),
    st.text(max_size=40),
    st.sampled_from(["GET", "HEAD", "PUT"]),
    st.integers(min_value=0, max_value=10**6),
)
def test_any_header_values_give_a_consistent_decision(
    if_match: str, if_none_match: str, range_: str, if_range: str, method: str, size: int
) -> None:
    h = CIMultiDict(
        {
            "If-Match": if_match,
            "If-None-Match": if_none_match,
            "Range": range_,
            "If-Range": if_range,
        }
    )
    decision = decide(method, h, SHA, MTIME_NS, size)
    if decision.outcome is Outcome.PARTIAL:
        assert 0 <= decision.start <= decision.end < size


@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
)
def test_a_satisfiable_range_stays_inside_the_clip(size: int, first: int, last: int | None) -> None:
    value = f"bytes={first}-" + ("" if last is None else str(last))
    decision = decide("GET", CIMultiDict({"Range": value}), SHA, MTIME_NS, size)
    if last is not None and last < first:
        assert decision.outcome is Outcome.FULL  # invalid syntax: the Range is ignored
    elif first >= size:
        assert decision.outcome is Outcome.RANGE_NOT_SATISFIABLE
    else:
        assert decision.outcome is Outcome.PARTIAL
        expected_end = size - 1 if last is None else min(size - 1, last)
        assert (decision.start, decision.end) == (first, expected_end)
