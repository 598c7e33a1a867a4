"""The pure key ↔ relpath ↔ tree-path mapping of clipd.storage.s3keys: tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clipd.naming import ClipName, parse_relpath
from clipd.storage.s3keys import (
    KeyPlan,
    NotClip,
    join_key,
    normalize_prefix,
    parse_s3_url,
    plan_key,
)

EXTS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".gif"})
MIDNIGHT = 1795478400.0  # 2026-11-24T00:00:00Z


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [
        ("", ""),
        ("/", ""),
        ("//", ""),
        ("clips", "clips/"),
        ("/clips/", "clips/"),
        ("clips//", "clips/"),
        ("a/b", "a/b/"),
        ("/a/b/", "a/b/"),
    ],
)
def test_normalize_prefix(prefix: str, normalized: str) -> None:
    assert normalize_prefix(prefix) == normalized


@given(st.text(alphabet="ab/", max_size=12))
def test_property_normalize_prefix_is_idempotent_and_well_formed(prefix: str) -> None:
    once = normalize_prefix(prefix)
    assert normalize_prefix(once) == once
    assert once == "" or (once.endswith("/") and not once.startswith("/"))


def test_join_key_only_concatenates_a_normalized_prefix() -> None:
    assert join_key("clips/", "2026-11-24/T_j.mp4") == "clips/2026-11-24/T_j.mp4"
    assert join_key("", "T_j.mp4") == "T_j.mp4"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/clips", ("bucket", "clips/")),
        ("s3://bucket/a/b/", ("bucket", "a/b/")),
        ("s3://bucket//a", ("bucket", "a/")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("bucket/clips", "must look like s3://BUCKET"),
        ("S3://bucket", "must look like s3://BUCKET"),
        ("https://bucket.s3.amazonaws.com/x", "must look like s3://BUCKET"),
        ("s3://", "names no bucket"),
        ("s3:///clips", "names no bucket"),
    ],
)
def test_parse_s3_url_refuses_malformed_urls_naming_them(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_s3_url(url)
    assert repr(url) in str(raised.value)


def _plan(key: str, prefix: str = "clips/", size: int = 100, **kw: object) -> KeyPlan | NotClip:
    max_bytes = kw.get("max_bytes")
    assert max_bytes is None or isinstance(max_bytes, int)
    return plan_key(key, prefix, size, MIDNIGHT + 60, EXTS, max_bytes)


def test_a_clip_in_a_day_folder_keeps_its_day_and_name() -> None:
    assert _plan("clips/2026-11-20/My_Video_abc-1.mp4") == KeyPlan(
        key="clips/2026-11-20/My_Video_abc-1.mp4",
        relpath="2026-11-20/My_Video_abc-1.mp4",
        local_relpath="2026-11-20/My_Video_abc-1.mp4",
        day="2026-11-20",
        name=ClipName("My_Video", "abc-1", ".mp4"),
    )


def test_title_is_sanitized_for_the_tree_but_the_relpath_keeps_the_key() -> None:
    plan = _plan("clips/2026-11-20/My Vidéo!_abc.mp4")
    assert isinstance(plan, KeyPlan)
    assert plan.relpath == "2026-11-20/My Vidéo!_abc.mp4"
    assert plan.local_relpath == "2026-11-20/My_Vid_o_abc.mp4"


def test_an_empty_title_becomes_the_default_title() -> None:
    plan = _plan("clips/2026-11-20/_abc.mp4")
    assert isinstance(plan, KeyPlan) and plan.local_relpath == "2026-11-20/Clip_abc.mp4"


def test_extension_case_is_kept_and_matched_case_insensitively() -> None:
    plan = _plan("clips/2026-11-20/T_abc.MP4")
    assert isinstance(plan, KeyPlan)
    assert plan.name.ext == ".MP4" and plan.local_relpath == "2026-11-20/T_abc.MP4"


@pytest.mark.parametrize(
    ("key", "day"),
    [
        ("clips/T_abc.mp4", "2026-11-24"),  # top level: the LastModified day
        ("clips/misc/T_abc.mp4", "2026-11-24"),  # not a day folder
        ("clips/2026-02-30/T_abc.mp4", "2026-11-24"),  # not a real calendar day
        ("clips/2026-11-24x/T_abc.mp4", "2026-11-24"),
        ("clips/old/2026-01-02/T_abc.mp4", "2026-01-02"),  # the nearest folder counts
        ("clips/2026-01-02/misc/T_abc.mp4", "2026-11-24"),
    ],
)
def test_day_is_the_parent_day_folder_else_the_utc_day_of_last_modified(key: str, day: str) -> None:
    plan = _plan(key)
    assert isinstance(plan, KeyPlan)
    assert plan.day == day and plan.local_relpath == f"{day}/T_abc.mp4"
    assert plan.relpath == key.removeprefix("clips/")


def test_last_modified_day_is_utc() -> None:
    plan = plan_key("T_abc.mp4", "", 1, MIDNIGHT - 0.5, EXTS)
    assert isinstance(plan, KeyPlan) and plan.day == "2026-11-23"


@pytest.mark.parametrize(
    ("key", "size", "max_bytes", "why"),
    [
        ("clips/", 0, None, NotClip.FOLDER),
        ("clips/2026-11-24/", 0, None, NotClip.FOLDER),
        ("clips/2026-11-24/T_abc.mp4/", 100, None, NotClip.FOLDER),
        ("clips/2026-11-24/T_abc.avi", 100, None, NotClip.BAD_EXTENSION),
        ("clips/2026-11-24/T_abc.", 100, None, NotClip.BAD_EXTENSION),
        ("clips/2026-11-24/T_abc", 100, None, NotClip.NOT_CLIP_NAME),
        ("clips/2026-11-24/.mp4", 100, None, NotClip.NOT_CLIP_NAME),
        ("clips/2026-11-24/Tabc.mp4", 100, None, NotClip.NOT_CLIP_NAME),  # no "_"
        ("clips/2026-11-24/T_a_b!.mp4", 100, None, NotClip.NOT_CLIP_NAME),  # bad job id
        ("clips/2026-11-24/T_.mp4", 100, None, NotClip.NOT_CLIP_NAME),  # empty job id
        ("clips/2026-11-24/T_" + "a" * 65 + ".mp4", 100, None, NotClip.NOT_CLIP_NAME),
        ("clips/2026-11-24/.T_abc.mp4", 100, None, NotClip.NOT_CLIP_NAME),  # hidden
        ("clips/2026-11-24/T_abc.mp4.tmp", 100, None, NotClip.NOT_CLIP_NAME),  # a writer's
        ("clips/2026-11-24/T_a\x00.mp4", 100, None, NotClip.NOT_CLIP_NAME),
        ("clips/2026-11-24/T_abc.mp4", 0, None, NotClip.EMPTY),
        ("clips/2026-11-24/T_abc.mp4", -1, None, NotClip.EMPTY),
        ("clips/2026-11-24/T_abc.mp4", 101, 100, NotClip.TOO_LARGE),
        # the name is judged before the size
        ("clips/2026-11-24/T_abc.avi", 0, None, NotClip.BAD_EXTENSION),
    ],
)
def test_objects_that_are_not_clips_say_why(
    key: str, size: int, max_bytes: int | None, why: NotClip
) -> None:
    assert _plan(key, size=size, max_bytes=max_bytes) is why


def test_size_at_max_bytes_is_a_clip() -> None:
    assert isinstance(_plan("clips/2026-11-24/T_abc.mp4", size=100, max_bytes=100), KeyPlan)


def test_with_an_empty_prefix_the_relpath_is_the_whole_key() -> None:
    plan = plan_key("2026-11-24/T_abc.gif", "", 5, 0.0, EXTS)
    assert isinstance(plan, KeyPlan) and plan.relpath == plan.key == "2026-11-24/T_abc.gif"


_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=0, max_size=30
)
_JOB = st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True)
_DAYS = st.dates().map(lambda d: d.isoformat())


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "clips/", "a/b/"]),
    folders=st.lists(st.one_of(_DAYS, _SEGMENT.filter(bool)), max_size=3),
    title=_SEGMENT,
    job_id=_JOB,
    ext=st.sampled_from(sorted(EXTS | {".MOV", ".Gif"})),
    last_modified_s=st.floats(0, 4e9),
)
def test_property_a_planned_clip_round_trips_to_its_key_and_parses_back_in_the_tree(
    prefix: str,
    folders: list[str],
    title: str,
    job_id: str,
    ext: str,
    last_modified_s: float,
) -> None:
    """Any clip key under the prefix: the key is prefix + relpath, and the tree path
    is a valid ``<day>/<name>`` that parse_relpath reads back as the same day and name
    (a name survives sanitize then parse)."""
    name = f"{title}_{job_id}{ext}"
    assume(not name.startswith(".") and "\x00" not in name)
    key = prefix + "/".join([*folders, name])
    plan = plan_key(key, prefix, 1, last_modified_s, EXTS)
    assert isinstance(plan, KeyPlan), plan
    assert join_key(prefix, plan.relpath) == key
    assert plan.name.job_id == job_id and plan.name.ext == ext
    assert parse_relpath(plan.local_relpath, EXTS) == (plan.day, plan.name)
