"""Hash worker processes: same verdicts as threads, fallback when one dies, no orphans."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
from pathlib import Path

import psutil
import pytest

from clipd import hashworker as hashworker_mod
from clipd import ingest as ingest_mod
from clipd.async_index import AsyncIndex
from clipd.config import load
from clipd.hashworker import HashWorkers, Outcome, Request, Verdict, WorkerGone, examine_many
from clipd.index import index_path
from clipd.ingest import Ingestor
from clipd.metrics import Metrics
from clipd.record import ClipRecord
from tests.helpers import clip_bytes, index_rows, wait_for

DAY = "2026-11-24"


def _tree(clips_dir: Path, count: int, size: int = 2000, day: str = DAY) -> list[str]:
    folder = clips_dir / day
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    settled = time.time() - 3600  # older than the settle time: recorded at once
    for i in range(count):
        name = f"Clip_c{i}.mp4" if day == DAY else f"Clip_{day.replace('-', '')}c{i}.mp4"
        (folder / name).write_bytes(clip_bytes(size, i))
        os.utime(folder / name, (settled, settled))
        names.append(f"{day}/{name}")
    return names


def _request(clips_dir: Path, relpaths: list[str]) -> Request:
    return Request(str(clips_dir), relpaths, {}, frozenset({".mp4"}), 100, 10**9, 0, time.time_ns())


def test_workers_give_the_same_results_as_threads(clips_dir: Path) -> None:
    relpaths = _tree(clips_dir, 20)
    folder = clips_dir / DAY
    (folder / "Bad_sig1.mp4").write_bytes(b"\0" * 500)
    (folder / "Tiny_tiny1.mp4").write_bytes(clip_bytes(1000)[:50])
    (folder / "no job id.mp4").write_bytes(clip_bytes(1000))
    os.symlink(folder / "Clip_c0.mp4", folder / "Link_link1.mp4")
    odd = ["Bad_sig1.mp4", "Tiny_tiny1.mp4", "no job id.mp4", "Link_link1.mp4", "Gone_g1.mp4"]
    request = _request(clips_dir, relpaths + [f"{DAY}/{n}" for n in odd])
    workers = HashWorkers(2)
    try:
        # Several requests at once, as ingest's threads send them.
        answers = [workers.examine(request) for _ in range(3)]
    finally:
        workers.close()
    expected = examine_many(request)
    assert all(answer == expected for answer in answers)
    assert sum(isinstance(r, ClipRecord) for r in expected) == 20
    verdicts = [r for r in expected if isinstance(r, Verdict)]
    assert [v.outcome for v in verdicts] == [Outcome.QUARANTINED] * 4 + [Outcome.GONE]
    assert all(not psutil.pid_exists(pid) or _is_zombie(pid) for pid in workers.pids)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_files_opened_ahead_get_the_verdicts_of_a_fresh_open(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Odd entries far apart, so each is opened ahead while others are examined.
    relpaths = _tree(clips_dir, 60)
    folder = clips_dir / DAY
    os.mkfifo(folder / "Fifo_f1.mp4")
    (folder / "Dir_d1.mp4").mkdir()
    os.symlink(folder / "Clip_c1.mp4", folder / "Link_l1.mp4")
    (folder / "Bad_sig1.mp4").write_bytes(b"\0" * 500)
    odd = ["Fifo_f1.mp4", "Dir_d1.mp4", "Link_l1.mp4", "Bad_sig1.mp4", "Gone_g1.mp4"]
    for i, name in enumerate(odd):
        relpaths.insert(5 + 12 * i, f"{DAY}/{name}")
    request = _request(clips_dir, relpaths)
    before = _open_fds()
    ahead = examine_many(request)
    assert _open_fds() == before
    monkeypatch.setattr(hashworker_mod, "_READAHEAD_FILES", 0)
    assert ahead == examine_many(request)
    assert sum(isinstance(r, ClipRecord) for r in ahead) == 60
    verdicts = [r for r in ahead if isinstance(r, Verdict)]
    assert [v.outcome for v in verdicts] == [Outcome.QUARANTINED] * 4 + [Outcome.GONE]


def test_an_error_mid_batch_closes_the_files_opened_ahead(clips_dir: Path) -> None:
    relpaths = _tree(clips_dir, 40)
    # A name too long to open: examine_many raises OSError with files open ahead of it.
    relpaths.insert(3, f"{DAY}/{'T' * 300}_long1.mp4")
    before = _open_fds()
    with pytest.raises(OSError):
        examine_many(_request(clips_dir, relpaths))
    assert _open_fds() == before


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_dead_worker_raises_worker_gone_for_the_rest_of_the_pass(clips_dir: Path) -> None:
    request = _request(clips_dir, _tree(clips_dir, 3))
    workers = HashWorkers(2)
    try:
        assert len(workers.examine(request)) == 3
        os.kill(workers.pids[0], signal.SIGKILL)
        psutil.Process(workers.pids[0]).wait(10)
        with pytest.raises(WorkerGone):
            for _ in range(2):  # whichever worker is picked first, the dead one is hit
                workers.examine(request)
        with pytest.raises(WorkerGone):
            workers.examine(request)  # the healthy one is not used any more either
    finally:
        workers.close()


class _DyingWorkers(HashWorkers):
    """Helpers killed as soon as they start: ingest must hash everything itself."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", [HashWorkers, _DyingWorkers])
def test_reconcile_with_helper_processes_records_every_clip(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, workers
) -> None:
    relpaths = _tree(clips_dir, 1200)
    monkeypatch.setattr(ingest_mod, "_PROCESS_MIN_FILES", 1000)
    monkeypatch.setattr(ingest_mod, "HashWorkers", workers)
    config = load({}, {"CLIPS_DIR": str(clips_dir)}, "")

    async def run() -> ingest_mod.ReconcileReport:
        index = AsyncIndex(index_path(clips_dir))
        await index.open()
        ingestor = Ingestor(clips_dir, config.storage, config.ingest, index, Metrics(), 3600)
        try:
            return await ingestor.reconcile()
        finally:
            await asyncio.to_thread(ingestor.close)
            await index.close()

    with caplog.at_level(logging.WARNING, logger="clipd.hashworker"):
        report = asyncio.run(run())
    assert report.recorded == 1200
    assert set(index_rows(clips_dir)) == set(relpaths)
    died = [r for r in caplog.records if "in threads" in r.getMessage()]
    assert len(died) == (1 if workers is _DyingWorkers else 0)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_no_helper_process_outlives_the_daemon(make_daemon, clips_dir: Path, stop: str) -> None:
    # Six folders: the helpers start in the fifth and get batches while the walk goes on.
    for day in range(6):
        _tree(clips_dir, 1000, size=4000, day=f"2026-11-{day + 10}")
    daemon = make_daemon().start(wait_ready=False)
    assert daemon.proc is not None
    parent = psutil.Process(daemon.proc.pid)

    def helpers() -> list[psutil.Process]:
        try:
            children = parent.children()
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if "clipd.hashworker" in " ".join(_cmdline(c))]

    found = wait_for(helpers, timeout=60, what="hash worker processes")
    if stop == "sigkill":
        daemon.kill9()
    else:
        assert daemon.stop() == 0

    def all_gone() -> bool:
        return all(_is_zombie(p.pid) for p in found)

    wait_for(all_gone, timeout=20, what="hash workers to exit")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def test_a_batch_near_the_fd_limit_is_examined_whole(clips_dir: Path) -> None:
    relpaths = _tree(clips_dir, 80)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Fill the holes below the highest fd, then leave room for 6 more: a few files opened
    # ahead fill it, and the window must give way, not the batch.
    top = max(int(f) for f in _open_fds())
    fillers = [os.open(os.devnull, os.O_RDONLY)]
    while fillers[-1] < top:
        fillers.append(os.open(os.devnull, os.O_RDONLY))
    resource.setrlimit(resource.RLIMIT_NOFILE, (fillers[-1] + 7, hard))
    try:
        results = examine_many(_request(clips_dir, relpaths))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    assert sum(isinstance(r, ClipRecord) for r in results) == 80
