"""The driver: plan shards, skip committed ones, start the rewriter replicas, keep several
shards in flight, record each outcome in run.json, and print progress.

It joins the cluster named by RAY_ADDRESS, else starts an embedded local Ray on loopback.
"""

import os
import posixpath
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline import metrics
from pipeline.commit import is_done, now_iso, read_marker, sweep_temporaries
from pipeline.lock import LockHeld, RunLockFile
from pipeline.manifest import diff_views, load_manifest, package_versions, save_manifest
from pipeline.plan import PlanError, ShardJob, input_fingerprint, plan_shards
from pipeline.progress import Progress, busy_fraction
from pipeline.resources import alive_nodes
from pipeline.resources import check as check_resources
from pipeline.revisions import legacy_view, pin_models
from pipeline.shard import RunContext, ShardOutcome, process_shard, warm_worker
from pipeline.storage import node_local_warning, url_to_fs
from schemas.config import ConfigError, RunConfig, config_hash
from schemas.run import ExitCode, RunManifest, ShardState
from schemas.stats import ShardStats


@dataclass
class RunResult:
    exit_code: ExitCode
    out: str
    summary: dict[str, Any] = field(default_factory=dict)


def absolutize(cfg: RunConfig) -> RunConfig:
    """Resolve local relative paths now, so workers and submitted jobs read the same files."""

    def fix(value: str) -> str:
        if "://" in value or os.path.isabs(value):
            return value
        return os.path.abspath(value)

    data = cfg.model_dump()
    data["output"] = fix(cfg.output)
    if isinstance(cfg.input, str):
        data["input"] = fix(cfg.input)
    else:
        data["input"] = [{**e.model_dump(), "pattern": fix(e.pattern)} for e in cfg.input]

    def fix_model(value: str) -> str:
        prefix = "local-dir:" if value.startswith("local-dir:") else ""
        path = os.path.expanduser(value.removeprefix(prefix))
        return prefix + os.path.abspath(path) if os.path.exists(path) else value

    data["rewriter"]["model"] = fix_model(cfg.rewriter.model)
    for adapter in data["rewriter"]["adapters"]:
        adapter["path"] = fix_model(adapter["path"])
    flamingo = data["rewriter"]["flamingo"]
    if flamingo is not None:
        flamingo["checkpoints"] = [fix_model(ref) for ref in flamingo["checkpoints"]]
        flamingo["vision"] = fix_model(flamingo["vision"])
        if flamingo["vision_pretrained"] is not None:
            flamingo["vision_pretrained"] = fix_model(flamingo["vision_pretrained"])
        if flamingo["lora"] is not None and flamingo["lora"]["path"] is not None:
            flamingo["lora"]["path"] = fix_model(flamingo["lora"]["path"])
    for name in cfg.filters.model_filters():
        data["filters"][name]["model"] = fix_model(getattr(cfg.filters, name).model)
    return RunConfig.model_validate(data)

    if cfg.rewriter.tokenizer is not None:
        data["rewriter"]["tokenizer"] = fix_model(cfg.rewriter.tokenizer)

# Errors a replica raises when its model files or its GPU cannot hold the configured model:
    clip = data["filters"].get("clip_paragraph")
    if clip is not None and clip["pretrained"] is not None:  # a weights file, or an open_clip tag
        clip["pretrained"] = fix_model(clip["pretrained"])
# the config must change, so the run exits 2 like a config refused before any work.
LOAD_REFUSALS = ("FlamingoLoadError", "BatchDoesNotFit")


def check_rewriter_files(cfg: RunConfig) -> None:
    """Before Ray starts: the flamingo backend's files, read for key names and shapes only, so
    a missing group, a wrong shape or a pickled object is refused before any work."""
    if cfg.rewriter.backend != "flamingo":
        return
    from models.flamingo import FlamingoLoadError, precheck

    try:
        precheck(cfg.rewriter.model, cfg.rewriter.flamingo)
    except FlamingoLoadError as exc:
        raise ConfigError(f"rewriter: {exc}") from None


def init_ray(cfg: RunConfig) -> bool:
    """Join RAY_ADDRESS if set, else start a local Ray bound to loopback. True if we started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return False
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)
    return True


def start_rewriters(cfg: RunConfig, run_id: str) -> list:
    from actors.rewriter import BACKENDS

    res = cfg.resources
    cls = ray.remote(BACKENDS[cfg.rewriter.backend])
    return [
        cls.options(
            name=f"pf1m-rewriter-{run_id}-{i}",
            num_gpus=res.gpus_per_replica,
            num_cpus=res.cpus_per_replica,
            max_concurrency=4096,
            max_restarts=res.actor_max_restarts,
            max_task_retries=res.actor_max_restarts,
            scheduling_strategy="SPREAD" if res.rewriter_placement == "spread" else "DEFAULT",
        ).remote(cfg.rewriter, cfg.seed, res.torch_threads, max(1, int(res.gpus_per_replica)))
        for i in range(res.rewriter_replicas)
    ]


def start_scorers(cfg: RunConfig, run_id: str) -> dict[str, list]:
    """One actor per scorer group replica; returns filter name -> the replicas holding it."""
    from actors.scorer import ScorerActor

    used = set(cfg.filters.model_filters())
    cls = ray.remote(ScorerActor)
    by_name: dict[str, list] = {}
    for group in cfg.scoring.groups:
        names = [n for n in group.scorers if n in used]
        if not names:
            continue
        replicas = [
            cls.options(
                name=f"pf1m-scorer-{run_id}-{'+'.join(names)}-{r}",
                num_gpus=group.num_gpus,
                num_cpus=group.num_cpus,
                max_concurrency=4096,
                max_restarts=cfg.resources.actor_max_restarts,
                max_task_retries=cfg.resources.actor_max_restarts,
            ).remote(cfg.filters, names, cfg.scoring, cfg.rewriter.deterministic)
            for r in range(group.replicas)
        ]
        for name in names:
            by_name[name] = replicas
    return by_name


def _actor_error(exc: BaseException) -> str:
    """`ACTOR NAME: last line of its creation error`, without Ray's traceback."""
    text = str(exc)
    name = next((w.split(":")[0] for w in text.split() if w.startswith("ray::pf1m")), "actor")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = next(
        (line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1]
    )
    return f"{name.removeprefix('ray::')} could not start: {cause[:500]}"


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    return text.strip().splitlines()[-1][:2000] if text.strip() else type(exc).__name__


def merge_stats(fs, root: str, shards: list[str]) -> dict[str, Any]:
    """Totals over the committed shards' stats files: counts, reasons, quarantine stages."""
    totals: dict[str, Any] = {"samples_in": 0, "kept": 0, "rejected": 0, "quarantined": 0}
    reasons: dict[str, int] = {}
    stages: dict[str, int] = {}
    tokens = 0
    for shard in shards:
        with fs.open(posixpath.join(root, "stats", f"{shard}.json"), "rb") as f:
            stats = ShardStats.model_validate_json(f.read())
        t = stats.totals
        for key in totals:
            totals[key] += getattr(t, key)
        for code, n in t.reasons.items():
            reasons[code] = reasons.get(code, 0) + n
        for stage, n in t.quarantine_stages.items():
            stages[stage] = stages.get(stage, 0) + n
        tokens += stats.tokens.output
    return {**totals, "reasons": reasons, "quarantine_stages": stages, "output_tokens": tokens}


class Driver:
    def __init__(
        self,
        cfg: RunConfig,
        max_shards: int | None = None,
        quiet: bool = False,
        rewriters: list | None = None,
        scorers: dict[str, list] | None = None,
    ) -> None:
        """`rewriters`, `scorers`: actors already started for this config (tests, benchmarks);
        else the driver starts them and stops them at the end."""
        self.cfg = absolutize(cfg)
        self.max_shards = max_shards
        self.quiet = quiet
        self.given_rewriters = rewriters
        self.given_scorers = scorers
        self.fs, self.root = url_to_fs(self.cfg.output)

    @staticmethod
    def _error(line: str) -> None:
        """Errors are printed even with --quiet."""
        print(f"error: {line}", file=sys.stderr, flush=True)

    def _say(self, line: str, live: bool = False) -> None:
        if self.quiet:
            return
        if live and sys.stderr.isatty():
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def _prepare(self) -> tuple[list[ShardJob], RunManifest]:
        jobs = plan_shards(self.cfg.inputs())
        if self.max_shards is not None:
            jobs = jobs[: self.max_shards]
        old = load_manifest(self.fs, self.root)
        # Every hub model resolves to a commit, the one run.json recorded if there is one.
        pins = pin_models(self.cfg, old.revisions if old else {})
        for note in pins.notes:
            self._say(note)
        check_rewriter_files(pins.config)  # the files the pinned commits hold
        hashed = self.cfg.hashed_view(pins.fingerprints)
        digest = config_hash(hashed)
        if old is not None and old.config_hash != digest:
            legacy, roles = legacy_view(old.hashed, hashed)
            if config_hash(legacy) != old.config_hash:
                diff = "\n".join(diff_views(old.hashed, hashed))
                raise ConfigError(
                    f"{self.cfg.output} holds a run with a different config; use a new output "
                    f"directory or the original config. Differences:\n{diff}"
                )
            hashed, digest = legacy, old.config_hash
            self._say(f"run.json names no commit for {', '.join(roles)} (an older pf1m); "
                      "continuing with the commits resolved now, recorded from now on")  # fmt: skip
        self.fs.makedirs(self.root, exist_ok=True)
        manifest = RunManifest(
            run_id=old.run_id if old else uuid.uuid4().hex[:12],
            config=self.cfg.model_dump(mode="json"),
            config_hash=digest,
            hashed=hashed,
            versions=package_versions(),
            started_at=old.started_at if old else now_iso(),
            updated_at=now_iso(),
            shards={j.shard: ShardState(url=j.url, source=j.source) for j in jobs},
            revisions=pins.revisions,
        )
        if old is not None:
            for name, state in old.shards.items():
                manifest.shards.setdefault(name, state)
        self.cfg = pins.config  # from here on actors and tasks load the pinned commits
        return jobs, manifest

    def run(self) -> RunResult:
        try:
            jobs, manifest = self._prepare()
        except (PlanError, ConfigError) as exc:
            self._error(str(exc))
            return RunResult(ExitCode.BAD_CONFIG, self.cfg.output)
        lock = RunLockFile(self.fs, self.root, manifest.run_id, self.cfg.resources.lock_ttl_s)
        try:
            note = lock.acquire()
        except LockHeld as exc:
            self._error(str(exc))
            return RunResult(ExitCode.BAD_CONFIG, self.cfg.output)
        started_ray = False
        try:
            if note:
                self._say(note)
            swept = sweep_temporaries(self.fs, self.root)
            if swept:
                self._say(f"removed {len(swept)} temporary files left by an interrupted run")
            started_ray = init_ray(self.cfg)
            lock.set_job(ray.get_runtime_context().get_job_id())
            return self._run(jobs, manifest)
        except ray.exceptions.ActorDiedError as exc:  # a model that would not load, typically
            self._error(_actor_error(exc))
            refused = any(name in str(exc) for name in LOAD_REFUSALS)
            return RunResult(ExitCode.BAD_CONFIG if refused else ExitCode.ERROR, self.cfg.output)
        finally:
            if started_ray:
                ray.shutdown()
            lock.release()

    def _split_done(self, jobs: list[ShardJob], manifest: RunManifest) -> tuple[list, list[str]]:
        todo, skipped = [], []
        for job in jobs:
            state = manifest.shards[job.shard]
            try:
                fingerprint = input_fingerprint(job.url)
            except OSError as exc:
                state.status, state.error = "failed", f"cannot read input {job.url}: {exc}"
                continue
            marker = read_marker(self.fs, self.root, job.shard)
            if is_done(marker, fingerprint, manifest.config_hash):
                state.status, state.error, state.samples_in = "done", None, marker.samples_in
                skipped.append(job.shard)
                continue
            if marker is not None and marker.input != fingerprint:
                self._say(f"input shard {job.shard} changed since its commit: redoing it")
            state.status = "pending"
            todo.append((job, fingerprint))
        return todo, skipped

    def _run(self, jobs: list[ShardJob], manifest: RunManifest) -> RunResult:
        todo, skipped = self._split_done(jobs, manifest)
        nodes = alive_nodes(ray.nodes())
        shared = node_local_warning(self.cfg.output, len(nodes))
        if shared:
            print(f"warning: {shared}", file=sys.stderr, flush=True)
        problems = check_resources(
            self.cfg,
            nodes,
            rewriters=self.given_rewriters is None,
            scorers=self.given_scorers is None,
        )
        if todo and problems:  # before any actor: Ray would leave it pending forever
            for problem in problems:
                self._error(problem)
            return RunResult(ExitCode.BAD_CONFIG, self.cfg.output)
        save_manifest(self.fs, self.root, manifest)
        if skipped:
            self._say(f"resuming: {len(skipped)} shards already committed, {len(todo)} to do")
        progress = Progress(total_shards=len(jobs), done_shards=len(skipped))
        started = time.monotonic()
        timing = {"startup_s": 0.0, "processing_s": 0.0}
        busy: tuple[float | None, float | None] = (None, None)
        if todo:
            rewriters = self.given_rewriters or start_rewriters(self.cfg, manifest.run_id)
            scorers = self.given_scorers
            if scorers is None:
                scorers = start_scorers(self.cfg, manifest.run_id)
            try:
                warm = ray.remote(warm_worker).options(num_cpus=self.cfg.resources.shard_task_cpus)
                ray.get([warm.remote() for _ in range(self.cfg.resources.shards_in_flight)])
                infos = ray.get([r.info.remote() for r in rewriters])
                info = infos[0]
                manifest.replicas = [
                    {"replica": i, "node_id": x.node_id, "gpu_ids": x.gpu_ids}
                    for i, x in enumerate(infos)
                ]
                for i, x in enumerate(infos):
                    gpus = ",".join(x.gpu_ids or []) or "none"
                    self._say(f"rewriter replica {i}: node {x.node_id}, GPUs {gpus}")
                ray.get([r.names.remote() for replicas in scorers.values() for r in replicas])
                timing["startup_s"] = time.monotonic() - started
                self._say(f"rewriters and scorers ready ({timing['startup_s']:.0f}s)")
                ctx = RunContext(
                    self.cfg,
                    manifest.run_id,
                    manifest.config_hash,
                    self.cfg.output,
                    info.image_token,
                    scorers,
                    driver_pid=os.getpid(),
                    images_without_markers=info.images_without_markers,
                )
                busy = self._schedule(todo, ctx, rewriters, manifest, progress)
            finally:
                own = [] if self.given_rewriters else list(rewriters)
                if self.given_scorers is None:
                    own += list({id(a): a for rs in scorers.values() for a in rs}.values())
                for actor in own:
                    ray.kill(actor)
            timing["processing_s"] = time.monotonic() - started - timing["startup_s"]
        return self._finish(manifest, progress, timing, busy, len(todo))

    def _schedule(self, todo, ctx, rewriters, manifest, progress) -> tuple:
        """Keep `shards_in_flight` shard tasks running until all are recorded; returns the
        rewriters' (busy fraction, occupancy) over this work."""
        res, interval = self.cfg.resources, self.cfg.progress_interval_s
        task = ray.remote(process_shard)
        options = dict(
            num_cpus=res.shard_task_cpus, max_retries=res.shard_retries, retry_exceptions=False
        )
        base = ray.get([r.busy.remote() for r in rewriters])
        queue = list(todo)
        running: dict[ray.ObjectRef, str] = {}
        started = time.monotonic()
        last_line = last_save = last_tick = started
        tick_base = base
        while queue or running:
            while queue and len(running) < res.shards_in_flight:
                job, fingerprint = queue.pop(0)
                name = f"pf1m-shard:{job.shard}"
                ref = task.options(name=name, **options).remote(ctx, job, fingerprint, rewriters)
                running[ref] = job.shard
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                self._record(ref, running.pop(ref), manifest, progress)
            now = time.monotonic()
            if ready or now - last_line >= interval:
                snapshot = ray.get([r.busy.remote() for r in rewriters])
                busy = busy_fraction(snapshot, base)
                self._say(progress.line(now - started, len(todo), busy[0]), live=True)
                rate = progress.samples / (now - started) if now > started else 0.0
                metrics.progress(progress.done_shards, rate, busy[0])
                for i, stats in enumerate(snapshot):
                    metrics.rewriter_running(str(i), stats.running)
                last_line = now
                if now - last_tick >= interval:  # for the report's "over time" plots
                    window = busy_fraction(snapshot, tick_base)[0]
                    manifest.timeline.append(
                        {"at": now_iso(), "t_s": round(now - started, 1),
                         "shards_done": progress.done_shards, "samples": progress.samples,
                         "busy": None if window is None else round(window, 3)}
                    )  # fmt: skip
                    tick_base, last_tick = snapshot, now
            if now - last_save >= interval:
                save_manifest(self.fs, self.root, manifest)
                last_save = now
        if sys.stderr.isatty() and not self.quiet:
            print(file=sys.stderr)
        return busy_fraction(ray.get([r.busy.remote() for r in rewriters]), base)

    def _record(self, ref, shard: str, manifest: RunManifest, progress: Progress) -> None:
        state = manifest.shards[shard]
        try:
            outcome: ShardOutcome = ray.get(ref)
        except Exception as exc:  # the shard failed after its retries; the run goes on
            state.status, state.error = "failed", _error_text(exc)
            progress.failed_shards += 1
            self._say(f"shard {shard} failed: {state.error}")
            return
        state.status, state.error = "done", None
        state.samples_in, state.kept = outcome.samples_in, outcome.kept
        progress.done_shards += 1
        progress.samples += outcome.samples_in

    def _finish(self, manifest, progress, timing, busy, processed) -> RunResult:
        done = [s for s, st in manifest.shards.items() if st.status == "done"]
        failed = {s: st.error for s, st in manifest.shards.items() if st.status == "failed"}
        summary = merge_stats(self.fs, self.root, done)
        wall = timing["processing_s"]
        summary.update(
            shards_total=len(manifest.shards),
            shards_done=len(done),
            shards_failed=failed,
            shards_processed_now=processed,
            samples_processed_now=progress.samples,
            startup_s=round(timing["startup_s"], 2),
            wall_s=round(wall, 2),
            samples_per_s=round(progress.samples / wall, 2) if wall > 0 else None,
            rewriter_busy_fraction=None if busy[0] is None else round(busy[0], 3),
            rewriter_occupancy=None if busy[1] is None else round(busy[1], 3),
            output=self.cfg.output,
        )
        manifest.summary = summary
        manifest.status = "succeeded" if not failed else "partial"
        manifest.updated_at = manifest.finished_at = now_iso()
        save_manifest(self.fs, self.root, manifest)
        code = ExitCode.OK if not failed else ExitCode.PARTIAL
        return RunResult(code, self.cfg.output, summary)
