"""A scorer actor: one or several scorer models (as configured; each filter names its model
class in pf1m/models/scorers), each loaded once, each behind a micro-batcher so items from
every shard in flight share batches.

A call without a result within `scoring.call_timeout_s` returns error class `timeout` for
each of its items. A hung model thread cannot be stopped from inside the process, so the
caller then asks `restart_after_timeout`: the process ends, Ray restarts the actor (its
`max_restarts`) and retries the calls that were still inside it; the caller retries its own.
"""

import asyncio
import logging
import os

from pf1m.actors.batcher import MicroBatcher
from pf1m.filters import registry
from pf1m.pipeline import faults
from pf1m.schemas.config import Filters, Scoring
from pf1m.schemas.reasons import TIMEOUT
from pf1m.schemas.scores import ScoreResult

logger = logging.getLogger(__name__)


class ScorerActor:
    def __init__(
        self, filters: Filters, names: list[str], scoring: Scoring, deterministic: bool = False
    ) -> None:
        """`deterministic`: one item per forward pass, so a score never depends on which items
        shared its batch (float results change with batch shapes)."""
        import torch

        if scoring.torch_threads:
            torch.set_num_threads(scoring.torch_threads)
        # Ray exposes only the GPUs assigned to this actor.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        chunk = (lambda n: 1) if deterministic else scoring.chunk
        known = registry.load(filters.plugins)
        self.scorers = {
            n: known[n].build_scorer(known[n].settings(filters), self.device, chunk(n))
            for n in names
        }
        self.batchers = {
            n: MicroBatcher(self._scoring_fn(s), scoring.batch_size[n], scoring.max_wait_ms / 1000)
            for n, s in self.scorers.items()
        }
        self.call_timeout_s = scoring.call_timeout_s
        self.timed_out = False  # a call timed out in this process: a model thread may hang

    @staticmethod
    def _scoring_fn(scorer):
        def score(items: list) -> list:
            faults.check("score", items)
            return scorer.score(items)

        return score

    def names(self) -> list[str]:
        return list(self.scorers)

    async def _one(self, name: str, item) -> ScoreResult:
        try:
            reason = self.scorers[name].unsupported(item)
            if reason is not None:
                return ScoreResult(reason=str(reason))
            return ScoreResult(value=await self.batchers[name].submit(item))
        except Exception as exc:  # this item alone
            return ScoreResult(error_class=type(exc).__name__, error_text=str(exc)[:2000])

    async def score(self, name: str, items: list, attempt: int = 1) -> list[ScoreResult]:
        """One result per item; `attempt` numbers the caller's tries of this call."""
        deadline = self.call_timeout_s
        if faults.stalls("stall_score", name, items, attempt):
            self.batchers[name].executor.submit(faults.hang)  # the model thread hangs
            deadline = 0.0
        calls = asyncio.gather(*(self._one(name, item) for item in items))
        try:
            return list(await asyncio.wait_for(calls, deadline))
        except TimeoutError:
            self.timed_out = True
            text = f"no result within {self.call_timeout_s} s (attempt {attempt})"
            return [ScoreResult(error_class=TIMEOUT, error_text=text) for _ in items]

    def restart_after_timeout(self) -> bool:
        """End this process when one of its calls timed out, so that Ray restarts the actor
        and retries the calls still inside it. False when this process never timed out (a
        request for an actor that another caller's request already restarted)."""
        import ray

        if not self.timed_out or not ray.is_initialized():
            return False
        if ray.get_runtime_context().get_actor_id():
            logger.error("a scorer call timed out; exiting so that Ray restarts this actor")
            os._exit(1)
        return False

    def batch_stats(self) -> dict[str, tuple[int, int]]:
        """(batches, items) per scorer: how well cross-shard batching fills batches."""
        return {n: (b.batches, b.items) for n, b in self.batchers.items()}
