"""Named fault points for fault-injection tests: inactive unless an environment variable asks.

- `PF1M_FAULT_SCORE=TEXT` makes a scorer batch raise `InjectedFault` when any of its items
  contains TEXT, which exercises the batch -> per-item retry and the quarantine of the culprit.
- `PF1M_FAULT_TIMEOUT_REWRITE=TEXT[xTIMES]` makes a rewrite request whose uid contains TEXT
  time out on its first TIMES attempts (default: every attempt): the attempt hangs and its
  deadline is already past, so the per-request timeout fires for it and for nothing else,
  however busy the machine (a test sets `request_timeout_s` far above any real request). It
  exercises the engine restart, the retry and the quarantine without racing the clock.
- `PF1M_FAULT_STALL_SCORE=NAME:TEXT[xTIMES][,...]` stalls a call to scorer NAME holding an
  item that contains TEXT, on its attempts 1..TIMES (default: every attempt; the caller
  numbers them, so the count survives the actor's restart): the scorer's model thread hangs
  for good, as on a hung forward pass, and the call's deadline is already past, so its
  `scoring.call_timeout_s` fires and nothing else's does (tests set it far above any real
  call). Only inside a scorer actor, whose restart ends the hung thread.
- `PF1M_FAULT_KILL=STEP:SHARD` SIGKILLs the driver's process group (the driver, and the
  embedded Ray it started) when SHARD's commit reaches STEP: `before_commit` (nothing renamed
  yet), `inside_commit` (files renamed, no marker) or `after_commit` (marker written).
  SHARD `*` is whichever shard gets there first: `before_commit:*` kills before any commit.
- `PF1M_FAULT_PAUSE=STEP:SHARD` holds SHARD's task at that commit step until its process
  ends, so a test can stop a run that cannot have finished first (one shard stays in flight).
- `PF1M_FAULT_RAISE=recorded:N` makes the driver raise `InjectedFault` once it has recorded N
  shards: an unexpected error in the driver in the middle of a run.
"""

import os
import re
import signal
import threading
from collections import Counter

_attempts: Counter[tuple[str, str]] = Counter()  # (fault spec, key): a new spec counts anew
_TIMES = re.compile(r"x\d+$")


class InjectedFault(RuntimeError):
    """Raised only by a fault point that a test switched on."""


def check(point: str, items: list) -> None:
    needle = os.environ.get(f"PF1M_FAULT_{point.upper()}")
    if needle and any(needle in repr(item) for item in items):
        raise InjectedFault(f"fault point {point!r} triggered by {needle!r}")


def expired(point: str, key: str) -> bool:
    """Whether this attempt of `key` is one the fault point times out (`TEXT[xTIMES]`)."""
    spec = os.environ.get(f"PF1M_FAULT_{point.upper()}")
    if not spec:
        return False
    needle, times = _times(spec)
    if needle not in key:
        return False
    _attempts[spec, key] += 1
    return times is None or _attempts[spec, key] <= times


def _times(entry: str) -> tuple[str, int | None]:
    """`TEXTxN` -> (TEXT, N); `TEXT` -> (TEXT, None)."""
    if _TIMES.search(entry):
        needle, _, times = entry.rpartition("x")
        return needle, int(times)
    return entry, None


def stalls(point: str, name: str, items: list, attempt: int) -> bool:
    """Whether this attempt of a call to `name` is one the fault point stalls."""
    for entry in filter(None, os.environ.get(f"PF1M_FAULT_{point.upper()}", "").split(",")):
        target, _, rest = entry.partition(":")
        needle, times = _times(rest)
        hit = target == name and any(needle in repr(item) for item in items)
        if hit and (times is None or attempt <= times):
            return True
    return False


def hang() -> None:
    """Block this thread until the process ends."""
    threading.Event().wait()


def kill_point(step: str, shard: str, driver_pid: int) -> None:
    if os.environ.get("PF1M_FAULT_KILL") not in (f"{step}:{shard}", f"{step}:*"):
        return
    try:
        os.killpg(os.getpgid(driver_pid), signal.SIGKILL)
    finally:  # if this process was outside that group, it goes too
        os.kill(driver_pid, signal.SIGKILL)
        os._exit(137)


def commit_point(step: str, shard: str, driver_pid: int) -> None:
    """The fault points of a commit step: kill the driver, or hold the shard here."""
    kill_point(step, shard, driver_pid)
    if os.environ.get("PF1M_FAULT_PAUSE") in (f"{step}:{shard}", f"{step}:*"):
        hang()


def raise_point(point: str, count: int) -> None:
    if os.environ.get("PF1M_FAULT_RAISE") == f"{point}:{count}":
        raise InjectedFault(f"fault point {point!r} reached {count} times")
