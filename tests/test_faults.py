"""Fault injection that really kills processes: the driver (with the embedded Ray it started)
SIGKILLed before any commit, inside a commit and after one, chained in one run; then SIGKILLed
from outside at a random moment; then a rewriter actor killed mid-run. After each, the
resumed run equals an uninterrupted one row for row (deterministic mode, transformers backend:
vLLM adds nothing here and an engine per run would cost minutes)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.audit import audit
from pf1m.pipeline.commit import TMP_TAG
from pf1m.pipeline.driver import Driver
from pf1m.pipeline.lock import LOCK
from pf1m.schemas.commit import CommitMarker
from pf1m.schemas.run import ExitCode
from tests.conftest import DEMO_CONFIG, ROOT, demo_config

pytestmark = [pytest.mark.slow, pytest.mark.drivers]

SHARDS = ["00000", "00001", "00002", "00003", "00004", "00005"]
DETERMINISTIC = (
    "rewriter.backend=transformers",
    "rewriter.deterministic=true",
    "resources.shards_in_flight=2",
    "resources.batch_size=2",
)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    from pf1m.demo.data import write_shards

    out = tmp_path_factory.mktemp("fault-shards")
    write_shards(out, samples=24, shards=len(SHARDS), seed=0)
    return out


def rows_by_uid(out: Path) -> dict[str, dict]:
    """Every row of every kind, without run-specific fields; duplicates fail here."""
    rows: dict[str, dict] = {}
    for kind in ("data", "rejected", "quarantine"):
        for path in sorted((out / kind).glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                row.pop("run_id")
                assert row["uid"] not in rows, f"duplicate {row['uid']}"
                rows[row["uid"]] = {**row, "_kind": kind}
    return rows


def audited(out: Path) -> dict:
    """The audit's figures (what `pf1m audit` prints and writes), without run identity."""
    stats = audit(LocalFileSystem(), str(out))
    assert stats.problems == [] and stats.complete
    return stats.model_dump(include={"totals", "by_group", "tokens", "finish_reasons"})


def assert_complete(out: Path, reference: dict[str, dict]) -> None:
    """Same rows as the uninterrupted run, no temporaries, conservation per shard."""
    assert not [p for p in out.rglob(f"*{TMP_TAG}*")], "temporaries left behind"
    assert not (out / LOCK).exists()
    for shard in SHARDS:
        marker = CommitMarker.model_validate_json((out / "_commits" / f"{shard}.json").read_text())
        counted = sum(marker.files[k].rows for k in ("data", "rejected", "quarantine"))
        assert counted == marker.samples_in == 4, shard
    got = rows_by_uid(out)
    assert got.keys() == reference.keys()
    for uid, row in reference.items():
        assert got[uid] == row, uid


def cli(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """`pf1m ...` in its own process group, as a user would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "pf1m.jobs.cli", *args, "--quiet"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(env or {})},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def run_args(shards: Path, models: dict, out: Path) -> list[str]:
    sets = [f"input={shards}/*.tar", f"output={out}", *DETERMINISTIC]
    sets += demo_model_overrides(models["rewriter"].parent)
    return ["run", str(DEMO_CONFIG), *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def uninterrupted(demo_models, small_shards, tmp_path_factory) -> tuple[dict, float, Path]:
    """The rows of an uninterrupted run, how long the run took, and its directory."""
    out = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    proc = cli(*run_args(small_shards, demo_models, out))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.OK, log
    return rows_by_uid(out), time.monotonic() - started, out


@pytest.fixture(scope="module")
def reference(uninterrupted) -> dict[str, dict]:
    return uninterrupted[0]


def killed(proc: subprocess.Popen) -> str:
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, log
    return log


def test_kills_at_commit_steps_then_resume(
    demo_models, small_shards, uninterrupted, reference, tmp_path
):
    out = tmp_path / "out"
    first = cli(
        *run_args(small_shards, demo_models, out), env={"PF1M_FAULT_KILL": "before_commit:*"}
    )
    killed(first)
    assert not list((out / "_commits").glob("*.json"))  # before any commit
    assert (out / LOCK).exists()  # the killed driver could not release it

    log = killed(cli("resume", str(out), env={"PF1M_FAULT_KILL": "inside_commit:00002"}))
    assert (out / "data" / "00002.parquet").exists() or (
        out / "rejected" / "00002.parquet"
    ).exists()
    assert not (out / "_commits" / "00002.json").exists()  # renamed into place, not committed

    killed(cli("resume", str(out), env={"PF1M_FAULT_KILL": "after_commit:00004"}))
    committed = {p.stem for p in (out / "_commits").glob("*.json")}
    assert "00004" in committed and len(committed) < len(SHARDS)

    proc = cli("resume", str(out))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.OK, log
    assert_complete(out, reference)
    assert audited(out) == audited(uninterrupted[2])  # the audit cannot tell them apart


def test_driver_killed_from_outside_at_a_random_moment(
    demo_models, small_shards, uninterrupted, tmp_path
):
    reference, wall, _ = uninterrupted
    seed = int(os.environ.get("PF1M_KILL_SEED", time.time_ns() % 10_000))
    delay = random.Random(seed).uniform(0.1, 0.75) * wall  # start-up included
    print(f"killing after {delay:.1f} s of a {wall:.0f} s run (PF1M_KILL_SEED={seed} repeats it)")
    out = tmp_path / "out"
    # the last shard is held before its commit, so the run cannot finish before the kill
    # however fast this machine runs it (the kill moment stays random)
    held = {"PF1M_FAULT_PAUSE": f"before_commit:{SHARDS[-1]}"}
    proc = cli(*run_args(small_shards, demo_models, out), env=held)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"ended before the kill: {log}"
    proc = cli(*run_args(small_shards, demo_models, out))  # the same command again, as a
    # user would: a kill during start-up leaves no run.json for `pf1m resume` to read
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.OK, log
    assert_complete(out, reference)


def test_rewriter_actor_killed_mid_run(
    ray_local, deterministic_scorers, demo_models, small_shards, reference, tmp_path, monkeypatch
):
    """Ray restarts the replica (max_restarts) and retries its calls; the run completes. The
    scorers are the session's deterministic ones, as the reference run's were."""
    cfg = demo_config(
        small_shards, demo_models, tmp_path / "out", *DETERMINISTIC,
        "resources.cpus_per_replica=0.2",
        "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.1}]",
    )  # fmt: skip
    killed_at: list[str] = []
    record = Driver._record

    def record_then_kill(self, ref, shard, manifest, progress) -> None:
        """In the driver's own loop, once the first shard is recorded (five still to do): the
        kill lands mid-run however fast the machine runs, not after a thread's race. This
        run's own replica, by name: the session's replicas share this Ray."""
        record(self, ref, shard, manifest, progress)
        if killed_at:
            return
        name = f"pf1m-rewriter-{manifest.run_id}-0"
        actor = next(
            a for a in ray_local.util.list_named_actors(all_namespaces=True) if a["name"] == name
        )
        handle = ray_local.get_actor(actor["name"], namespace=actor["namespace"])
        ray_local.kill(handle, no_restart=False)
        killed_at.append(actor["name"])

    monkeypatch.setattr(Driver, "_record", record_then_kill)
    result = Driver(cfg, quiet=True, scorers=deterministic_scorers).run()
    assert killed_at, "the rewriter was never killed"
    assert result.exit_code == ExitCode.OK, result.summary
    assert len(list((tmp_path / "out" / "_commits").glob("*.json"))) == len(SHARDS)
    assert rows_by_uid(tmp_path / "out") == reference
