"""The driver: plan shards, skip committed ones, start the rewriter replicas, keep several
shards in flight, record each outcome in run.json, and print progress.

It joins the cluster named by RAY_ADDRESS, else starts an embedded local Ray on loopback.
"""

import os
import posixpath
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from pf1m.pipeline import faults, metrics
from pf1m.pipeline.commit import is_done, now_iso, read_marker, sweep_temporaries
from pf1m.pipeline.local_ray import ensure_ray
from pf1m.pipeline.lock import LockHeld, RunLockFile
from pf1m.pipeline.logs import RunLogs
from pf1m.pipeline.manifest import diff_views, load_manifest, package_versions, save_manifest
from pf1m.pipeline.plan import PlanError, ShardJob, input_fingerprint, plan_shards
from pf1m.pipeline.progress import Progress, busy_fraction
from pf1m.pipeline.resources import alive_nodes
from pf1m.pipeline.resources import check as check_resources
from pf1m.pipeline.revisions import legacy_view, pin_models
from pf1m.pipeline.shard import RunContext, ShardOutcome, process_shard, warm_worker
from pf1m.pipeline.signals import Interrupts, signal_name
from pf1m.pipeline.stats import merge_shard_stats
from pf1m.pipeline.storage import node_local_warning, url_to_fs
from pf1m.schemas.config import ConfigError, RunConfig, config_hash
from pf1m.schemas.run import ExitCode, RunManifest, ShardState
from pf1m.schemas.stats import ShardStats

ACTOR_STOP_S = 20.0  # at the end engines shut down cleanly within this, else are killed


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
    if cfg.rewriter.tokenizer is not None:
        data["rewriter"]["tokenizer"] = fix_model(cfg.rewriter.tokenizer)
    for name in cfg.filters.model_filters():
        data["filters"][name]["model"] = fix_model(getattr(cfg.filters, name).model)
    clip = data["filters"].get("clip_paragraph")
    if clip is not None and clip["pretrained"] is not None:  # a weights file, or an open_clip tag
        clip["pretrained"] = fix_model(clip["pretrained"])
    return RunConfig.model_validate(data)


# Errors a replica raises when its model files or its GPU cannot hold the configured model:
# the config must change, so the run exits 2 like a config refused before any work.
LOAD_REFUSALS = ("FlamingoLoadError", "BatchDoesNotFit")


def check_rewriter_files(cfg: RunConfig) -> None:
    """Before Ray starts: the flamingo backend's files, read for key names and shapes only, so
    a missing group, a wrong shape or a pickled object is refused before any work; for chat
    prompts, the model's chat template (processor only)."""
    if cfg.rewriter.prompt.style == "chat":
        from pf1m.pipeline.chat_template import ChatRenderer, NoChatTemplate

        try:
            ChatRenderer.load(cfg.rewriter)
        except NoChatTemplate as exc:
            raise ConfigError(str(exc)) from None
    if cfg.rewriter.backend != "flamingo":
        return
    from pf1m.models.flamingo import FlamingoLoadError, precheck

    try:
        precheck(cfg.rewriter.model, cfg.rewriter.flamingo)
    except FlamingoLoadError as exc:
        raise ConfigError(f"rewriter: {exc}") from None


def init_ray(cfg: RunConfig, logs: RunLogs | None = None) -> bool:
    """Join RAY_ADDRESS if set, else start a local Ray bound to loopback. True if we started it.
    Worker output reaches the terminal only with `logs` verbose (or no `logs`); a local Ray
    sends it to OUT/logs instead (pf1m/pipeline/logs.py)."""
    return ensure_ray(
        log_to_driver=logs is None or logs.verbose,
        runtime_env=logs.worker_env() if logs else None,
        worker_niceness=cfg.resources.worker_niceness,
    )


def start_rewriters(cfg: RunConfig, run_id: str) -> list:
    from pf1m.actors.rewriter import BACKENDS

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
    from pf1m.actors.scorer import ScorerActor

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


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor's name in the message
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Refused|DoesNotFit)\b[^:]*:")


def _actor_error(exc: BaseException) -> str:
    """`ACTOR NAME could not start: its creation error` (the exception's whole message, over
    however many lines), without Ray's traceback."""
    text = ANSI_ESCAPE.sub("", str(exc))
    words = (w.removeprefix("ray::") for w in text.split() if w.startswith("ray::pf1m"))
    name = next((w.split(":")[0] for w in words), "actor")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = next(
        (i for i in range(len(lines) - 1, -1, -1) if EXCEPTION_LINE.match(lines[i])),
        len(lines) - 1,
    )
    cause = " ".join(lines[start:])
    return f"{name} could not start: {cause[:500]}"


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    return text.strip().splitlines()[-1][:2000] if text.strip() else type(exc).__name__


def merge_stats(fs, root: str, shards: list[str]) -> dict[str, Any]:
    """Totals over the committed shards' stats files: counts, reasons, quarantine stages, and
    output tokens; merged as the audit merges them."""

    def read(shard: str) -> ShardStats:
        with fs.open(posixpath.join(root, "stats", f"{shard}.json"), "rb") as f:
            return ShardStats.model_validate_json(f.read())

    merged = merge_shard_stats(read(shard) for shard in shards)
    return {**merged.totals.model_dump(), "output_tokens": merged.tokens.output}


class Driver:
    def __init__(
        self,
        cfg: RunConfig,
        max_shards: int | None = None,
        quiet: bool = False,
        rewriters: list | None = None,
        scorers: dict[str, list] | None = None,
        verbose: bool = False,
    ) -> None:
        """`rewriters`, `scorers`: actors already started for this config (tests, benchmarks);
        else the driver starts them and stops them at the end. `quiet`: no progress lines;
        `verbose`: worker and engine logs live on the terminal instead of in OUT/logs."""
        self.cfg = absolutize(cfg)
        self.max_shards = max_shards
        self.quiet = quiet
        self.logs = RunLogs(self.cfg.output, verbose)
        self.given_rewriters = rewriters
        self.given_scorers = scorers
        self.fs, self.root = url_to_fs(self.cfg.output)
        # What an interrupted or broken run needs to record its end (`_ended`)
        self._progress: Progress | None = None
        self._timing = {"startup_s": 0.0, "processing_s": 0.0}
        self._started: float | None = None
        self._skipped = 0
        self._inputs: dict[str, Any] = {}  # shard -> input fingerprint
        self._running: dict[ray.ObjectRef, str] = {}  # shard tasks in flight
        self._own_actors: list = []  # actors this driver started, stopped by `run()`

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
        """Every way a run ends is recorded in run.json: succeeded, partial, failed (any
        exception, with its error) or interrupted (SIGINT, SIGTERM: exit 130); the lock is
        released and the actors and the Ray this driver started are stopped in every case."""
        with self.logs, Interrupts() as signals:
            try:
                jobs, manifest = self._prepare()
            except (PlanError, ConfigError) as exc:
                self._error(str(exc))
                return RunResult(ExitCode.BAD_CONFIG, self.cfg.output)
            except KeyboardInterrupt as exc:  # nothing written yet
                self._error(f"interrupted ({signal_name(exc)}) before the run started")
                return RunResult(ExitCode.INTERRUPTED, self.cfg.output)
            return self._run_locked(jobs, manifest, signals)

    def _run_locked(self, jobs, manifest: RunManifest, signals: Interrupts) -> RunResult:
        lock = RunLockFile(self.fs, self.root, manifest.run_id, self.cfg.resources.lock_ttl_s)
        try:
            note = lock.acquire()
        except LockHeld as exc:
            self._error(str(exc))
            return RunResult(ExitCode.BAD_CONFIG, self.cfg.output)
        started_ray = False
        ended: tuple[str, str, ExitCode] | None = None  # (state, why, exit code) when not done
        result = None
        try:
            if note:
                self._say(note)
            swept = sweep_temporaries(self.fs, self.root)
            if swept:
                self._say(f"removed {len(swept)} temporary files left by an interrupted run")
            if not ray.is_initialized():
                joining = os.environ.get("RAY_ADDRESS")
                self._say(f"joining the Ray cluster at {joining}" if joining else "starting Ray")
            started_ray = init_ray(self.cfg, self.logs)
            signals.install()  # again: Ray installs its own SIGTERM handler
            lock.set_job(ray.get_runtime_context().get_job_id())
            result = self._run(jobs, manifest)
        except KeyboardInterrupt as exc:
            signals.defer()
            name = signals.received or signal_name(exc)  # Ray re-raises a plain KeyboardInterrupt
            self._say(f"{name}: stopping; committed shards are kept")
            ended = ("interrupted", name, ExitCode.INTERRUPTED)
        except ray.exceptions.ActorDiedError as exc:  # a model that would not load, typically
            signals.defer()
            self._error(_actor_error(exc))
            refused = any(name in str(exc) for name in LOAD_REFUSALS)
            code = ExitCode.BAD_CONFIG if refused else ExitCode.ERROR
            ended = ("failed", _actor_error(exc), code)
        except Exception as exc:  # the run itself broke
            signals.defer()
            cause = f"{type(exc).__name__}: {_error_text(exc)}"
            self.logs.traceback(exc)
            self._error(f"the run broke: {cause}")
            ended = ("failed", cause, ExitCode.ERROR)
        finally:  # the lock last: no task of this run may commit once it is released
            signals.defer()
            if ended:  # at once: a driver killed during the cleanup still leaves it recorded
                self._ended(manifest, *ended)
            self._stop_actors()
            if started_ray:
                ray.shutdown()
            if ended:  # again, now that no task runs: shards that committed meanwhile
                result = self._ended(manifest, *ended)
            lock.release()
        return result

    def _ended(self, manifest: RunManifest, status: str, error: str, code: ExitCode) -> RunResult:
        """Record a run that did not finish: the shards committed so far done (tasks that
        committed before the driver read their result included), the others pending, the
        state and why. Called at once and again when the tasks are stopped (they end with
        the Ray this driver stops, or on a cluster with its job)."""
        for shard, state in manifest.shards.items():  # tasks that committed, not yet recorded
            fingerprint = self._inputs.get(shard)
            marker = read_marker(self.fs, self.root, shard) if fingerprint else None
            if state.status == "pending" and is_done(marker, fingerprint, manifest.config_hash):
                state.status, state.error, state.samples_in = "done", None, marker.samples_in
        timing = self._timing
        if self._started is not None and timing["startup_s"] and not timing["processing_s"]:
            timing["processing_s"] = time.monotonic() - self._started - timing["startup_s"]
        progress = self._progress or Progress(total_shards=len(manifest.shards))
        done = sum(st.status == "done" for st in manifest.shards.values())
        try:
            return self._finish(
                manifest, progress, timing, (None, None), done - self._skipped,
                ended=(status, error, code),
            )  # fmt: skip
        except Exception as exc:  # OUT itself unwritable: say so, keep the exit code
            self._error(f"could not record the run's end in {self.cfg.output}/run.json: {exc}")
            return RunResult(code, self.cfg.output)

    def _stop_actors(self) -> None:
        """Engines shut down cleanly (their processes with them), then the actors are killed."""
        actors, self._own_actors = self._own_actors, []
        try:
            stops = [a.shutdown.remote() for a in actors if hasattr(a, "shutdown")]
            ray.wait(stops, num_returns=len(stops), timeout=ACTOR_STOP_S)
        except Exception:  # an actor already gone
            pass
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass

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
            self._inputs[job.shard] = fingerprint
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
        timing = self._timing
        self._progress, self._started, self._skipped = progress, started, len(skipped)
        busy: tuple[float | None, float | None] = (None, None)
        if todo:
            if self.given_rewriters is None:
                n = self.cfg.resources.rewriter_replicas
                self._say(f"starting {n} rewriter replica(s) and the scorers; "
                          f"their logs: {self.logs.where}")  # fmt: skip
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
            finally:  # stopped by `run()` once the run's end is recorded
                own = [] if self.given_rewriters else list(rewriters)
                if self.given_scorers is None:
                    own += list({id(a): a for rs in scorers.values() for a in rs}.values())
                self._own_actors = own
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
        running = self._running  # `_ended` stops what is still in here
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
        faults.raise_point("recorded", progress.done_shards + progress.failed_shards)

    def _finish(self, manifest, progress, timing, busy, processed, ended=None) -> RunResult:
        """The summary and the final state; `ended`: (state, error, exit code) of a run that
        did not finish, else succeeded or partial."""
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
        if ended is None:
            manifest.status = "succeeded" if not failed else "partial"
            code = ExitCode.OK if not failed else ExitCode.PARTIAL
        else:
            manifest.status, manifest.error, code = ended
        summary.update(state=manifest.status, error=manifest.error)
        if not self.logs.verbose:
            summary["logs"] = self.logs.where
        manifest.summary = summary
        manifest.updated_at = manifest.finished_at = now_iso()
        save_manifest(self.fs, self.root, manifest)
        return RunResult(code, self.cfg.output, summary)
