"""One shard, end to end: read -> rewrite (on the replicas) -> decide -> write -> commit.

Runs as a Ray task, so shards run wherever there is a CPU and their outputs go straight to
OUT. Batches of samples are sent to the rewriter replicas as soon as they are read, up to a
bound per shard; with several shards in flight the replicas always have queued work, and the
bound keeps memory flat however large a shard is.
"""

import posixpath
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import ray

from filters import decide_rules
from filters.rouge import rouge_l
from pipeline.commit import KINDS, clean_shard, commit_shard, relpath, tmp_path
from pipeline.plan import ShardJob
from pipeline.prompt import extract_answer, render_prompt, sample_seed
from pipeline.reader import Bad, Sample, read_samples
from pipeline.stats import StatsBuilder
from pipeline.writer import RowGroupWriter
from schemas.commit import InputFingerprint
from schemas.config import RunConfig
from schemas.reasons import Stage
from schemas.rewrite import RewriteRequest, RewriteResult
from schemas.rows import OUTPUT_SCHEMA, QUARANTINE_SCHEMA


class ShardError(RuntimeError):
    """A shard that could not be processed as a whole (unreadable, truncated, not a tar)."""


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


def _images(sample: Sample, embed: bool) -> list[dict[str, Any]]:
    return [
        {"bytes": payload if embed else None, "path": name}
        for payload, name in zip(sample.images, sample.image_names, strict=True)
    ]


def output_row(
    ctx: RunContext, shard: str, sample: Sample, result: RewriteResult
) -> dict[str, Any]:
    """The output row for a rewritten sample, decided by the task's rule filters."""
    answer = extract_answer(result.completion or "", ctx.cfg.rewriter.answer_marker)
    row: dict[str, Any] = {name: None for name in OUTPUT_SCHEMA.names}
    row.update(
        uid=f"{shard}/{sample.key}",
        shard=shard,
        key=sample.key,
        source=sample.source,
        task=sample.record.task,
        instruction=sample.record.instruction,
        original=sample.record.response,
        rewrite_raw=answer,
        output=answer,
        images=_images(sample, ctx.cfg.writer.embed_images),
        rouge_l=rouge_l(answer, sample.record.response),
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        output_tokens=result.output_tokens,
        run_id=ctx.run_id,
    )
    reasons = decide_rules(row, ctx.cfg.filters)
    row["kept"] = not reasons
    row["reject_reasons"] = [str(r) for r in reasons]
    return row


def quarantine_row(ctx: RunContext, shard: str, bad: Bad, rewrite_raw: str | None = None) -> dict:
    return {
        "uid": f"{shard}/{bad.key}",
        "shard": shard,
        "key": bad.key,
        "stage": str(bad.stage),
        "error_class": bad.error_class,
        "error_text": bad.error_text[:4000],
        "members": [{"name": n, "size": s} for n, s in bad.members],
        "rewrite_raw": rewrite_raw,
        "run_id": ctx.run_id,
    }


class _ShardRun:
    """Mutable state of one shard while it runs; `run()` is the whole life cycle."""

    def __init__(self, ctx: RunContext, job: ShardJob, rewriters: list) -> None:
        self.ctx, self.job, self.rewriters = ctx, job, rewriters
        self.fs, self.root = fsspec.core.url_to_fs(ctx.out)
        self.stats = StatsBuilder(job.shard)
        self.pending: dict[ray.ObjectRef, list[Sample]] = {}
        self.batch: list[Sample] = []
        self.samples_in = 0
        self.sent = 0
        self.writers: dict[str, RowGroupWriter] = {}

    def _open_writers(self) -> None:
        rg = self.ctx.cfg.writer.row_group_size
        for kind, schema in (
            ("data", OUTPUT_SCHEMA),
            ("rejected", OUTPUT_SCHEMA),
            ("quarantine", QUARANTINE_SCHEMA),
        ):
            final = posixpath.join(self.root, relpath(kind, self.job.shard))
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.writers[kind] = RowGroupWriter(self.fs, tmp_path(final), schema, rg)

    def _quarantine(
        self, bad: Bad, source: str | None = None, task: str | None = None, raw: str | None = None
    ) -> None:
        self.writers["quarantine"].add(quarantine_row(self.ctx, self.job.shard, bad, raw))
        self.stats.add_quarantine(str(bad.stage), source, task)

    def _submit(self) -> None:
        if not self.batch:
            return
        cfg = self.ctx.cfg
        requests = []
        for sample in self.batch:
            uid = f"{self.job.shard}/{sample.key}"
            prompt = render_prompt(
                cfg.rewriter.template,
                cfg.rewriter.system,
                sample.record.instruction,
                sample.record.response,
                len(sample.images),
                self.ctx.image_token,
            )
            requests.append(RewriteRequest(uid, prompt, sample.images, sample_seed(cfg.seed, uid)))
        replica = self.rewriters[self.sent % len(self.rewriters)]
        self.pending[replica.generate.remote(requests)] = self.batch
        self.sent += 1
        self.batch = []

    def _drain(self, limit: int) -> None:
        while len(self.pending) > limit:
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            samples = self.pending.pop(ready[0])
            for sample, result in zip(samples, ray.get(ready[0]), strict=True):
                self._handle(sample, result)

    def _handle(self, sample: Sample, result: RewriteResult) -> None:
        if result.error_class is not None:
            bad = Bad(
                sample.key,
                Stage.REWRITE,
                result.error_class,
                result.error_text or "",
                sample.members,
            )
            self._quarantine(bad, sample.source, sample.record.task, result.completion)
            return
        row = output_row(self.ctx, self.job.shard, sample, result)
        self.writers["data" if row["kept"] else "rejected"].add(row)
        self.stats.add_row(row)

    def _read_and_rewrite(self) -> None:
        res = self.ctx.cfg.resources
        limit = self.ctx.cfg.limit_per_shard
        try:
            stream = fsspec.open(self.job.url, "rb").open()
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
                    self._drain(res.batches_in_flight_per_shard)
        self._submit()
        self._drain(0)

    def run(self, fingerprint: InputFingerprint) -> ShardOutcome:
        started = time.monotonic()
        clean_shard(self.fs, self.root, self.job.shard)
        self._open_writers()
        try:
            self._read_and_rewrite()
        except Exception as exc:
            for writer in self.writers.values():
                writer.abort()
            clean_shard(self.fs, self.root, self.job.shard)
            if isinstance(exc, ShardError):
                raise
            raise ShardError(f"{self.job.shard}: {type(exc).__name__}: {exc}") from exc
        written: dict[str, tuple[str, int | None]] = {
            kind: (w.path, w.close()) for kind, w in self.writers.items()
        }
        wall = time.monotonic() - started
        stats = self.stats.build(wall)
        stats_final = posixpath.join(self.root, relpath("stats", self.job.shard))
        self.fs.makedirs(posixpath.dirname(stats_final), exist_ok=True)
        stats_tmp = tmp_path(stats_final)
        with self.fs.open(stats_tmp, "wb") as f:
            f.write(stats.model_dump_json(indent=1).encode())
        written["stats"] = (stats_tmp, None)
        assert set(written) == set(KINDS)
        commit_shard(
            self.fs,
            self.root,
            self.job.shard,
            written,
            run_id=self.ctx.run_id,
            fingerprint=fingerprint,
            config_hash=self.ctx.config_hash,
            samples_in=self.samples_in,
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
