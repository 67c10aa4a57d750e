"""A scorer actor: one or several scorer models (as configured), each loaded once, each behind
a micro-batcher so items from every shard in flight share batches."""

from actors.batcher import MicroBatcher
from filters import MODELS
from pipeline import faults
from schemas.config import Filters, Scoring
from schemas.scores import ScoreResult


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
        self.scorers = {
            n: MODELS[n].Scorer(getattr(filters, n), self.device, chunk(n)) for n in names
        }
        self.batchers = {
            n: MicroBatcher(self._scoring_fn(s), scoring.batch_size[n], scoring.max_wait_ms / 1000)
            for n, s in self.scorers.items()
        }

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

    async def score(self, name: str, items: list) -> list[ScoreResult]:
        import asyncio

        return list(await asyncio.gather(*(self._one(name, item) for item in items)))

    def batch_stats(self) -> dict[str, tuple[int, int]]:
        """(batches, items) per scorer: how well cross-shard batching fills batches."""
        return {n: (b.batches, b.items) for n, b in self.batchers.items()}
