"""The ``verify`` command as a user runs it: ``python -m clipd verify [--json]``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import clip_bytes
from tests.test_cleanup import make_tree
from tests.test_ops_cli import clipd


def test_verify_lists_missing_changed_and_unindexed(clips_dir: Path) -> None:
    make_tree(clips_dir, {"a": ("2026-01-01", 1), "b": ("2026-01-01", 1), "c": ("2026-01-01", 1)})
    clean = clipd(clips_dir, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "3 clips checked, 3 ok" in clean.stdout
    (clips_dir / "2026-01-01" / "Clip_a.mp4").unlink()
    (clips_dir / "2026-01-01" / "Clip_b.mp4").write_bytes(clip_bytes(1000, 99))
    (clips_dir / "2026-01-01" / "Clip_new.mp4").write_bytes(clip_bytes(1000, 5))
    result = clipd(clips_dir, "verify", "--json")
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["missing"] == ["2026-01-01/Clip_a.mp4"]
    assert [c["relpath"] for c in out["changed"]] == ["2026-01-01/Clip_b.mp4"]
    assert out["unindexed"] == ["2026-01-01/Clip_new.mp4"]
    assert "verify: 3/3 clips" in result.stderr  # plain progress lines off a terminal
