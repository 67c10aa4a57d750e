"""Beam search on both backends, and the per-request timeout: an engine restart and one
retry, then quarantine as `rewrite` / `timeout`. Timeouts fire through the `timeout_rewrite`
fault point (pf1m/pipeline/faults.py), never by racing compute: `request_timeout_s` is far above
any real request, so only the faulted request can time out, however loaded the machine."""

import asyncio
import os

import pyarrow.parquet as pq
import pytest

from pf1m.actors.replica import TIMEOUT
from pf1m.actors.transformers_rewriter import TransformersRewriter
from pf1m.actors.vllm_rewriter import VllmRewriter
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.driver import Driver, absolutize
from pf1m.schemas.config import load_config
from pf1m.schemas.reasons import Stage
from pf1m.schemas.run import ExitCode
from tests.conftest import DEMO_CONFIG, demo_config
from tests.test_backends import SMALL
from tests.test_rewriter_engine import requests

pytestmark = pytest.mark.slow

NEVER_S = 3600  # a request timeout no real request reaches: only the fault point fires it

# Greedy beams in float32, so that both engines rank the same candidates the same way.
BEAM = (
    "rewriter.decoding.beam_width=3",
    "rewriter.decoding.temperature=0",
    "rewriter.decoding.top_k=0",
    "rewriter.decoding.top_p=1.0",
    "rewriter.decoding.max_tokens=12",
    "rewriter.dtype=float32",
    "rewriter.transformers.dtype=float32",
)


def rewriter_cfg(models, *extra):
    overrides = demo_model_overrides(models["rewriter"].parent)
    return load_config(DEMO_CONFIG, [*overrides, *extra]).rewriter


def test_vllm_beam_search_matches_transformers_and_survives_an_engine_restart(
    demo_models, monkeypatch
):
    batch = requests("<image>", n=8)  # every task type: 0, 1 and 2 images
    slow = batch[2].uid
    hf_beam = TransformersRewriter(rewriter_cfg(demo_models, *BEAM), 0)
    greedy_cfg = rewriter_cfg(demo_models, *BEAM, "rewriter.decoding.beam_width=null")
    hf_greedy = TransformersRewriter(greedy_cfg, 0)
    timed = rewriter_cfg(demo_models, *BEAM, f"rewriter.request_timeout_s={NEVER_S}")

    async def scenario():
        expected = await hf_beam.generate(batch)
        greedy = await hf_greedy.generate(batch)
        engine = VllmRewriter(timed, 0)
        try:
            first = await engine.generate(batch)
            monkeypatch.setenv("PF1M_FAULT_TIMEOUT_REWRITE", f"{slow}x1")  # first attempt only
            again = await engine.generate(batch)
            return expected, greedy, first, again, engine.restarts()
        finally:
            engine.shutdown()

    expected, greedy, first, again, restarts = asyncio.run(scenario())
    assert all(r.error_class is None for r in first + again)
    assert [r.completion for r in first] == [r.completion for r in expected]
    assert [r.completion for r in greedy] != [r.completion for r in expected]  # beams matter
    # the slow request timed out once, the engine restarted, and its retry (and every request
    # cancelled by the restart) gave the same answer as before
    assert restarts == 1
    assert [r.completion for r in again] == [r.completion for r in first]


def test_a_request_that_times_out_twice_is_quarantined(
    ray_local, scorers, demo_models, demo_shards, tmp_path
):
    slow = "00001/sample000005"
    cfg = absolutize(
        demo_config(
            demo_shards, demo_models, tmp_path / "out", "rewriter.backend=transformers", *SMALL,
            "limit_per_shard=4", f"rewriter.request_timeout_s={NEVER_S}",
        )
    )  # fmt: skip
    actor = (
        ray_local.remote(TransformersRewriter)
        .options(
            num_cpus=0.2,
            max_concurrency=4096,
            runtime_env={"env_vars": {"PF1M_FAULT_TIMEOUT_REWRITE": slow}},  # every attempt
        )
        .remote(cfg.rewriter, cfg.seed, 1)
    )
    try:
        result = Driver(cfg, quiet=True, rewriters=[actor], scorers=scorers).run()
        restarts = ray_local.get(actor.restarts.remote())
    finally:
        ray_local.kill(actor)
    assert result.exit_code == ExitCode.OK  # a quarantined sample is not a failed shard
    assert result.summary["samples_in"] == 16 and result.summary["quarantined"] == 1
    assert restarts == 2  # one per timeout
    rows = pq.read_table(tmp_path / "out" / "quarantine" / "00001.parquet").to_pylist()
    assert [(r["uid"], r["stage"], r["error_class"]) for r in rows] == [
        (slow, str(Stage.REWRITE), TIMEOUT)
    ]
    assert "twice" in rows[0]["error_text"]
    written = pq.read_table(tmp_path / "out" / "data").num_rows
    written += pq.read_table(tmp_path / "out" / "rejected").num_rows
    assert written == 15


def test_a_dead_engine_is_restarted_by_ray(ray_local, rewriter):
    """SIGKILL the vLLM engine-core process inside the session's replica: the next call finds
    the engine dead, the actor exits, Ray restarts it and retries the call."""
    import psutil

    actor = rewriter[0]

    def actor_pid() -> int:
        return ray_local.get(actor.__ray_call__.remote(lambda self: os.getpid()))

    def engine_cores() -> list[int]:
        """The processes the replica started through multiprocessing: its engine core (found
        this way rather than by process title, which is not always set when we look)."""
        import multiprocessing

        def children(self) -> list[int]:
            return [p.pid for p in multiprocessing.active_children()]

        return ray_local.get(actor.__ray_call__.remote(children))

    pid = actor_pid()
    cores = [psutil.Process(p) for p in engine_cores()]
    assert len(cores) == 1, cores
    # engine.cpu_executor: uni, the model runs in the engine core: no worker process under it
    assert cores[0].children(recursive=True) == [], cores[0].children(recursive=True)
    assert cores[0].ppid() == pid
    for proc in cores:
        proc.kill()
    batch = requests("<image>", n=4)
    results = ray_local.get(actor.generate.remote(batch), timeout=600)  # a bound: a new engine
    assert all(r.error_class is None for r in results), [r.error_text for r in results]
    assert actor_pid() != pid  # a new process
