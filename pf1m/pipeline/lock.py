"""One run per output directory: OUT/_lock.json names the holder (host, pid, run id, Ray job
id) and carries a heartbeat that a thread rewrites every ttl/4.

A second run is refused with the holder's name. A lock is stale, and taken over with a line
saying why, when its heartbeat is older than its TTL, or at once when its holder ran on this
host and its process is gone (a killed driver). On local disks the lock is created with
O_EXCL; object stores have no exclusive create, so there the lock is written and read back,
and two drivers starting within the same instant could both pass (README says so).
"""

import os
import posixpath
import socket
import threading
import time

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pf1m.pipeline.commit import now_iso, write_atomic
from pf1m.schemas.run import RunLock

LOCK = "_lock.json"


class LockHeld(RuntimeError):
    """Another live run holds OUT."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(lock: RunLock, now: float, host: str) -> str | None:
    """Why a lock no longer holds, or None while its holder may be alive."""
    age = now - lock.heartbeat_at
    if age > lock.ttl_s:
        return f"its last heartbeat is {age:.0f} s old (TTL {lock.ttl_s:.0f} s)"
    if lock.host == host and not _process_alive(lock.pid):
        return f"process {lock.pid} on this host is gone"
    return None


def describe(lock: RunLock) -> str:
    job = f", Ray job {lock.ray_job_id}" if lock.ray_job_id else ""
    return f"run {lock.run_id} (pid {lock.pid} on {lock.host}{job}, started {lock.started_at})"


class RunLockFile:
    def __init__(self, fs: AbstractFileSystem, root: str, run_id: str, ttl_s: float) -> None:
        self.fs, self.path = fs, posixpath.join(root, LOCK)
        self.lock = RunLock(
            host=socket.gethostname(),
            pid=os.getpid(),
            run_id=run_id,
            started_at=now_iso(),
            heartbeat_at=time.time(),
            ttl_s=ttl_s,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> RunLock | None:
        if not self.fs.exists(self.path):
            return None
        with self.fs.open(self.path, "rb") as f:
            return RunLock.model_validate_json(f.read())

    def _create(self) -> bool:
        """Write our lock if there is none; False if one appeared first."""
        payload = self.lock.model_dump_json(indent=1).encode()
        if isinstance(self.fs, LocalFileSystem):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            return True
        if self.fs.exists(self.path):
            return False
        write_atomic(self.fs, self.path, payload)
        held = self.read()
        return held is not None and (held.host, held.pid) == (self.lock.host, self.lock.pid)

    def acquire(self) -> str | None:
        """Take the lock; returns a line when a stale lock was taken over. Raises LockHeld."""
        note = None
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return note
            held = self.read()
            if held is None:  # released between our two looks
                continue
            why = stale_reason(held, time.time(), self.lock.host)
            if why is None:
                raise LockHeld(
                    f"{posixpath.dirname(self.path)} is in use by {describe(held)}; "
                    f"wait for it, stop it, or use another output directory"
                )
            note = f"taking over a stale lock of {describe(held)}: {why}"
            self.fs.rm(self.path)
        raise LockHeld(f"{self.path}: could not take the lock (another run keeps taking it)")

    def set_job(self, ray_job_id: str | None) -> None:
        self.lock.ray_job_id = ray_job_id
        self.beat()

    def beat(self) -> None:
        self.lock.heartbeat_at = time.time()
        write_atomic(self.fs, self.path, self.lock.model_dump_json(indent=1).encode())

    def _start_heartbeat(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.lock.ttl_s / 4):
                self.beat()

        self._thread = threading.Thread(target=loop, name="pf1m-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = self.read()
        if held is not None and (held.host, held.pid) == (self.lock.host, self.lock.pid):
            self.fs.rm(self.path)
