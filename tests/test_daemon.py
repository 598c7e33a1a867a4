"""The real daemon as a process: sd_notify, ingest, quarantine, crash and restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    clip_bytes,
    disk_clips,
    index_rows,
    wait_for,
    write_clip,
)

DAY = "2026-11-24"


def test_notify_ready_watchdog_and_stopping(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon(env={"WATCHDOG_USEC": "200000"}).start()
    ready = daemon.notify.wait("READY=1")
    assert "STATUS=serving 0 clips" in ready
    daemon.notify.wait("WATCHDOG=1")
    assert daemon.get("/health")[0] == 200
    assert daemon.stop() == 0
    daemon.notify.wait("STOPPING=1")


def test_bad_config_value_exits_78_naming_the_key(clips_dir: Path, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "CLIPS_DIR": str(clips_dir),
        "CLIPD_RETENTION_MAX_AGE_HOURS": "-3",
    }
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "run"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "CLIPD_RETENTION_MAX_AGE_HOURS" in lines[0] and "'-3'" in lines[0]
    assert "must be > 0" in lines[0]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[retention]\nmax_age_hours = -1\n", "retention.max_age_hours=-1"),
        ("[web]\nlisten = 'nowhere'\n", "web.listen='nowhere'"),
        ("[retention]\nmax_age_hourz = 1\n", "retention.max_age_hourz: unknown key"),
        ("[storage]\nmin_bytes = 'x'\n", "storage.min_bytes='x': must be an integer"),
    ],
)
def test_bad_config_file_exits_78(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "clipd.toml"
    path.write_text(toml)
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "check-config", "--config", str(path)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78, result.stderr
    assert needle in result.stderr


def test_unwritable_clips_dir_exits_78(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    env = {"PATH": os.environ["PATH"], "CLIPS_DIR": str(blocker / "clips")}
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "run"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 78
    assert "storage.clips_dir=" in result.stderr


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "CLIPD_API_TOKEN": "s3cret", "CLIPD_LISTEN": "0.0.0.0:9"}
    result = subprocess.run(
        [sys.executable, "-m", "clipd", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    effective = json.loads(result.stdout)
    assert effective["web"]["api_token"] == "***"
    assert effective["web"]["listen"] == "0.0.0.0:9"
    assert "s3cret" not in result.stdout


def test_new_clip_is_indexed_and_counted(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    data = clip_bytes(50_000, seed=1)
    write_clip(clips_dir, DAY, "Hello_World_job-1.mp4", data)
    wait_for(lambda: daemon.get_json("/api/v1/storage/metrics")["file_count"] == 1, what="ingest")
    body = daemon.get_json("/api/v1/storage/metrics")
    assert body["clips_disk_used_bytes"] == len(data)
    assert body["storage_backend"] == "local"
    assert body["base_path"] == str(clips_dir.resolve())
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert daemon.metric("clipd_clip_files") == 1
    assert daemon.metric("clipd_clip_bytes") == len(data)


def test_invalid_clip_is_quarantined_with_reason(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    write_clip(clips_dir, DAY, "Not_Video_bad1.mp4", b"this is not an mp4 at all" * 10)
    note = clips_dir / ".clipd" / "quarantine" / DAY / "Not_Video_bad1.mp4.json"
    # The note is written first, then the file moves: wait for the move.
    wait_for(lambda: (note.parent / "Not_Video_bad1.mp4").exists(), what="quarantined file")
    reason = json.loads(note.read_text())
    assert "signature" in reason["reason"]
    assert reason["original_path"] == f"{DAY}/Not_Video_bad1.mp4"
    assert (note.parent / "Not_Video_bad1.mp4").exists()
    assert not (clips_dir / DAY / "Not_Video_bad1.mp4").exists()
    assert index_rows(clips_dir) == {}
    assert daemon.metric("clipd_quarantined_files_total") == 1


def test_second_file_with_same_job_id_is_a_conflict(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    write_clip(clips_dir, DAY, "First_dup-1.mp4", clip_bytes(1000, seed=1))
    wait_for(lambda: index_rows(clips_dir), what="first clip indexed")
    write_clip(clips_dir, "2026-11-25", "Second_dup-1.mp4", clip_bytes(1000, seed=2))
    note = clips_dir / ".clipd" / "quarantine" / "2026-11-25" / "Second_dup-1.mp4.json"
    wait_for(note.exists, what="conflict quarantined")
    assert "conflict" in json.loads(note.read_text())["reason"]
    assert set(index_rows(clips_dir)) == {f"{DAY}/First_dup-1.mp4"}
    assert daemon.get("/health")[0] == 200


def test_tmp_is_ignored_until_renamed(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    folder = clips_dir / DAY
    folder.mkdir()
    tmp = folder / "Slow_Writer_tmp1.mp4.tmp"
    tmp.write_bytes(clip_bytes(4000, seed=3))
    # A clip written after the .tmp proves the daemon saw events past it.
    write_clip(clips_dir, DAY, "Marker_marker1.mp4", clip_bytes(100, seed=4))
    wait_for(lambda: f"{DAY}/Marker_marker1.mp4" in index_rows(clips_dir), what="marker")
    assert f"{DAY}/Slow_Writer_tmp1.mp4" not in index_rows(clips_dir)
    assert tmp.exists()
    os.rename(tmp, folder / "Slow_Writer_tmp1.mp4")
    wait_for(lambda: f"{DAY}/Slow_Writer_tmp1.mp4" in index_rows(clips_dir), what="renamed")
    assert daemon.get("/health")[0] == 200


def test_deleted_file_leaves_the_index(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    path = write_clip(clips_dir, DAY, "Gone_gone1.mp4", clip_bytes(500))
    wait_for(lambda: index_rows(clips_dir), what="indexed")
    path.unlink()
    wait_for(lambda: not index_rows(clips_dir), what="row dropped")
    assert daemon.get_json("/api/v1/storage/metrics")["file_count"] == 0


def test_file_written_in_place_is_recorded_once_complete(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon().start()
    folder = clips_dir / DAY
    folder.mkdir()
    data = clip_bytes(300_000, seed=9)
    with open(folder / "In_Place_inplace1.mp4", "wb") as f:
        for i in range(0, len(data), 50_000):
            f.write(data[i : i + 50_000])
            f.flush()
    wait_for(lambda: index_rows(clips_dir) == disk_clips(clips_dir) != {}, what="complete")
    assert not list((clips_dir / ".clipd").glob("quarantine/*/*"))
    assert daemon.get("/health")[0] == 200


def test_startup_reconcile_indexes_existing_and_drops_vanished(make_daemon, clips_dir):
    for i in range(20):
        write_clip(clips_dir, f"2026-11-{10 + i % 5:02d}", f"Old_old-{i}.mp4", clip_bytes(2000, i))
    daemon = make_daemon().start()
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert len(index_rows(clips_dir)) == 20
    daemon.stop()
    (clips_dir / "2026-11-10" / "Old_old-0.mp4").unlink()
    write_clip(clips_dir, "2026-11-11", "New_new-1.mp4", clip_bytes(3000, 99))
    daemon.start()
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert len(index_rows(clips_dir)) == 20


def test_warm_restart_hashes_nothing(make_daemon, clips_dir: Path) -> None:
    for i in range(50):
        write_clip(clips_dir, DAY, f"Warm_warm-{i}.mp4", clip_bytes(5000, i))
    daemon = make_daemon().start()
    assert daemon.metric("clipd_ingested_files_total") == 50
    daemon.stop()
    daemon.start()
    assert daemon.metric("clipd_ingested_files_total") == 0
    assert "reconciled: 0 examined" in daemon.log()
    assert len(index_rows(clips_dir)) == 50


def test_bytes_changed_while_stopped_with_mtime_restored_are_quarantined(make_daemon, clips_dir):
    path = write_clip(clips_dir, DAY, "Tamper_tamper1.mp4", clip_bytes(8000, 1))
    write_clip(clips_dir, DAY, "Intact_intact1.mp4", clip_bytes(8000, 2))
    daemon = make_daemon().start()
    assert len(index_rows(clips_dir)) == 2
    daemon.stop()
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    daemon.start()
    # ctime moved, so the file was re-read; its new bytes are not a new version.
    assert set(index_rows(clips_dir)) == {f"{DAY}/Intact_intact1.mp4"}
    note = clips_dir / ".clipd" / "quarantine" / DAY / "Tamper_tamper1.mp4.json"
    assert "integrity" in json.loads(note.read_text())["reason"]
    assert daemon.metric("clipd_integrity_mismatches_total") == 1


def test_bytes_changed_while_running_are_quarantined(make_daemon, clips_dir):
    path = write_clip(clips_dir, DAY, "Live_Tamper_lt1.mp4", clip_bytes(8000, 1))
    daemon = make_daemon().start()
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"X")
    note = clips_dir / ".clipd" / "quarantine" / DAY / "Live_Tamper_lt1.mp4.json"
    # The note is written before the move and the row drop: wait for all three.
    wait_for(
        lambda: note.exists() and not path.exists() and index_rows(clips_dir) == {},
        what="tampered clip quarantined and forgotten",
    )
    assert daemon.get("/api/v1/jobs/lt1/download")[0] == 404


def test_touch_without_new_bytes_keeps_the_clip(make_daemon, clips_dir):
    path = write_clip(clips_dir, DAY, "Touched_touch1.mp4", clip_bytes(8000, 1))
    daemon = make_daemon().start()
    before = index_rows(clips_dir)
    path.touch()
    write_clip(clips_dir, DAY, "Marker_mark2.mp4", clip_bytes(100, 4))
    wait_for(lambda: f"{DAY}/Marker_mark2.mp4" in index_rows(clips_dir), what="marker")
    relpath = f"{DAY}/Touched_touch1.mp4"
    assert index_rows(clips_dir)[relpath] == before[relpath]
    assert daemon.get("/api/v1/jobs/touch1/download")[0] == 200


def test_sigterm_during_burst_then_kill9_restart_index_equals_disk(make_daemon, clips_dir):
    rng = random.Random(42)
    daemon = make_daemon()
    written = 0
    for _ in range(5):
        daemon.start()
        for _ in range(rng.randint(20, 60)):
            write_clip(
                clips_dir,
                f"2026-11-{20 + written % 5}",
                f"Burst_b{written}.mp4",
                clip_bytes(rng.randint(100, 20_000), written),
            )
            written += 1
        daemon.kill9()
    daemon.start()
    assert index_rows(clips_dir) == disk_clips(clips_dir)
    assert len(disk_clips(clips_dir)) == written
    daemon.stop()


def test_sighup_reloads_config(make_daemon, clips_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[log]\nlevel = 'info'\n")
    daemon = make_daemon(args=["--config", str(config)]).start()
    config.write_text("[log]\nlevel = 'debug'\n[ingest]\nhash_workers = 3\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log(), what="reload log line")
    assert "ingest.hash_workers changed: it takes effect after a restart" in daemon.log()
    config.write_text("[retention]\nmax_age_hours = -5\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.log(), what="refused reload")
    assert daemon.get("/health")[0] == 200


def test_journal_stream_lines_carry_priority_and_no_timestamp(make_daemon, clips_dir):
    daemon = make_daemon(env={"JOURNAL_STREAM": "8:1234"}).start()
    write_clip(clips_dir, DAY, "Bad_Stuff_jb1.mp4", b"garbage" * 20)
    wait_for(lambda: "clipd.quarantine: quarantined" in daemon.log(), what="warning line")
    daemon.stop()
    lines = [line for line in daemon.log().splitlines() if line]
    assert lines and all(line[:3] in {"<3>", "<4>", "<6>", "<7>", "<2>"} for line in lines), lines
    assert any(line.startswith("<4>") and "quarantined" in line for line in lines)
    assert not any(line[3:7].isdigit() and line[7] == "-" for line in lines)


def test_stale_tmp_is_removed_young_tmp_kept(make_daemon, clips_dir: Path) -> None:
    folder = clips_dir / DAY
    folder.mkdir()
    old = folder / "Crashed_c1.mp4.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = folder / "Writing_w1.mp4.tmp"
    young.write_bytes(b"x")
    daemon = make_daemon().start()
    assert not old.exists()
    assert young.exists()
    assert "removed stale temp file" in daemon.log()


def test_socket_activation_uses_inherited_socket(clips_dir: Path, tmp_path: Path) -> None:
    import socket as socket_mod

    listener = socket_mod.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    notify = tmp_path / "n.sock"
    from tests.helpers import NotifySocket

    ns = NotifySocket(notify)
    # systemd passes the socket as fd 3 and LISTEN_PID of the service process; a tiny
    # shim sets LISTEN_PID after fork, as systemd does.
    shim = (
        "import os,sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID']=str(os.getpid());"
        "os.environ['LISTEN_FDS']='1';"
        "os.execv(sys.executable, [sys.executable, '-m', 'clipd', 'run'])"
    )
    env = {
        "PATH": os.environ["PATH"],
        "CLIPS_DIR": str(clips_dir),
        "NOTIFY_SOCKET": str(notify),
        "CLIPD_LISTEN": "127.0.0.1:1",
    }
    log = open(tmp_path / "clipd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-c", shim, str(listener.fileno())],
        env=env,
        pass_fds=(listener.fileno(),),
        stdout=log,
        stderr=log,
    )
    try:
        ns.wait("READY=1")
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        listener.close()
        ns.close()


def test_local_daemon_never_imports_boto3(make_daemon, clips_dir: Path) -> None:
    daemon = make_daemon(env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    imported = {
        line.rpartition("|")[2].strip()
        for line in daemon.log().splitlines()
        if line.startswith("import time:")
    }
    assert "aiohttp" in imported  # the import log is really there
    assert not {m for m in imported if m.split(".")[0] in {"boto3", "botocore"}}
    assert daemon.stop() == 0


@pytest.mark.parametrize("argv", [["check-config"], ["report", "--help"]])
def test_operator_commands_do_not_import_the_web_stack(clips_dir: Path, argv: list[str]) -> None:
    code = (
        "import sys\nfrom clipd.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        "print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}))"
    )
    env = {"PATH": os.environ["PATH"], "CLIPS_DIR": str(clips_dir)}
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=True
    )
    modules = result.stdout.rpartition("MODULES")[2].split()
    assert "clipd" in modules
    assert not {"aiohttp", "boto3", "botocore"} & set(modules)


def test_api_answers_503_while_reconciling_and_a_stop_then_never_reports_ready(
    make_daemon, clips_dir: Path
) -> None:
    # Enough clips that the start-up reconcile takes a while (plain writes: fsync per
    # file would make the set-up slow, and the reconcile does not care).
    data = clip_bytes(2048)
    for day in range(10):
        folder = clips_dir / f"2026-11-{day + 10:02d}"
        folder.mkdir(parents=True)
        for n in range(1000):
            (folder / f"Clip_d{day}n{n}.mp4").write_bytes(data)
    daemon = make_daemon().start(wait_ready=False)

    def health() -> int | None:
        try:
            return daemon.get("/health")[0]
        except OSError:  # not bound yet
            return None

    assert wait_for(health, what="the socket bound") == 503
    status, headers, body = daemon.get("/api/v1/jobs/d1n1/download")
    assert status == 503, body
    assert json.loads(body)["error"] == "starting"
    assert headers["Retry-After"] == "1"
    assert daemon.get("/api/v1/storage/metrics")[0] == 200
    assert not any("READY=1" in m for m in daemon.notify.messages)
    assert daemon.stop() == 0
    daemon.notify.wait("STOPPING=1")
    assert not any("READY=1" in m for m in daemon.notify.messages), daemon.log()
