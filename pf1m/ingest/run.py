"""Run one ingest: check everything before any work, then cut the reader's stream into chunks of
`shard_size` items and write them as shards, in this process (`--workers 1`) or as Ray tasks
(`--workers N`, at most N in flight), skipping shards a previous run committed.

Chunk k is always the same items whatever the worker count, and a shard's bytes depend only on
its chunk, so 1 and N workers write identical shards. Memory is bounded by the reader's index
plus at most N + 1 chunks. With N > 1 it joins the Ray already initialised in this process,
else RAY_ADDRESS's cluster, else starts a local Ray bound to 127.0.0.1 (and stops it after).
"""

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pf1m.ingest.formats import DEFAULT_SOURCE, READERS, SourceError
from pf1m.ingest.manifest import fingerprints, hashed_view, merge, open_manifest, save, source_files
from pf1m.ingest.phrasing import load_phrasing
from pf1m.ingest.shards import Chunk, ShardContext, committed, write_shard
from pf1m.pipeline.commit import now_iso, sweep_temporaries
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError
from pf1m.schemas.ingest import IngestManifest, IngestRequest, ShardMarker, Skip, SourceRecord
from pf1m.schemas.run import ExitCode

PROGRESS_INTERVAL_S = 10.0


@dataclass
class IngestOutcome:
    manifest: IngestManifest
    exit_code: ExitCode
    shards_done_before: int  # committed by an earlier run, skipped now
    shards_written: int
    elapsed_s: float


def source_name(req: IngestRequest) -> str:
    if req.source:
        return req.source
    if req.format in DEFAULT_SOURCE:
        return DEFAULT_SOURCE[req.format]
    return Path(req.images if req.format == "image-folder" else req.src[0]).stem


def chunks(
    items: Iterator[SourceRecord | Skip], size: int, max_records: int | None
) -> Iterator[Chunk]:
    """`size` consecutive items per chunk (a shard holds fewer samples where some are skipped);
    stop after `max_records` source records."""
    current: list[SourceRecord | Skip] = []
    index = records = 0
    for item in items:
        if isinstance(item, SourceRecord):
            if max_records is not None and records >= max_records:
                break
            records += 1
        current.append(item)
        if len(current) == size:
            yield Chunk(index, current)
            index, current = index + 1, []
    if current:
        yield Chunk(index, current)


def _check_paths(req: IngestRequest) -> None:
    for path in source_files(req):
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such file")
    if not Path(req.images).is_dir():
        raise ConfigError(f"--images {req.images}: not a directory")


Result = tuple[str, ShardMarker | None, str | None]  # (shard, marker, error)


def _in_process(todo: Iterator[Chunk], ctx: ShardContext) -> Iterator[Result]:
    for chunk in todo:
        try:
            yield chunk.name, write_shard(chunk, ctx), None
        except Exception as exc:  # one shard's failure is recorded; the others go on
            yield chunk.name, None, f"{type(exc).__name__}: {exc}"


def _on_ray(
    todo: Iterator[Chunk], ctx: ShardContext, workers: int, cpus: float
) -> Iterator[Result]:
    import ray

    from pf1m.pipeline.local_ray import ensure_ray

    started = ensure_ray(log_to_driver=True)
    task = ray.remote(num_cpus=cpus)(write_shard)
    pending: dict = {}

    def collect(ref) -> Result:
        name = pending.pop(ref)
        try:
            return name, ray.get(ref), None
        except Exception as exc:
            return name, None, f"{type(exc).__name__}: {exc}"

    broken: SourceError | None = None
    try:
        try:
            for chunk in todo:
                while len(pending) >= workers:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    yield collect(ready[0])
                ref = task.options(name=f"pf1m-ingest:{chunk.name}").remote(chunk, ctx)
                pending[ref] = chunk.name
        except SourceError as exc:  # the source broke mid-stream: shards in flight still commit
            broken = exc
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            yield collect(ready[0])
        if broken is not None:
            raise broken
    finally:
        if started:
            ray.shutdown()


def run_ingest(req: IngestRequest, log: Callable[[str], None] | None = None) -> IngestOutcome:
    """The whole command. Raises ConfigError before any work (exit 2); returns the outcome."""
    started = time.monotonic()
    phrasing, phrasing_sha = load_phrasing(req.config)
    _check_paths(req)
    try:
        items = READERS[req.format](req, phrasing)
    except SourceError as exc:
        raise ConfigError(str(exc)) from None
    fs, root = url_to_fs(req.out)
    source = source_name(req)
    manifest = open_manifest(
        fs, root, req, source, hashed_view(req, phrasing_sha), fingerprints(req)
    )
    fs.makedirs(root, exist_ok=True)
    sweep_temporaries(fs, root)
    save(fs, root, manifest)
    ctx = ShardContext(
        out=req.out,
        images=str(Path(req.images).resolve()),
        source=source,
        region=phrasing.region_caption,
        reencode=req.reencode,
        examples_per_reason=req.examples_per_reason,
        driver_pid=os.getpid(),
    )
    markers: dict[str, ShardMarker] = {}
    failed: dict[str, str] = {}
    before = 0

    def todo() -> Iterator[Chunk]:
        nonlocal before
        for chunk in chunks(items, req.shard_size, req.max_samples):
            done = committed(fs, root, chunk.name)
            if done is not None:
                markers[chunk.name] = done
                before += 1
            else:
                yield chunk

    run = (
        _in_process(todo(), ctx)
        if req.workers == 1
        else _on_ray(todo(), ctx, req.workers, req.task_cpus)
    )
    last = time.monotonic()
    try:
        for name, marker, error in run:
            if marker is not None:
                markers[name] = marker
            else:
                failed[name] = str(error)
            if log is not None and time.monotonic() - last >= PROGRESS_INTERVAL_S:
                last = time.monotonic()
                written = sum(m.samples for m in markers.values())
                log(f"[ingest] {len(markers)} shards committed, {written} samples written")
    except SourceError as exc:
        manifest.error = str(exc)
    merge(manifest, list(markers.values()), req.examples_per_reason)
    manifest.failed = dict(sorted(failed.items()))
    if manifest.error:
        manifest.status, code = "failed", ExitCode.ERROR
    elif failed:
        manifest.status, code = "partial", ExitCode.PARTIAL
    else:
        manifest.status, code = "complete", ExitCode.OK
    manifest.finished_at = now_iso()
    save(fs, root, manifest)
    return IngestOutcome(manifest, code, before, len(markers) - before, time.monotonic() - started)


def format_summary(outcome: IngestOutcome, out: str) -> str:
    m = outcome.manifest
    skipped = sum(m.skipped.values())
    lines = [
        "== pf1m ingest summary ==",
        f"format         {m.format} (source {m.source})",
        f"records read   {m.records}",
        f"written        {m.samples_written} samples in "
        f"{sum(1 for s in m.shards.values() if s.file)} shards "
        f"({outcome.shards_written} written now, {outcome.shards_done_before} done before)",
        f"skipped        {skipped}",
        *(f"  {reason:<20} {n}" for reason, n in m.skipped.items()),
    ]
    if m.failed:
        lines.append(f"failed shards  {len(m.failed)} (run the same command again to retry)")
        lines += [f"  {name}: {error}" for name, error in m.failed.items()]
    if m.error:
        lines.append(f"error          {m.error}")
    lines += [
        f"time           {outcome.elapsed_s:.1f}s",
        f"output         {out}  (shards *.tar, {out}/ingest.json)",
        f"exit code      {int(outcome.exit_code)}"
        + (
            "  (skipped samples are data hygiene, not a failure)"
            if skipped and not outcome.exit_code
            else ""
        ),
    ]
    if m.samples_written == 0 and m.records:
        lines.append("WARNING: no sample was written; see the skip reasons (is --images right?)")
    return "\n".join(lines)


def log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
