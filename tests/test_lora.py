"""LoRA adapters made with peft, served per request: two adapters and the base model in one
batch, on one vLLM engine and on the transformers backend; greedy in float32, so the two
backends must agree token for token. Adapter fingerprints enter the config hash."""

import asyncio
import shutil

import pytest

from pf1m.actors.transformers_rewriter import TransformersRewriter
from pf1m.actors.vllm_rewriter import VllmRewriter
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.fingerprint import model_fingerprint
from pf1m.schemas.config import load_config
from pf1m.schemas.rewrite import RewriteRequest
from tests.conftest import DEMO_CONFIG

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


def test_two_adapters_and_the_base_model_in_one_batch(demo_models, two_adapters):
    a, b = two_adapters
    overrides = demo_model_overrides(demo_models["rewriter"].parent)
    adapters = f"rewriter.adapters=[{{name: a, path: {a}}}, {{name: b, path: {b}}}]"
    cfg = load_config(DEMO_CONFIG, [*overrides, *GREEDY_F32, adapters]).rewriter
    hf_cfg = cfg.model_copy(update={"backend": "transformers"})
    batch = [
        RewriteRequest(f"t/{i}/{name}", f"Describe shape number {i}.", [], 7, name)
        for i in range(4)
        for name in (None, "a", "b")  # mixed: base requests among adapter requests
    ]

    async def both():
        engine = VllmRewriter(cfg, 0)
        try:
            served = await engine.generate(batch)
        finally:
            engine.shutdown()
        return served, await TransformersRewriter(hf_cfg, 0).generate(batch)

    served, expected = asyncio.run(both())
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
