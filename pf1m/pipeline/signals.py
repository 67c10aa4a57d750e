"""Ctrl-C (SIGINT) and SIGTERM become an `Interrupted` exception in the driver's main thread,
so the run can stop its shard tasks, record `interrupted` with the shards committed so far,
release its lock and shut down the Ray it started, instead of dying with `running` recorded.

Once the run is ending (`defer()`), a further signal is noted and ignored: the cleanup is
short and bounded, and an interrupted cleanup is what leaves a lock and processes behind.
"""

import signal
import sys
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal."""

    def __init__(self, name: str = "SIGINT") -> None:
        super().__init__(name)
        self.name = name


def signal_name(exc: BaseException) -> str:
    return exc.name if isinstance(exc, Interrupted) else "SIGINT"


class Interrupts:
    """Context manager: while active (main thread only), SIGINT and SIGTERM raise
    `Interrupted`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.received: str | None = None
        self._deferred = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferred or self.received:
            print(f"{name}: the run is already stopping", file=sys.stderr, flush=True)
            return
        self.received = name
        raise Interrupted(name)

    def defer(self) -> None:
        """From now on a signal is noted, not raised: the run is recording its end."""
        self._deferred = True

    def install(self) -> None:
        """(Re)take both signals: `ray.init` puts its own SIGTERM handler in place (it logs
        and aborts), so the driver calls this again once Ray is up."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self.previous.setdefault(sig, previous)

    def __enter__(self) -> "Interrupts":
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():  # None: a handler set from C (Ray's)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
