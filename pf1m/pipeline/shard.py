"""One shard, end to end: read -> rewrite (on the replicas) -> decide -> write -> commit.

Runs as a Ray task, so shards run wherever there is a CPU and their outputs go straight to
OUT. Batches of samples are sent to the rewriter replicas as soon as they are read, up to a
bound per shard; with several shards in flight the replicas always have queued work, and the
bound keeps memory flat however large a shard is.
"""

import posixpath
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray

from pf1m.filters import (
    MODELS,
    PHASES,
    clip_paragraph,
    decide_models,
    decide_rules,
    model_filters_for,
)
from pf1m.filters.rouge import rouge_l
from pf1m.pipeline import faults, metrics
from pf1m.pipeline.commit import KINDS, clean_shard, commit_shard, relpath, tmp_path
from pf1m.pipeline.plan import ShardJob
from pf1m.pipeline.prompt import (
    chat_messages,
    extract_answer,
    render_prompt,
    sample_seed,
    split_reasoning,
)
from pf1m.pipeline.reader import Bad, Sample, read_samples
from pf1m.pipeline.stats import StatsBuilder
from pf1m.pipeline.storage import open_url, url_to_fs
from pf1m.pipeline.writer import RowGroupWriter
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.config import ConfigError, Filters, RunConfig
from pf1m.schemas.reasons import TIMEOUT, Stage
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult
from pf1m.schemas.rows import OUTPUT_SCHEMA, QUARANTINE_SCHEMA
from pf1m.schemas.scores import ScoreResult


class ShardError(RuntimeError):
    """A shard that could not be processed as a whole (unreadable, truncated, not a tar)."""


def on_worker(shard: str, exc: ConfigError) -> ShardError:
    """A storage package the driver had but this worker node lacks: named, with the node."""
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
    driver_pid: int = 0  # for the kill fault points (pf1m/pipeline/faults.py)
    images_without_markers: str = "first"  # the rewriter's placement (pf1m/pipeline/prompt.py)


def output_row(
    ctx: RunContext, shard: str, sample: Sample, result: RewriteResult
) -> dict[str, Any]:
    """The row for a rewritten sample, with the rule filters' reasons; scores still null. A
    thinking block goes to `reasoning`; the answer is read from what follows it."""
    prompt = ctx.cfg.rewriter.prompt
    completion = result.completion or ""
    reasoning, rest = split_reasoning(completion, prompt.think_start, prompt.think_end)
    answer = extract_answer(rest, prompt.answer_marker)
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
        reasoning=reasoning,
        output=answer,
        images=[
            {"bytes": b, "path": n} for b, n in zip(sample.images, sample.image_names, strict=True)
        ],
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        output_tokens=result.output_tokens,
        run_id=ctx.run_id,
    )
    row["reject_reasons"] = [str(r) for r in decide_rules(row, ctx.cfg.filters)]
    return row


def rewrite_request(
    ctx: RunContext, uid: str, sample: Sample, seed: int, adapter: str | None = None
) -> RewriteRequest:
    """A raw prompt is rendered here; a chat prompt travels as messages and is rendered by the
    replica with the model's chat template (README, design notes)."""
    p = ctx.cfg.rewriter.prompt
    rec = sample.record
    if p.style == "chat":
        n = len(sample.images)
        messages = chat_messages(p.system, p.template, rec.instruction, rec.response, n)
        return RewriteRequest(uid, "", sample.images, seed, adapter, messages=messages)
    prompt = render_prompt(
        p.template,
        p.system or "",
        rec.instruction,
        rec.response,
        len(sample.images),
        ctx.image_token,
        ctx.images_without_markers,
    )
    return RewriteRequest(uid, prompt, sample.images, seed, adapter)


def finalize_row(row: dict[str, Any], filters: Filters, embed_images: bool) -> dict[str, Any]:
    """Rouge-L on the final output, the model filters' decisions, kept or not."""
    row["rouge_l"] = rouge_l(row["output"] or "", row["original"] or "")
    reasons = list(row["reject_reasons"]) + [str(r) for r in decide_models(row, filters)]
    row["reject_reasons"] = list(dict.fromkeys(reasons))
    row["kept"] = not row["reject_reasons"]
    if not embed_images:
        row["images"] = [{"bytes": None, "path": img["path"]} for img in row["images"]]
    return row


def quarantine_row(
    ctx: RunContext,
    shard: str,
    bad: Bad,
    source: str | None = None,
    task: str | None = None,
    rewrite_raw: str | None = None,
) -> dict:
    """Source and task are known once the sample's JSON was read (rewrite and score stages)."""
    return {
        "uid": f"{shard}/{bad.key}",
        "shard": shard,
        "source": source,
        "task": task,
        "key": bad.key,
        "stage": str(bad.stage),
        "error_class": bad.error_class,
        "error_text": bad.error_text[:4000],
        "members": [{"name": n, "size": s} for n, s in bad.members],
        "rewrite_raw": rewrite_raw,
        "run_id": ctx.run_id,
    }


@dataclass
class _ScoreCall:
    """One scorer call of a shard: which rows its items came from, on which actor."""

    name: str
    targets: list[dict]  # the rows scored, in item order
    items: list
    replica: Any
    rows: list[dict]  # every row of this scoring phase (the next phase waits for all calls)
    phase: int


class _ShardRun:
    """Mutable state of one shard while it runs; `run()` is the whole life cycle.

    Every Ray call in flight (a rewrite batch, a scoring batch) sits in `pending` with the
    callback that consumes its result; callbacks may start further calls (scoring phases)."""

    def __init__(self, ctx: RunContext, job: ShardJob, rewriters: list) -> None:
        self.ctx, self.job, self.rewriters = ctx, job, rewriters
        self.filters = ctx.cfg.filters
        try:
            self.fs, self.root = url_to_fs(ctx.out)
        except ConfigError as exc:
            raise on_worker(job.shard, exc) from None
        self.stats = StatsBuilder(job.shard)
        self.pending: dict[ray.ObjectRef, Callable[[Any], None]] = {}
        self.rewriting: set[ray.ObjectRef] = set()  # the rewrite batches among `pending`
        self.batch: list[Sample] = []
        self.samples_in = 0
        self.calls = 0
        self.writers: dict[str, RowGroupWriter] = {}
        self.members: dict[str, list[tuple[str, int]]] = {}

    def _open_writers(self) -> None:
        rg = self.ctx.cfg.writer.row_group_size
        kinds = (
            ("data", OUTPUT_SCHEMA),
            ("rejected", OUTPUT_SCHEMA),
            ("quarantine", QUARANTINE_SCHEMA),
        )
        for kind, schema in kinds:
            final = posixpath.join(self.root, relpath(kind, self.job.shard))
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.writers[kind] = RowGroupWriter(self.fs, tmp_path(final), schema, rg)

    def _quarantine(self, bad: Bad, source=None, task=None, raw: str | None = None) -> None:
        row = quarantine_row(self.ctx, self.job.shard, bad, source, task, raw)
        self.writers["quarantine"].add(row)
        self.stats.add_quarantine(str(bad.stage), source, task)
        metrics.samples("quarantined")

    def _pick(self, replicas: list):
        self.calls += 1
        return replicas[self.calls % len(replicas)]

    def _submit(self) -> None:
        if not self.batch:
            return
        cfg = self.ctx.cfg
        requests = []
        for sample in self.batch:
            uid = f"{self.job.shard}/{sample.key}"
            seed = sample_seed(cfg.seed, uid)
            adapter = cfg.rewriter.adapter_for(sample.source, sample.record.task)
            requests.append(rewrite_request(self.ctx, uid, sample, seed, adapter))
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
            if result.error_class is not None:
                bad = Bad(
                    sample.key,
                    Stage.REWRITE,
                    result.error_class,
                    result.error_text or "",
                    sample.members,
                )
                self._quarantine(bad, sample.source, sample.record.task, result.completion)
                continue
            row = output_row(self.ctx, self.job.shard, sample, result)
            self.members[row["uid"]] = sample.members
            wanted = model_filters_for(row["task"], self.filters)
            if wanted and (self.filters.scoring == "full" or not row["reject_reasons"]):
                to_score.append(row)
            else:
                self._finish(row)
        if to_score:
            self._score(to_score, 0)

    def _score(self, rows: list[dict], phase: int) -> None:
        """Send each scorer of this phase the rows whose task uses it; next phase when all
        have answered."""
        if phase == len(PHASES):
            for row in rows:
                self._finish(row)
            return
        calls = []
        for name in PHASES[phase]:
            targets, items = [], []
            for row in rows:
                if "_error" in row or name not in model_filters_for(row["task"], self.filters):
                    continue
                item = MODELS[name].request(row, self.filters)
                if isinstance(item, str):  # known not to be handled: a reason, not a score
                    row["reject_reasons"].append(item)
                    continue
                targets.append(row)
                items.append(item)
            if targets:
                replica = self._pick(self.ctx.scorers[name])
                call = _ScoreCall(name, targets, items, replica, rows, phase)
                calls.append((call, replica.score.remote(name, items)))
        if not calls:
            self._next_phase(rows, phase)
            return
        left = [len(calls)]
        for call, ref in calls:
            self.pending[ref] = partial(self._on_scored, call, left)

    def _on_scored(self, call: _ScoreCall, left: list[int], results: list[ScoreResult]) -> None:
        if any(res.error_class == TIMEOUT for res in results):
            call.replica.restart_after_timeout.remote()  # its model thread may hang
            waiting = [len(call.items)]
            for row, item in zip(call.targets, call.items, strict=True):  # each alone, once
                ref = call.replica.score.remote(call.name, [item], 2)
                self.pending[ref] = partial(self._on_retried, call, row, left, waiting)
            return
        self._record_scores(call.name, call.targets, results)
        self._call_done(call, left)

    def _on_retried(self, call, row, left, waiting, results: list[ScoreResult]) -> None:
        """One item of a timed-out call, retried alone on the restarted actor: a second
        timeout quarantines it (`score:NAME` / `timeout`), its call-mates go on."""
        [res] = results
        if res.error_class == TIMEOUT:
            call.replica.restart_after_timeout.remote()
            timeout = self.ctx.cfg.scoring.call_timeout_s
            text = f"no result within {timeout} s, twice (the scorer actor restarted between)"
            res = ScoreResult(error_class=TIMEOUT, error_text=text)
        self._record_scores(call.name, [row], [res])
        waiting[0] -= 1
        if waiting[0] == 0:
            self._call_done(call, left)

    def _call_done(self, call: _ScoreCall, left: list[int]) -> None:
        left[0] -= 1
        if left[0] == 0:
            self._next_phase(call.rows, call.phase)

    def _record_scores(self, name: str, targets: list[dict], results: list[ScoreResult]) -> None:
        for row, res in zip(targets, results, strict=True):
            if res.error_class is not None:
                row["_error"] = (name, res)
            elif res.reason is not None:
                row["reject_reasons"].append(res.reason)
            else:
                MODELS[name].record(row, res.value)

    def _next_phase(self, rows: list[dict], phase: int) -> None:
        if PHASES[phase] and clip_paragraph.NAME in PHASES[phase]:
            for row in rows:
                clip_paragraph.apply(row, self.filters)  # `output` without low-score paragraphs
        self._score(rows, phase + 1)

    def _finish(self, row: dict[str, Any]) -> None:
        members = self.members.pop(row["uid"], [])
        if "_error" in row:
            name, res = row.pop("_error")
            bad = Bad(row["key"], Stage.score(name), res.error_class, res.error_text or "", members)
            self._quarantine(bad, row["source"], row["task"], row["rewrite_raw"])
            return
        finalize_row(row, self.filters, self.ctx.cfg.writer.embed_images)
        self.writers["data" if row["kept"] else "rejected"].add(row)
        self.stats.add_row(row)
        metrics.samples("kept" if row["kept"] else "rejected")
        metrics.output_tokens(row["output_tokens"] or 0)

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
