"""Clip names: parsing, building and sanitizing (tables and hypothesis properties)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipd.naming import (
    MAX_TITLE_CHARS,
    build_name,
    is_day_folder,
    is_ignored,
    parse_clip_name,
    parse_relpath,
    sanitize_title,
)

EXTS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".gif"})
job_ids = st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True)
titles = st.from_regex(r"[A-Za-z0-9-]([A-Za-z0-9_-]{0,98}[A-Za-z0-9-])?", fullmatch=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My_Video_Title_abc123.mp4", ("My_Video_Title", "abc123", ".mp4")),
        ("Clip_a-b-c.webm", ("Clip", "a-b-c", ".webm")),
        ("X_1.MP4", ("X", "1", ".MP4")),
        ("NoJobId.mp4", None),
        ("Title_.mp4", None),
        ("_abc.mp4", None),
        ("Title_abc", None),
        ("Title_abc.txt", None),
        ("Title_abc.mp4.tmp", None),
        (".hidden_abc.mp4", None),
        ("Bad Title_abc.mp4", None),
        ("Title_ab c.mp4", None),
        ("Title_" + "a" * 65 + ".mp4", None),
        ("Title_" + "a" * 64 + ".mp4", ("Title", "a" * 64, ".mp4")),
    ],
)
def test_parse_clip_name_table(name: str, expected: tuple[str, str, str] | None) -> None:
    parsed = parse_clip_name(name, EXTS)
    assert (None if parsed is None else (parsed.title, parsed.job_id, parsed.ext)) == expected


@pytest.mark.parametrize(
    ("relpath", "ok"),
    [
        ("2026-11-24/A_b.mp4", True),
        ("2026-02-30/A_b.mp4", False),
        ("20261124/A_b.mp4", False),
        ("2026-11-24/sub/A_b.mp4", False),
        ("A_b.mp4", False),
        ("../2026-11-24/A_b.mp4", False),
    ],
)
def test_parse_relpath_needs_a_real_day_folder(relpath: str, ok: bool) -> None:
    assert (parse_relpath(relpath, EXTS) is not None) is ok


def test_hidden_and_tmp_are_never_clips() -> None:
    assert is_ignored(".clipd") and is_ignored("A_b.mp4.tmp") and not is_ignored("A_b.mp4")
    assert is_day_folder("2026-11-24") and not is_day_folder(".clipd")


@given(titles, job_ids, st.sampled_from(sorted(EXTS)))
def test_build_then_parse_round_trips(title: str, job_id: str, ext: str) -> None:
    name = build_name(title, job_id, ext)
    parsed = parse_clip_name(name, EXTS)
    assert parsed is not None
    assert build_name(parsed.title, parsed.job_id, parsed.ext) == name
    assert (parsed.title, parsed.job_id, parsed.ext) == (title, job_id, ext)


@given(st.text())
def test_parse_then_build_round_trips(name: str) -> None:
    parsed = parse_clip_name(name, EXTS)
    if parsed is not None:
        assert build_name(parsed.title, parsed.job_id, parsed.ext) == name


@given(st.text())
def test_any_title_sanitizes_to_a_safe_non_empty_title(raw: str) -> None:
    title = sanitize_title(raw)
    assert 0 < len(title) <= MAX_TITLE_CHARS
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in title)
    assert sanitize_title(title) == title


@given(st.text(), job_ids, st.sampled_from(sorted(EXTS)))
def test_no_input_produces_a_path_outside_the_tree(raw: str, job_id: str, ext: str) -> None:
    root = Path("/srv/clips")
    path = (root / "2026-11-24" / build_name(raw, job_id, ext)).resolve()
    assert path.parent == root / "2026-11-24"
    assert parse_clip_name(path.name, EXTS) is not None


@given(st.text(min_size=1))
def test_bad_job_ids_are_refused_by_build(job_id: str) -> None:
    from clipd.naming import is_job_id

    if not is_job_id(job_id):
        with pytest.raises(ValueError, match="job id"):
            build_name("T", job_id, ".mp4")
