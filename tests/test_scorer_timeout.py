"""A scorer call that hangs: the scorer actor is restarted, the call retried once (each item on
its own), then an item that times out again is quarantined `score:NAME` / `timeout`.

The hang comes from the `stall_score` fault point (pf1m/pipeline/faults.py): the scorer's model
thread hangs for good and the stalled call's deadline is already past, while every real call
has a timeout far above its cost, so which calls time out never depends on the machine's speed.
Cost: one NLI-only actor (restarted twice) beside the session's rewriter and scorers; NLI
rather than STS because its actor imports transformers alone, not sentence-transformers too
(~3 s less a start).
"""

import os

import pyarrow.parquet as pq
import pytest

from pf1m.pipeline.commit import relpath
from pf1m.pipeline.driver import Driver, absolutize
from pf1m.schemas.reasons import TIMEOUT, Stage
from pf1m.schemas.run import ExitCode
from tests.conftest import demo_config
from tests.tarutil import png, record, write_tar

pytestmark = pytest.mark.slow

NEVER_S = 3600  # a call timeout no real call reaches: only the fault point fires it


def rows(out, kind: str) -> list[dict]:
    path = out / relpath(kind, "caps")
    return pq.read_table(path).to_pylist() if path.exists() else []


def test_a_hung_scorer_call_restarts_the_actor_retries_then_quarantines(
    ray_local, rewriter, scorers, demo_models, tmp_path
):
    from pf1m.actors.scorer import ScorerActor

    shards, out = tmp_path / "in", tmp_path / "out"
    shards.mkdir()
    answers = [f"a red circle number {i}" for i in range(6)]
    answers[1] = "a STALLONCE answer"  # its call hangs on the first attempt only
    answers[4] = "a STALLALWAYS answer"  # hangs on every attempt
    write_tar(shards / "caps.tar", [m for i, a in enumerate(answers) for m in (
        (f"k{i}.json", record(task="vqa", instruction="<image>\nWhat is it?", response=a)),
        (f"k{i}.png", png()),
    )])  # fmt: skip
    cfg = absolutize(
        demo_config(
            shards, demo_models, out, "filters.scoring=full", f"scoring.call_timeout_s={NEVER_S}"
        )
    )
    stall = "nli:STALLONCEx1,nli:STALLALWAYS"
    faulty = (
        ray_local.remote(ScorerActor)
        .options(
            num_cpus=0.1,
            max_restarts=4,
            max_task_retries=4,
            runtime_env={"env_vars": {"PF1M_FAULT_STALL_SCORE": stall}},
        )
        .remote(cfg.filters, ["nli"], cfg.scoring)
    )

    def pid() -> int:
        return ray_local.get(faulty.__ray_call__.remote(lambda self: os.getpid()))

    try:
        first_pid = pid()
        result = Driver(cfg, quiet=True, rewriters=rewriter, scorers={**scorers, "nli": [faulty]})
        result = result.run()
        restarted = pid() != first_pid
    finally:
        ray_local.kill(faulty)
    assert result.exit_code == ExitCode.OK  # a quarantined sample is not a failed shard
    assert restarted  # the hung model thread went with its process
    quarantine = rows(out, "quarantine")
    assert [(r["key"], r["stage"], r["error_class"]) for r in quarantine] == [
        ("k4", Stage.score("nli"), TIMEOUT)
    ]
    assert "twice" in quarantine[0]["error_text"] and quarantine[0]["rewrite_raw"] is not None
    others = rows(out, "data") + rows(out, "rejected")
    assert sorted(r["key"] for r in others) == ["k0", "k1", "k2", "k3", "k5"]
    assert all(r["nli_label"] is not None for r in others)  # k1's retry and its call-mates scored
