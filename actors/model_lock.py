"""One `generate` at a time on a replica's model, across restarts of its batcher.

A request timeout restarts the batcher, but the call its old worker thread was running cannot
be interrupted and goes on. Without this lock the new thread would run beside it on the same
model and the same global random generator, so a deterministic replica would give different
rows. The new thread waits for the old call instead; if that call never ends (a hung model),
the wait times out and the replica's process ends so that Ray restarts it.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from actors.replica import exit_for_restart


class ModelHung(RuntimeError):
    """The model stayed busy with an abandoned call for longer than a request may take."""


class ModelLock:
    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=-1 if self.timeout_s is None else self.timeout_s):
            exc = ModelHung(f"the model stayed busy over {self.timeout_s} s with an abandoned call")
            exit_for_restart(exc)  # inside a Ray actor: Ray restarts the replica
            raise exc
        try:
            yield
        finally:
            self._lock.release()
