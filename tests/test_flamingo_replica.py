"""The `flamingo` replica keeps the contract of the other backends: a bad request never fails
its batch, deterministic rows do not depend on batching, and a timed-out request restarts the
replica's batcher and is retried once (through the `timeout_rewrite` fault point, never a race
against compute). In-process on the tiny Polite Flamingo, no Ray; about 20 s."""

import asyncio

import pytest

from pf1m.actors.flamingo_rewriter import IMAGE_TOKEN, FlamingoRewriter
from pf1m.demo.data import make_sample
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.prompt import sample_seed
from pf1m.schemas.config import load_config
from pf1m.schemas.rewrite import RewriteRequest
from tests.conftest import ROOT

PRESET = ROOT / "pf1m" / "configs" / "demo-flamingo.yaml"
NEVER_S = 3600  # a request timeout no real request reaches: only the fault point fires it


def replica(models, *extra: str) -> FlamingoRewriter:
    overrides = demo_model_overrides(models["rewriter"].parent, flamingo=True)
    cfg = load_config(PRESET, [*overrides, "rewriter.decoding.max_tokens=8", *extra])
    return FlamingoRewriter(cfg.rewriter, 0, cpu_threads=1)


def requests(n: int) -> list[RewriteRequest]:
    """Demo samples with 0, 1 and 2 images, each image appended after the instruction."""
    out = []
    for index in range(n):
        key, rec, images, _ = make_sample(index, seed=0)
        prompt = f"### Human: {rec['instruction'].replace('<image>', '')}"
        prompt += IMAGE_TOKEN * len(images) + f"\n### Assistent: {rec['response']}\n"
        uid = f"flamingo/{key}"  # not another test's uid: fault points count attempts per uid
        out.append(RewriteRequest(uid, prompt, images, sample_seed(0, uid)))
    return out


def run(rewriter: FlamingoRewriter, batch: list[RewriteRequest]):
    return asyncio.run(rewriter.generate(batch))


@pytest.fixture(scope="module")
def deterministic(demo_models):
    return replica(
        demo_models, "rewriter.deterministic=true", f"rewriter.request_timeout_s={NEVER_S}"
    )


def test_a_bad_request_does_not_fail_its_batch(demo_models):
    batch = requests(6)
    bad = batch[1]
    batch[1] = RewriteRequest(bad.uid, bad.prompt + IMAGE_TOKEN, bad.images, bad.seed)  # 1 too many
    too_long = RewriteRequest("t/long", "word " * 600, [], 1)  # over max_model_len 512
    results = run(replica(demo_models), [*batch, too_long])
    assert [r.uid for r in results] == [r.uid for r in batch] + ["t/long"]
    assert results[1].error_class is not None and results[1].completion is None
    assert (
        results[-1].error_class == "PromptTooLong" and "max_model_len 512" in results[-1].error_text
    )
    for res in results[:1] + results[2:-1]:
        assert res.error_class is None, res.error_text
        assert res.finish_reason in {"stop", "length"} and 0 < res.output_tokens <= 8
        assert res.prompt_tokens > 0


def test_deterministic_rows_do_not_depend_on_batching(deterministic):
    batch = requests(6)
    together = run(deterministic, batch)
    alone = [run(deterministic, [r])[0] for r in reversed(batch)][::-1]
    assert [r.completion for r in together] == [r.completion for r in alone]
    assert len({r.completion for r in together}) > 1  # not one fixed answer


def test_a_timed_out_request_restarts_and_is_retried_once(deterministic, monkeypatch):
    batch = requests(3)
    first = run(deterministic, batch)
    monkeypatch.setenv("PF1M_FAULT_TIMEOUT_REWRITE", f"{batch[1].uid}x1")  # first attempt only
    again = run(deterministic, batch)
    assert deterministic.restarts() == 1
    assert [r.completion for r in again] == [r.completion for r in first]
    monkeypatch.setenv("PF1M_FAULT_TIMEOUT_REWRITE", batch[2].uid)  # every attempt
    quarantined = run(deterministic, batch)[2]
    assert quarantined.error_class == "timeout" and quarantined.completion is None
    assert deterministic.restarts() == 3
