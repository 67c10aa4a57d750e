"""One shard, end to end: read -> rewrite (on the replicas) -> score (on the scorer actors) ->
write -> commit.

Runs as a Ray task, so shards run wherever there is a CPU and their outputs go straight to
OUT. Batches of samples are sent to the rewriter replicas as soon as they are read, up to a
bound per shard; with several shards in flight the replicas always have queued work, and the
bound keeps memory flat however large a shard is. This module is the Ray bookkeeping only: what
a row becomes is `pipeline/row_flow.py`, where it is written `pipeline/shard_output.py`.
"""

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray

from pf1m.pipeline import faults, metrics
from pf1m.pipeline.plan import ShardJob
from pf1m.pipeline.reader import Bad, Sample, read_samples
from pf1m.pipeline.row_flow import Flowing, RowFlow, ScoreRequest
from pf1m.pipeline.shard_output import ShardOutput
from pf1m.pipeline.storage import open_url, url_to_fs
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.config import ConfigError, RunConfig
from pf1m.schemas.reasons import TIMEOUT
from pf1m.schemas.rewrite import RewriteResult
from pf1m.schemas.scores import ScoreResult


class ShardError(RuntimeError):
    """A shard that could not be processed as a whole (unreadable, truncated, not a tar)."""


def on_worker(shard: str, exc: Exception) -> ShardError:
    """A storage package or filter plugin the driver had but this worker node lacks: named,
    with the node."""
    return ShardError(f"{shard}: {exc} (missing on the worker node {socket.gethostname()})")


@dataclass
class ShardOutcome:
    shard: str
    samples_in: int
    kept: int
    rejected: int
    quarantined: int
    output_tokens: int
    wall_s: float


@dataclass
class RunContext:
    """What every shard task of a run shares."""

    cfg: RunConfig
    run_id: str
    config_hash: str
    out: str  # OUT as a URL or path
    image_token: str
    scorers: dict[str, list] = field(default_factory=dict)  # filter name -> replicas
    driver_pid: int = 0  # for the kill fault points (pipeline/faults.py)
    images_without_markers: str = "first"  # the rewriter's placement (pipeline/prompt.py)


@dataclass
class _ScoreCall:
    """One scorer call of a shard: its request, on which actor, and the phase's rows (the
    next phase waits for every call of this one)."""

    request: ScoreRequest
    replica: Any
    rows: list[Flowing]
    phase: int


class _ShardRun:
    """Mutable state of one shard while it runs; `run()` is the whole life cycle.

    Every Ray call in flight (a rewrite batch, a scoring batch) sits in `pending` with the
    callback that consumes its result; callbacks may start further calls (scoring phases)."""

    def __init__(self, ctx: RunContext, job: ShardJob, rewriters: list) -> None:
        self.ctx, self.job, self.rewriters = ctx, job, rewriters
        try:
            self.flow = RowFlow(ctx.cfg, ctx.run_id, ctx.image_token)  # imports any plugins
            self.fs, self.root = url_to_fs(ctx.out)
        except (ConfigError, ValueError) as exc:
            raise on_worker(job.shard, exc) from None
        self.pending: dict[ray.ObjectRef, Callable[[Any], None]] = {}
        self.rewriting: set[ray.ObjectRef] = set()  # the rewrite batches among `pending`
        self.batch: list[Sample] = []
        self.samples_in = 0
        self.calls = 0
        self.output: ShardOutput | None = None

    def _pick(self, replicas: list):
        self.calls += 1
        return replicas[self.calls % len(replicas)]

    def _submit(self) -> None:
        if not self.batch:
            return
        placement = self.ctx.images_without_markers
        requests = [self.flow.rewrite_request(self.job.shard, s, placement) for s in self.batch]
        ref = self._pick(self.rewriters).generate.remote(requests)
        self.pending[ref] = partial(self._on_rewritten, self.batch)
        self.rewriting.add(ref)
        self.batch = []

    def _drain(self, rewrite_limit: int, score_limit: int) -> None:
        """Consume results until at most `rewrite_limit` rewrite batches and `score_limit`
        scoring calls are out. Separate bounds: a scoring backlog must not stop this shard
        from feeding the rewriters, and both bound the rows held in memory."""
        while (
            len(self.rewriting) > rewrite_limit
            or len(self.pending) - len(self.rewriting) > score_limit
        ):
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            self.rewriting.discard(ready[0])
            callback = self.pending.pop(ready[0])
            callback(ray.get(ready[0]))

    def _on_rewritten(self, samples: list[Sample], results: list[RewriteResult]) -> None:
        to_score = []
        for sample, result in zip(samples, results, strict=True):
            flowing = self.flow.begin(self.job.shard, sample, result)
            if self.flow.needs_scores(flowing):
                to_score.append(flowing)
            else:
                self._finish(flowing)
        if to_score:
            self._score(to_score, 0)

    def _score(self, rows: list[Flowing], phase: int) -> None:
        """Send each scorer of this phase its rows; the next phase when all have answered."""
        if phase == len(self.flow.phases):
            for flowing in rows:
                self._finish(flowing)
            return
        calls = []
        for request in self.flow.requests(rows, phase):
            replica = self._pick(self.ctx.scorers[request.name])
            call = _ScoreCall(request, replica, rows, phase)
            calls.append((call, replica.score.remote(request.name, request.items)))
        if not calls:
            self._next_phase(rows, phase)
            return
        left = [len(calls)]
        for call, ref in calls:
            self.pending[ref] = partial(self._on_scored, call, left)

    def _on_scored(self, call: _ScoreCall, left: list[int], results: list[ScoreResult]) -> None:
        req = call.request
        if any(res.error_class == TIMEOUT for res in results):
            call.replica.restart_after_timeout.remote()  # its model thread may hang
            waiting = [len(req.items)]
            for target, item in zip(req.targets, req.items, strict=True):  # each alone, once
                ref = call.replica.score.remote(req.name, [item], 2)
                self.pending[ref] = partial(self._on_retried, call, target, left, waiting)
            return
        self.flow.take_scores(req.name, req.targets, results)
        self._call_done(call, left)

    def _on_retried(self, call, target, left, waiting, results: list[ScoreResult]) -> None:
        """One item of a timed-out call, retried alone on the restarted actor: a second
        timeout quarantines it (`score:NAME` / `timeout`), its call-mates go on."""
        [res] = results
        if res.error_class == TIMEOUT:
            call.replica.restart_after_timeout.remote()
            timeout = self.ctx.cfg.scoring.call_timeout_s
            text = f"no result within {timeout} s, twice (the scorer actor restarted between)"
            res = ScoreResult(error_class=TIMEOUT, error_text=text)
        self.flow.take_scores(call.request.name, [target], [res])
        waiting[0] -= 1
        if waiting[0] == 0:
            self._call_done(call, left)

    def _call_done(self, call: _ScoreCall, left: list[int]) -> None:
        left[0] -= 1
        if left[0] == 0:
            self._next_phase(call.rows, call.phase)

    def _next_phase(self, rows: list[Flowing], phase: int) -> None:
        self.flow.end_phase(rows, phase)
        self._score(rows, phase + 1)

    def _finish(self, flowing: Flowing) -> None:
        kind, row = self.flow.finish(flowing)
        self.output.add(kind, row)
        metrics.samples(
            "quarantined" if kind == "quarantine" else "kept" if row["kept"] else "rejected"
        )
        if kind != "quarantine":
            metrics.output_tokens(row["output_tokens"] or 0)

    def _quarantine(self, bad: Bad) -> None:
        self.output.add("quarantine", self.flow.quarantine_row(self.job.shard, bad))
        metrics.samples("quarantined")

    def _read_and_rewrite(self) -> None:
        res = self.ctx.cfg.resources
        limit = self.ctx.cfg.limit_per_shard
        try:
            stream = open_url(self.job.url)
        except ConfigError as exc:
            raise on_worker(self.job.shard, exc) from None
        except OSError as exc:
            raise ShardError(f"{self.job.shard}: cannot open {self.job.url}: {exc}") from exc
        with stream:
            for item in read_samples(stream, self.job.source, self.ctx.cfg.rewriter.max_images):
                if limit is not None and self.samples_in >= limit:
                    break
                self.samples_in += 1
                if isinstance(item, Bad):
                    self._quarantine(item)
                    continue
                self.batch.append(item)
                if len(self.batch) >= res.batch_size:
                    self._submit()
                    self._drain(
                        res.batches_in_flight_per_shard, res.score_calls_in_flight_per_shard
                    )
        self._submit()
        self._drain(0, 0)

    def run(self, fingerprint: InputFingerprint) -> ShardOutcome:
        started = time.monotonic()
        rg = self.ctx.cfg.writer.row_group_size
        self.output = ShardOutput(self.fs, self.root, self.job.shard, rg)
        try:
            self._read_and_rewrite()
        except Exception as exc:
            self.output.abort()
            if isinstance(exc, ShardError):
                raise
            raise ShardError(f"{self.job.shard}: {type(exc).__name__}: {exc}") from exc
        wall = time.monotonic() - started
        stats = self.output.commit(
            run_id=self.ctx.run_id,
            fingerprint=fingerprint,
            config_hash=self.ctx.config_hash,
            samples_in=self.samples_in,
            wall_s=wall,
            on_step=partial(
                faults.commit_point, shard=self.job.shard, driver_pid=self.ctx.driver_pid
            ),
        )
        t = stats.totals
        return ShardOutcome(
            self.job.shard,
            self.samples_in,
            t.kept,
            t.rejected,
            t.quarantined,
            stats.tokens.output,
            wall,
        )


def warm_worker() -> None:
    """A no-op task: running it makes a Ray worker import this module while the engines load,
    so the first shards start feeding the rewriters at once."""


def process_shard(
    ctx: RunContext, job: ShardJob, fingerprint: InputFingerprint, rewriters: list
) -> ShardOutcome:
    """Entry point of the Ray task for one shard."""
    return _ShardRun(ctx, job, rewriters).run(fingerprint)
