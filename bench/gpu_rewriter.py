"""Rewriter throughput at full size on a GPU, for sizing a cluster (README, "Running on a
cluster"): LLaVA-1.5-7B's architecture (CLIP ViT-L/14-336 + Llama-2-7B, float16) with random
weights built from its config (no download), one image per prompt (576 image tokens) and a
~120-token prompt, `generate` with sampling for a fixed number of new tokens (random weights
never stop early, so every sequence runs to the limit).

This measures the `transformers` backend's batched `generate` (and one sample at a time as the
baseline); vLLM's continuous batching is not measured here (no vLLM on the lent machine), so
the figure is a lower bound for the `vllm` backend.

Run on a GPU machine: `python -m bench.gpu_rewriter [--batches 1,16,64 --new-tokens 256]`.
"""

import argparse
import json
import sys
import time

import torch


def build_model():
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768,
    )  # fmt: skip
    text = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=32000,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )  # fmt: skip
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(config).to(torch.float16).eval()
    return model, config


def inputs(config, batch: int, prompt_tokens: int):
    image_tokens = (336 // 14) ** 2
    ids = torch.randint(100, 32000, (batch, prompt_tokens + image_tokens), device="cuda")
    ids[:, 1 : 1 + image_tokens] = config.image_token_index
    pixels = torch.randn(batch, 3, 336, 336, device="cuda", dtype=torch.float16)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def run(model, config, batch: int, new_tokens: int, prompt_tokens: int) -> float:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
              temperature=1.0, top_k=20, top_p=0.9, pad_token_id=0)  # fmt: skip
    with torch.inference_mode():
        model.generate(**inputs(config, batch, prompt_tokens), **{**kw, "max_new_tokens": 4,
                       "min_new_tokens": 4})  # fmt: skip
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(**inputs(config, batch, prompt_tokens), **kw)
        torch.cuda.synchronize()
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=120)
    args = parser.parse_args()
    model, config = build_model()
    rates = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        rates[batch] = run(model, config, batch, args.new_tokens, args.prompt_tokens)
        print(f"# batch {batch}: {rates[batch]:.3f} samples/s", file=sys.stderr, flush=True)
    base = rates[min(rates)]
    for batch, rate in rates.items():
        print(json.dumps({
            "bench": "gpu_rewriter",
            "metric": f"llava7b_hf_generate_batch{batch}_{args.new_tokens}_new_tokens",
            "value": round(rate, 3), "unit": "samples/s", "baseline": round(base, 3),
            "ratio": round(rate / base, 3), "target": None,
            "device": torch.cuda.get_device_name(0),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
