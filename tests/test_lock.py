"""One run per output directory: the lock names its holder, recognises a stale one and
explains why; a resumed run sweeps the temporaries an interrupted one left."""

import subprocess
import time

import pytest
from fsspec.implementations.local import LocalFileSystem

from pf1m.pipeline.commit import sweep_temporaries
from pf1m.pipeline.commit import tmp_path as temporary_of
from pf1m.pipeline.lock import LOCK, LockHeld, RunLockFile
from pf1m.schemas.run import RunLock


def lock_at(root, run_id="r1", ttl=60.0) -> RunLockFile:
    return RunLockFile(LocalFileSystem(), str(root), run_id, ttl)


def plant(root, **fields) -> None:
    held = {
        "host": "elsewhere", "pid": 1, "run_id": "old", "started_at": "2026-11-26T00:00:00",
        "heartbeat_at": time.time(), "ttl_s": 60.0, **fields,
    }  # fmt: skip
    (root / LOCK).write_text(RunLock(**held).model_dump_json())


def test_second_run_is_refused_naming_the_holder(tmp_path):
    first = lock_at(tmp_path, "first")
    assert first.acquire() is None
    try:
        with pytest.raises(LockHeld) as err:
            lock_at(tmp_path, "second").acquire()
        msg = str(err.value)
        assert "run first" in msg and f"pid {first.lock.pid}" in msg and first.lock.host in msg
    finally:
        first.release()
    assert not (tmp_path / LOCK).exists()
    assert lock_at(tmp_path, "second").acquire() is None  # free again


def test_live_lock_on_another_host_is_respected(tmp_path):
    plant(tmp_path, ray_job_id="02000000")
    with pytest.raises(LockHeld, match="pid 1 on elsewhere, Ray job 02000000"):
        lock_at(tmp_path).acquire()


def test_stale_by_heartbeat_is_taken_over_and_explained(tmp_path):
    plant(tmp_path, heartbeat_at=time.time() - 1000)
    lock = lock_at(tmp_path)
    note = lock.acquire()
    assert "stale lock of run old" in note and "heartbeat is 1000 s old (TTL 60 s)" in note
    assert lock.read().run_id == "r1"
    lock.release()


def test_stale_by_dead_process_on_this_host(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = lock_at(tmp_path)
    plant(tmp_path, host=me.lock.host, pid=gone.pid)
    assert f"process {gone.pid} on this host is gone" in me.acquire()
    me.release()


def test_heartbeat_moves_while_held(tmp_path):
    lock = lock_at(tmp_path, ttl=0.2)
    lock.acquire()
    first = lock.read().heartbeat_at
    deadline = time.monotonic() + 60  # a bound, not an expectation: the beat comes every 0.05 s
    while lock.read().heartbeat_at == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock.read().heartbeat_at > first
    lock.release()


def test_sweep_removes_only_temporaries(tmp_path):
    fs = LocalFileSystem()
    keep = [tmp_path / "data" / "coco" / "00000.parquet", tmp_path / "run.json"]
    finals = ("data/coco/00000.parquet", "_commits/00001.json", "run.json")
    stray = [tmp_path / temporary_of(final) for final in finals]
    for path in keep + stray:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    removed = sweep_temporaries(fs, str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in stray)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stray)
