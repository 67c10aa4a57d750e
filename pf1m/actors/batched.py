"""What the backends that run batched `generate` in a worker thread share (`transformers`,
`flamingo`): requests from every call gathered by a micro-batcher, and one `generate` at a time
on the model, across restarts of the batcher.

A request timeout restarts the batcher, but the call its old worker thread was running cannot
be interrupted and goes on. Without the model lock the new thread would run beside it on the
same model and the same global random generator, so a deterministic replica would give
different rows. The new thread waits for the old call instead; if that call never ends (a hung
model), the wait times out and the replica's process ends so that Ray restarts it.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pf1m.actors.batcher import MicroBatcher
from pf1m.actors.replica import Replica, exit_for_restart
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult


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


class BatchedReplica(Replica):
    """A replica whose subclass implements `_generate_batch` (one model call on a batch)."""

    def _start_batching(self, max_wait_s: float) -> None:
        self.model_lock = ModelLock(self.cfg.request_timeout_s)
        self.batcher = MicroBatcher(self._locked_batch, self.capacity, max_wait_s)

    def _locked_batch(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        with self.model_lock.held():
            return self._generate_batch(reqs)

    def _generate_batch(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        raise NotImplementedError

    async def _restart_engine(self) -> None:
        """A fresh batcher and worker thread; a call still running in the old one finishes
        before the new one uses the model (the model lock)."""
        self.batcher.close()
        self.batcher = MicroBatcher(self._locked_batch, self.capacity, self.batcher.max_wait_s)
