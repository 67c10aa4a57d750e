"""LoRA adapters made with peft, served per request by one vLLM engine (CPU build)."""

import pytest

from schemas.rewrite import RewriteRequest
from tests.conftest import demo_config

pytestmark = pytest.mark.slow


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


def test_two_adapters_change_outputs_on_one_engine(ray_local, demo_models, demo_shards, tmp_path):
    from pipeline.driver import absolutize, start_rewriters

    base = str(demo_models["rewriter"])
    a, b = make_adapter(base, tmp_path / "a", 1), make_adapter(base, tmp_path / "b", 2)
    cfg = absolutize(demo_config(
        demo_shards, demo_models, tmp_path / "out",
        f"rewriter.adapters=[{{name: a, path: {a}}}, {{name: b, path: {b}}}]",
        "resources.cpus_per_replica=0.2", "rewriter.engine.max_lora_rank=8",
    ))  # fmt: skip
    [actor] = start_rewriters(cfg, "lora-test")
    try:
        prompts = [f"Describe shape number {i}." for i in range(4)]
        batch = [
            RewriteRequest(f"t/{i}/{name}", p, [], 7, name)
            for i, p in enumerate(prompts)
            for name in (None, "a", "b")
        ]
        results = ray_local.get(actor.generate.remote(batch))
    finally:
        ray_local.kill(actor)
    assert all(r.error_class is None for r in results), [r.error_text for r in results]
    by = {r.uid: r.completion for r in results}
    differs = lambda x, y: any(by[f"t/{i}/{x}"] != by[f"t/{i}/{y}"] for i in range(4))  # noqa: E731
    assert differs("None", "a") and differs("None", "b") and differs("a", "b")
