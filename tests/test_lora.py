"""LoRA adapters made with peft, served per request: two adapters and the base model in one
batch, on one vLLM engine and on the transformers backend; greedy in float32, so the two
backends must agree token for token. Adapter fingerprints enter the config hash.

`no_repeat_ngram_size` on the vLLM backend, on the same engine (one engine start for the module,
not two): the engine also loads the n-gram logits processor, which only requests that opt in
use; the greedy output of the tiny model repeats 3-grams, and with the setting no 3-gram of the
output occurs twice."""

import asyncio
import shutil

import pytest

from pf1m.actors.transformers_rewriter import TransformersRewriter
from pf1m.actors.vllm_rewriter import (
    NGRAM_PROCESSOR,
    VllmRewriter,
    vllm_engine_kwargs,
    vllm_sampling,
)
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.fingerprint import model_fingerprint
from pf1m.schemas.config import load_config
from pf1m.schemas.rewrite import RewriteRequest
from tests.conftest import DEMO_CONFIG, demo_config

pytestmark = pytest.mark.slow

GREEDY_F32 = (
    "rewriter.decoding.temperature=0",
    "rewriter.decoding.top_k=0",
    "rewriter.decoding.top_p=1.0",
    "rewriter.decoding.max_tokens=8",
    "rewriter.dtype=float32",
    "rewriter.transformers.dtype=float32",
)


def make_adapter(base: str, out, seed: int) -> str:
    """A peft LoRA on the language model's q/v projections; init_lora_weights=False makes it
    change the outputs (the default initialisation is a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration.from_pretrained(base)
    lora = LoraConfig(
        r=8, lora_alpha=16, init_lora_weights=False,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )  # fmt: skip
    get_peft_model(model, lora).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def two_adapters(demo_models, tmp_path_factory) -> tuple[str, str]:
    base, root = str(demo_models["rewriter"]), tmp_path_factory.mktemp("adapters")
    return make_adapter(base, root / "a", 1), make_adapter(base, root / "b", 2)


def adapters_config(demo_models, two_adapters):
    """Greedy float32 with both adapters; the engine also loads the n-gram processor (as
    `vllm_engine_kwargs` adds it for a config with `no_repeat_ngram_size`): only requests that
    ask for it use it, so the adapters' requests run as without it."""
    a, b = two_adapters
    overrides = demo_model_overrides(demo_models["rewriter"].parent)
    adapters = f"rewriter.adapters=[{{name: a, path: {a}}}, {{name: b, path: {b}}}]"
    processor = f"rewriter.engine.extra_args={{logits_processors: [{NGRAM_PROCESSOR}]}}"
    return load_config(DEMO_CONFIG, [*overrides, *GREEDY_F32, adapters, processor]).rewriter


@pytest.fixture(scope="module")
def engine(demo_models, two_adapters):
    """One in-process vLLM replica for the module, on an event loop of its own that every test
    here runs its requests on."""
    loop = asyncio.new_event_loop()
    cfg = adapters_config(demo_models, two_adapters)

    async def start() -> VllmRewriter:
        return VllmRewriter(cfg, 0)

    replica = loop.run_until_complete(start())
    try:
        yield replica, loop
    finally:  # stop the engine now, not at interpreter exit after pytest's summary
        replica.shutdown()
        pending = asyncio.all_tasks(loop)  # the engine's output handler, batchers: ended here
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def test_two_adapters_and_the_base_model_in_one_batch(demo_models, two_adapters, engine):
    replica, loop = engine
    cfg = adapters_config(demo_models, two_adapters)
    assert replica.kwargs["logits_processors"] == [NGRAM_PROCESSOR] and replica.loras
    hf_cfg = cfg.model_copy(update={"backend": "transformers"})
    batch = [
        RewriteRequest(f"t/{i}/{name}", f"Describe shape number {i}.", [], 7, name)
        for i in range(4)
        for name in (None, "a", "b")  # mixed: base requests among adapter requests
    ]

    async def both():
        served = await replica.generate(batch)
        return served, await TransformersRewriter(hf_cfg, 0).generate(batch)

    served, expected = loop.run_until_complete(both())
    assert all(r.error_class is None for r in served + expected), [r.error_text for r in served]
    # vLLM holds back an incomplete UTF-8 sequence at the end of a completion, where
    # transformers decodes it as U+FFFD; the tokens are the same
    assert [r.output_tokens for r in served] == [r.output_tokens for r in expected]
    text = [r.completion.rstrip("\ufffd") for r in served]
    assert text == [r.completion.rstrip("\ufffd") for r in expected]
    by = {r.uid: r.completion for r in served}

    def differs(x: str, y: str) -> bool:
        return any(by[f"t/{i}/{x}"] != by[f"t/{i}/{y}"] for i in range(4))

    assert differs("None", "a") and differs("None", "b") and differs("a", "b")


def test_adapter_routing_and_its_fingerprint_in_the_hash(demo_models, two_adapters, tmp_path):
    a, b = two_adapters
    adapters = f"rewriter.adapters=[{{name: a, path: {a}, tasks: [vqa]}}, {{name: b, path: {b}}}]"
    cfg = load_config(DEMO_CONFIG, [adapters])
    assert cfg.rewriter.adapter_for("coco", "vqa") == "a"
    assert cfg.rewriter.adapter_for("coco", "caption") == "b"  # the catch-all
    only_vqa = load_config(
        DEMO_CONFIG, [f"rewriter.adapters=[{{name: a, path: {a}, tasks: [vqa]}}]"]
    )
    assert only_vqa.rewriter.adapter_for("coco", "caption") is None  # the base model
    assert "adapter:a" in cfg.models() and cfg.models()["adapter:b"] == b
    # a retrained adapter of the same shape differs only in its weights' bytes: adapters are
    # fingerprinted by content (base models by names, sizes and configs)
    copy = tmp_path / "a"
    shutil.copytree(a, copy)
    before = model_fingerprint(str(copy), contents=True), model_fingerprint(str(copy))
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(copy), contents=True) != before[0]
    assert model_fingerprint(str(copy)) == before[1]


def repeated_ngrams(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_ngram_processor_removes_repeated_trigrams(demo_models, demo_shards, engine, tmp_path):
    replica, loop = engine
    greedy = ("rewriter.decoding.temperature=0", "rewriter.decoding.max_tokens=48")
    on = demo_config(
        demo_shards, demo_models, tmp_path, *greedy, "rewriter.decoding.no_repeat_ngram_size=3"
    ).rewriter
    off = demo_config(demo_shards, demo_models, tmp_path, *greedy).rewriter
    # a config with the setting loads the processor: the module's engine was built with it
    assert vllm_engine_kwargs(on, seed=0)["logits_processors"] == [NGRAM_PROCESSOR]
    assert "logits_processors" not in vllm_engine_kwargs(off, seed=0)
    assert replica.kwargs["logits_processors"] == [NGRAM_PROCESSOR]
    prompts = ["What is a circle?", "Describe the image in detail.", "the the the"]

    async def generate(cfg, tag: str) -> list[list[int]]:
        async def one(i: int, prompt: str) -> list[int]:
            final = None
            stream = replica.engine.generate(prompt, vllm_sampling(cfg, 0), f"ngram-{tag}-{i}")
            async for out in stream:
                final = out
            return list(final.outputs[0].token_ids)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    plain_ids = loop.run_until_complete(generate(off, "off"))
    banned_ids = loop.run_until_complete(generate(on, "on"))
    assert sum(repeated_ngrams(ids, 3) for ids in plain_ids) > 0  # the model does loop
    assert all(repeated_ngrams(ids, 3) == 0 for ids in banned_ids)
    assert all(len(ids) > 3 for ids in banned_ids)
