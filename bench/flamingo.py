"""What batching buys the `flamingo` backend on a CPU: the same runner (`FlamingoRunner`, the
tiny random Polite Flamingo of `pf1m demo-models`, fp32) generating for the same 16 prompts in
one batch of 16 against 16 calls of one, in samples/s.

Both sides decode alike: sampling with top-k 20, top-p 0.9, temperature 1 and exactly
`--new-tokens` (64) new tokens per sample: `min_new_tokens` = `max_new_tokens`, so
transformers' MinNewTokensLengthLogitsProcessor masks EOS until the last step (checked: every
answer has exactly that many ids). Prompts are the paper's polite template on demo samples,
one image each (`<image><|endofchunk|>` after the instruction).

Lines: (a) no-repeat 3-grams, target ratio >= 4; (b) without no-repeat; (c) beam 3 with
sampling and no-repeat 3 (the paper's decoding). Repeats of both sides are interleaved and each
side keeps its best. Each comparison is given twice: in samples per second of wall-clock time,
and in samples per second of this process's CPU time (torch on one thread), which other
processes on a shared machine do not disturb (two cores shared by several engineers made
single wall-clock runs differ by up to 8x).

Run: `python -m bench.flamingo [--new-tokens 64 --repeats 3 --threads 1]`. Raw lines also go to
bench/results/flamingo_cpu.jsonl.
"""

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench.common import emit, note

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "flamingo_cpu.jsonl"
BATCH = 16
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATE = (  # the paper preset's rewriter template
    "{system}\n### Human: {instruction}\n### Assistent: (Drafted Response): {raw}\n"
    " (Revised Response): "
)
MARKER = "<image><|endofchunk|>"


def prompts(n: int) -> tuple[list[str], list[list[Image.Image]]]:
    """`n` demo samples in the polite template, each with its first image after the text."""
    from pf1m.demo.data import make_sample

    texts, images = [], []
    index = 0
    while len(texts) < n:
        _, record, payloads, _ = make_sample(index, seed=0)
        index += 1
        if not payloads:
            continue
        instruction = record["instruction"].replace("<image>", "").strip()
        texts.append(
            TEMPLATE.format(
                system=SYSTEM, instruction=f"{instruction} {MARKER}", raw=record["response"]
            )
        )
        images.append([Image.open(io.BytesIO(payloads[0])).convert("RGB")])
    return texts, images


def rate(runner, texts, images, batch: int, new_tokens: int, **decoding) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second) generating for every prompt,
    `batch` prompts per call."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        out = runner.generate(
            texts[i : i + batch], images[i : i + batch], max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=20, top_p=0.9,
            length_penalty=1.0, repetition_penalty=1.0, stop=[], seed=i, **decoding,
        )  # fmt: skip
        assert all(len(g.new_ids) == new_tokens for g in out), [len(g.new_ids) for g in out]
    n = len(texts)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pf1m.models.flamingo import FlamingoRunner
    from pf1m.models.flamingo.tiny import build_tiny, tiny_rewriter_fields
    from pf1m.schemas.config import Flamingo

    with tempfile.TemporaryDirectory() as work:
        fields = tiny_rewriter_fields(build_tiny(Path(work) / "flamingo", seed=0))
        runner = FlamingoRunner.load(
            fields["model"], Flamingo.model_validate(fields["flamingo"]), torch.float32, "cpu"
        )
    texts, images = prompts(BATCH)
    note(f"prompt tokens: {[len(runner.encode(t)) for t in texts]}")
    variants = [
        ("topk20_topp0.9_nrng3", {"num_beams": 1, "no_repeat_ngram_size": 3}, 4.0),
        ("topk20_topp0.9", {"num_beams": 1, "no_repeat_ngram_size": None}, None),
        ("beam3_sampling_topk20_topp0.9_nrng3", {"num_beams": 3, "no_repeat_ngram_size": 3}, None),
    ]
    lines = []
    for name, decoding, target in variants:
        rate(runner, texts[:2], images[:2], 2, 4, **decoding)  # warm-up
        batched, single = [], []
        for rep in range(args.repeats):
            batched.append(rate(runner, texts, images, BATCH, args.new_tokens, **decoding))
            single.append(rate(runner, texts, images, 1, args.new_tokens, **decoding))
            note(f"{name} rep {rep}: batch {BATCH} {batched[-1]}, batch 1 {single[-1]} (wall, cpu)")
        tag = f"batch{BATCH}_vs_batch1_{name}_{args.new_tokens}_new_tokens"
        for i, clock in enumerate(("wall", "cpu")):
            best, base = max(b[i] for b in batched), max(s[i] for s in single)
            unit = f"samples/{clock}-s"
            lines.append(emit("flamingo", f"samples_per_{clock}_s_{tag}", best, unit, base, target))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
