"""The pure reconcile plan: what to hash, which rows to drop, which temp files are stale."""

from __future__ import annotations

from pathlib import Path

from clipd.reconcile import Walk, plan_reconcile, walk_tree

A, B, C = "2026-11-24/T_a.mp4", "2026-11-24/T_b.mp4", "2026-11-24/T_c.mp4"


def test_plan_hashes_new_and_changed_drops_gone_and_finds_stale_tmp() -> None:
    walk = Walk(
        files={A: (1, 2, 3, 4), B: (5, 6, 7, 8), C: (9, 9, 9, 9)},
        tmp_mtimes_ns={"2026-11-24/x.tmp": 0, "2026-11-24/y.tmp": 95},
        days=("2026-11-24",),
    )
    indexed = {(A, 1, 2, 3, 4): "a", (B, 5, 6, 7, 0): "b", ("2026-11-23/T_d.mp4", 1, 1, 1, 1): "d"}
    plan = plan_reconcile(walk, indexed, now_ns=100, stale_tmp_ns=10)
    assert plan.to_examine == (B, C)
    assert plan.known == {B: (5, 6, 7, 0)}
    assert plan.to_drop == ("d",)
    assert plan.stale_tmp == ("2026-11-24/x.tmp",)


def test_plan_of_an_unchanged_tree_is_empty() -> None:
    walk = Walk(files={A: (1, 2, 3, 4), B: (5, 6, 7, 8)}, tmp_mtimes_ns={}, days=())
    plan = plan_reconcile(walk, {(A, 1, 2, 3, 4): "a", (B, 5, 6, 7, 8): "b"}, 0, 1)
    assert (plan.to_examine, plan.to_drop, plan.known, plan.stale_tmp) == ((), (), {}, ())


def test_walk_sees_day_folders_only_and_skips_hidden(tmp_path: Path) -> None:
    day = tmp_path / "2026-11-24"
    day.mkdir()
    (day / "T_a.mp4").write_bytes(b"x" * 3)
    (day / ".hidden.mp4").write_bytes(b"x")
    (day / "w.tmp").write_bytes(b"")
    (tmp_path / "notaday").mkdir()
    (tmp_path / "notaday" / "T_b.mp4").write_bytes(b"x")
    walk = walk_tree(tmp_path)
    st = (day / "T_a.mp4").stat()
    assert walk.files == {A: (3, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)}
    assert list(walk.tmp_mtimes_ns) == ["2026-11-24/w.tmp"]
    assert walk.days == ("2026-11-24",)
