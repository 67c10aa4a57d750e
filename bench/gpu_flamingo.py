"""The `flamingo` backend at full size on one GPU: a random-weight Polite Flamingo of the
released shape (LLaMA-7B: 32 layers, hidden 4096, 32 heads, intermediate 11008, vocab 32003;
ViT-L-14-336; perceiver depth 6; 8 cross-attention blocks) in float16, LoRA merged (the form
`pf1m flamingo-merge` writes and replicas should load), generating through the same
`FlamingoRunner.generate_ids` a replica uses.

Prompts: about 200 tokens each (190 to 210, so batches are left padded), one image after the
instruction (`<image><|endofchunk|>`), random pixels. Every sample gets exactly `--new-tokens`
(150) new tokens (`min_new_tokens` masks EOS), with no-repeat 3-grams, in two decodings:
sampling (top-k 20, top-p 0.9) and the paper's beam 3 with sampling. Batches 1, 16 and 64 (a
batch that does not fit is recorded as such). Each line: samples/s, output tokens/s and peak
GPU memory, with the device's name; the ratio is against batch 1 of the same decoding.

Then one profile of a short beam-3 run at the largest batch names where the time goes.

Goal (issue 11): PF-1M (1.17M samples, 1024 new tokens, beam 3) in 16 h on 8 GPUs, i.e.
>= 2.5 samples/s per GPU. With 150 new tokens this measures less than a tenth of that work per
sample; `prefill_s` (images, prompt and the first token) and `decode_ms_per_step` (each further
token, all rows) give the costs to scale by.

Run on a GPU machine (needs only torch, transformers, pillow, numpy):
`python -m bench.gpu_flamingo [--batches 1,16,64 --new-tokens 150 --out DIR]`.
Raw lines go to bench/results/gpu_flamingo_<device>.jsonl (or --out).
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ACTIVITIES = {
    "cuda": [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
    "cpu": [torch.profiler.ProfilerActivity.CPU],
}
LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-06,
    "initializer_range": 0.02,
    "vocab_size": 32000,
}
VOCAB = 32000
PROMPT_TOKENS = (190, 211)  # lengths drawn from this range
IMAGE_AT = 0.8  # the image marker sits after the instruction, near the end of the prompt
DECODINGS = {
    "sampling_topk20_topp0.9_nrng3": {"num_beams": 1},
    "beam3_sampling_topk20_topp0.9_nrng3": {"num_beams": 3},
}


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


SMOKE = {  # --smoke: the same code on a CPU at the tiny model's dimensions
    "llama": {**LLAMA_7B, "hidden_size": 40, "intermediate_size": 112, "num_hidden_layers": 8,
              "num_attention_heads": 4},
    "vision": (32, 8, 16, 2, 2, 4.0),
    "perceiver_depth": 2,
}  # fmt: skip


def build_model(device: str, dtype: torch.dtype, smoke: bool):
    """The full-size model with random weights, made on the device without any CPU init."""
    from pf1m.models.flamingo.model import FlamingoSpec, build
    from pf1m.models.flamingo.vision import VisionSpec

    vision = SMOKE["vision"] if smoke else (336, 14, 1024, 24, 16, 4.0)
    spec = FlamingoSpec(
        llama=SMOKE["llama"] if smoke else LLAMA_7B,
        vision=VisionSpec(*vision, quick_gelu=True),
        perceiver_depth=SMOKE["perceiver_depth"] if smoke else 6,
        num_latents=64,
        cross_attn_every_n_layers=4,
        vocab=VOCAB,
        lora=None,
    )
    net = build(spec, device, dtype)  # meta -> uninitialised on the device
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and name.endswith(".weight"):
                p.fill_(1.0)  # LayerNorm / RMSNorm scales
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("_gate"):
                p.fill_(0.5)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return net


def prompts(batch: int, seed: int, media: int, eoc: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        n = int(torch.randint(*PROMPT_TOKENS, (1,), generator=gen))
        row = [1] + torch.randint(3, VOCAB, (n - 1,), generator=gen).tolist()
        at = int(n * IMAGE_AT)
        row[at : at + 2] = [media, eoc]
        rows.append(row)
    return rows


def run(runner, batch: int, new_tokens: int, decoding: dict, seed: int = 0) -> dict:
    spec = runner.model.spec
    ids = prompts(batch, seed, spec.media_token_id, spec.eoc_token_id)
    size = spec.vision.image_size
    vision_x = torch.randn(
        batch, 1, 1, 3, size, size, generator=torch.Generator().manual_seed(seed)
    )
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
              temperature=1.0, top_k=20, top_p=0.9, no_repeat_ngram_size=3, seed=seed,
              **decoding)  # fmt: skip
    cuda = runner.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = runner.generate_ids(ids, vision_x, **kw)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    assert all(len(row) == new_tokens for row in out)
    return {"wall": wall, "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}


def profile(runner, batch: int, decoding: dict, out_dir: Path) -> None:
    """Where a short generate spends its time: top ops by GPU and by CPU time, and the GPU's
    busy fraction (kernel time / wall)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run(runner, batch, 4, decoding)  # warm
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = run(runner, batch, 16, decoding)
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)
    busy = 100 * gpu_us / 1e6 / t["wall"]
    note(
        f"profile batch {batch} {decoding}: wall {t['wall']:.2f}s, GPU kernels {gpu_us / 1e6:.2f}s"
    )
    note(f"GPU busy {busy:.0f}% of the wall time")
    by_gpu = events.table(sort_by="self_device_time_total", row_limit=15)
    by_cpu = events.table(sort_by="self_cpu_time_total", row_limit=15)
    (out_dir / "gpu_flamingo_profile.txt").write_text(by_gpu + "\n\n" + by_cpu + "\n")
    print(by_gpu, file=sys.stderr)
    print(by_cpu, file=sys.stderr)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def breakdown(runner, rows: int, steps: int = 20) -> dict:
    """One cached decoding step of the model alone (no sampling, processors or cache
    reordering), `rows` sequences of ~200 tokens: ms per step, and CUDA kernel launches per
    step (each one is CPU time: a step whose GPU work is shorter than its launches is
    CPU-bound)."""
    from torch.profiler import profile as torch_profile

    from pf1m.models.flamingo.model import mask_positions

    spec, lm = runner.model.spec, runner.model.lang_encoder
    ids = torch.tensor([r[:190] for r in prompts(rows, 0, spec.media_token_id, spec.eoc_token_id)])
    dev = runner.device
    ids, mask = ids.to(dev), torch.ones_like(ids).to(dev)
    size = spec.vision.image_size
    vision_x = torch.randn(rows, 1, 1, 3, size, size, device=dev, dtype=runner.dtype)

    def step(cache, n):
        m = torch.ones(rows, ids.shape[1] + n + 1, dtype=torch.long, device=dev)
        pos = torch.full((rows, 1), ids.shape[1] + n, device=dev)
        nxt = torch.full((rows, 1), 7, device=dev)
        return lm(input_ids=nxt, attention_mask=m, position_ids=pos, past_key_values=cache,
                  media=media, use_cache=True, logits_to_keep=1)  # fmt: skip

    with torch.inference_mode():
        media = runner.model.encode_vision(vision_x)
        cache = lm(input_ids=ids, attention_mask=mask, position_ids=mask_positions(mask),
                   media=media, use_cache=True).past_key_values  # fmt: skip
        step(cache, 0)
        sync(dev)
        start = time.perf_counter()
        for n in range(1, steps + 1):
            step(cache, n)
        sync(dev)
        ms = 1000 * (time.perf_counter() - start) / steps
        with torch_profile(activities=ACTIVITIES[dev.type]) as prof:
            step(cache, steps + 1)
            sync(dev)
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernelEx"))
    launch_us = sum(
        e.self_cpu_time_total for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernelEx")
    )
    gpu_ms = sum(e.self_device_time_total for e in events) / 1000
    note(f"forward step, {rows} rows: {ms:.1f} ms wall, {gpu_ms:.1f} ms GPU kernels, "
         f"{launches} launches taking {launch_us / 1000:.1f} ms CPU")  # fmt: skip
    return {"ms": ms, "gpu_ms": gpu_ms, "launches": launches, "launch_ms": launch_us / 1000}


def result(metric: str, value: float | None, unit: str, device: str) -> dict:
    """One JSON line of the project's format, with the device's name."""
    value = None if value is None else round(value, 3)
    return {"bench": "gpu_flamingo", "metric": metric, "value": value, "unit": unit,
            "baseline": None, "ratio": None, "target": None, "device": device}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--new-tokens", type=int, default=150)
    parser.add_argument("--decodings", default=",".join(DECODINGS))
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny dimensions on the CPU (a check)")
    parser.add_argument(
        "--breakdown", default="", help="rows (e.g. 1,192) to time one decoding step of alone"
    )
    args = parser.parse_args()
    from pf1m.models.flamingo.runner import FlamingoRunner

    device = "cpu" if args.smoke else "cuda"
    device_name = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name()
    start = time.perf_counter()
    dtype = torch.float32 if args.smoke else torch.float16
    runner = FlamingoRunner(build_model(device, dtype, args.smoke), tokenizer=None)
    note(f"{device_name}: model built in {time.perf_counter() - start:.1f}s")
    out_dir = Path(args.out) if args.out else ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    results = out_dir / f"gpu_flamingo_{slug}.jsonl"
    lines, largest = [], 1
    for name in args.decodings.split(","):
        decoding = DECODINGS[name]
        run(runner, 1, 4, decoding)  # warm-up: kernels, allocator
        base = None
        for batch in [int(b) for b in args.batches.split(",")]:
            try:
                t = run(runner, batch, args.new_tokens, decoding)
                first = run(runner, batch, 1, decoding)  # prefill (vision, prompt) + one step
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                note(f"{name} batch {batch}: does not fit")
                lines.append(result(f"{name}_batch{batch}", None, "out of memory", device_name))
                continue
            largest = max(largest, batch)
            rate = batch / t["wall"]
            base = base or rate
            tag = f"{name}_batch{batch}_{args.new_tokens}_new_tokens"
            step_ms = 1000 * (t["wall"] - first["wall"]) / (args.new_tokens - 1)
            for metric, value, unit in (
                ("samples_per_s", rate, "samples/s"),
                ("output_tokens_per_s", rate * args.new_tokens, "tokens/s"),
                ("peak_memory", t["peak_gb"], "GiB"),
                ("prefill_s", first["wall"], "s"),
                ("decode_ms_per_step", step_ms, "ms"),
            ):
                line = result(f"{metric}_{tag}", value, unit, device_name)
                if metric == "samples_per_s":  # against batch 1 of the same decoding
                    line.update(baseline=round(base, 3), ratio=round(rate / base, 3))
                lines.append(line)
                print(json.dumps(line), flush=True)
            results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    for rows in [int(r) for r in args.breakdown.split(",") if r]:
        b = breakdown(runner, rows)
        for metric, value, unit in (
            ("forward_step_ms", b["ms"], "ms"),
            ("forward_step_gpu_kernel_ms", b["gpu_ms"], "ms"),
            ("forward_step_kernel_launches", b["launches"], "launches"),
            ("forward_step_launch_cpu_ms", b["launch_ms"], "ms"),
        ):
            lines.append(result(f"{metric}_{rows}_rows_190_tokens", value, unit, device_name))
            print(json.dumps(lines[-1]), flush=True)
        results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    if not args.no_profile:
        profile(runner, largest, DECODINGS["beam3_sampling_topk20_topp0.9_nrng3"], out_dir)


if __name__ == "__main__":
    main()
