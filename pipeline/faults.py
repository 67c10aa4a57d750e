"""Named fault points for fault-injection tests: inactive unless an environment variable asks.

- `PF1M_FAULT_SCORE=TEXT` makes a scorer batch raise `InjectedFault` when any of its items
  contains TEXT, which exercises the batch -> per-item retry and the quarantine of the culprit.
- `PF1M_FAULT_SLOW_REWRITE=TEXT=SECONDS[xTIMES]` delays a rewrite request whose uid contains
  TEXT by SECONDS inside the replica, on its first TIMES attempts (default: every attempt),
  which exercises the per-request timeout, the engine restart and the retry.
- `PF1M_FAULT_KILL=STEP:SHARD` SIGKILLs the driver's process group (the driver, and the
  embedded Ray it started) when SHARD's commit reaches STEP: `before_commit` (nothing renamed
  yet), `inside_commit` (files renamed, no marker) or `after_commit` (marker written).
  SHARD `*` is whichever shard gets there first: `before_commit:*` kills before any commit.
"""

import os
import signal
from collections import Counter

_attempts: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """Raised only by a fault point that a test switched on."""


def check(point: str, items: list) -> None:
    needle = os.environ.get(f"PF1M_FAULT_{point.upper()}")
    if needle and any(needle in repr(item) for item in items):
        raise InjectedFault(f"fault point {point!r} triggered by {needle!r}")


def delay(point: str, key: str) -> float:
    """Seconds to stall `key` at this fault point (0 when the point is off or spent)."""
    spec = os.environ.get(f"PF1M_FAULT_{point.upper()}")
    if not spec:
        return 0.0
    needle, _, rest = spec.rpartition("=")
    seconds, _, times = rest.partition("x")
    if needle not in key:
        return 0.0
    _attempts[key] += 1
    if times and _attempts[key] > int(times):
        return 0.0
    return float(seconds)


def kill_point(step: str, shard: str, driver_pid: int) -> None:
    if os.environ.get("PF1M_FAULT_KILL") not in (f"{step}:{shard}", f"{step}:*"):
        return
    try:
        os.killpg(os.getpgid(driver_pid), signal.SIGKILL)
    finally:  # if this process was outside that group, it goes too
        os.kill(driver_pid, signal.SIGKILL)
        os._exit(137)
