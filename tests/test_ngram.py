"""`no_repeat_ngram_size` on the vLLM backend: the greedy output of the tiny model repeats
3-grams; with the setting, no 3-gram of the output occurs twice."""

import pytest

from pf1m.actors.vllm_rewriter import vllm_engine_kwargs, vllm_sampling
from tests.conftest import demo_config

pytestmark = pytest.mark.slow


def repeated_ngrams(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_ngram_processor_removes_repeated_trigrams(demo_models, demo_shards, tmp_path, monkeypatch):
    from vllm import LLM

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # as the rewriter actor sets it
    greedy = ("rewriter.decoding.temperature=0", "rewriter.decoding.max_tokens=48")
    on = demo_config(
        demo_shards, demo_models, tmp_path, *greedy, "rewriter.decoding.no_repeat_ngram_size=3"
    ).rewriter
    off = demo_config(demo_shards, demo_models, tmp_path, *greedy).rewriter
    llm = LLM(**vllm_engine_kwargs(on, seed=0))  # the processor is loaded; requests opt in
    prompts = ["What is a circle?", "Describe the image in detail.", "the the the"]
    try:
        plain = llm.generate(prompts, vllm_sampling(off, 0))
        banned = llm.generate(prompts, vllm_sampling(on, 0))
    finally:  # stop the engine now, not at interpreter exit after pytest's summary
        llm.llm_engine.engine_core.shutdown()
    plain_ids = [o.outputs[0].token_ids for o in plain]
    banned_ids = [o.outputs[0].token_ids for o in banned]
    assert sum(repeated_ngrams(list(ids), 3) for ids in plain_ids) > 0  # the model does loop
    assert all(repeated_ngrams(list(ids), 3) == 0 for ids in banned_ids)
    assert all(len(ids) > 3 for ids in banned_ids)
