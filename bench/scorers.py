"""Scorer throughput (issue: model filters), same inputs and torch threads on both sides.

- STS with the real all-MiniLM-L6-v2: the batched scorer actor (items from 16 concurrent
  8-item calls, as shards send them) vs the paper code's per-sample calls (one `encode` of the
  raw annotation and one of the rewrite per sample); target ratio >= 3.
- CLIP paragraph scoring with the tiny demo model: batched actor vs one sample per call.

Run: `python -m bench.scorers [--samples N]`.
"""

import argparse
import tempfile
import time
from pathlib import Path

import ray
import torch

from bench.common import emit, note
from pf1m.demo.data import make_sample
from pf1m.demo.models import build_clip, link_sts
from pf1m.filters.clip_paragraph import sentences, split_paragraphs
from pf1m.models.scorers.clip import ClipScorer
from pf1m.pipeline.local_ray import start_local_ray
from pf1m.schemas.config import ClipParagraphFilter, load_config

CONFIG = Path(__file__).resolve().parents[1] / "pf1m" / "configs" / "demo.yaml"
THREADS = 2  # the two cores, on both sides
STS_TASKS = ("caption", "region_caption", "change_caption")


def pairs(n: int) -> list[tuple[str, str]]:
    """Raw annotations of the demo data and a longer 'rewrite' of each."""
    out, i = [], 0
    while len(out) < n:
        _, rec, _, _ = make_sample(i, seed=0)
        i += 1
        if rec["task"] not in STS_TASKS:  # the samples the paper's STS filter sees
            continue
        raw = rec["response"]
        out.append((raw, f"Certainly! Here is a detailed answer. {raw.replace(chr(10), '. ')}."))
    return out


def clip_items(n: int, limit: int) -> list[dict]:
    out = []
    for i in range(n):
        _, rec, images, _ = make_sample(i * 7, seed=0)  # captions: one image each
        text = f"{rec['response']}\n\nThe picture is simple. It has a white background."
        out.append(
            {"images": images, "paragraphs": [sentences(p, limit) for p in split_paragraphs(text)]}
        )
    return out


def actor_rate(actor, name: str, items: list, call_size: int = 8, concurrent: int = 16) -> float:
    start = time.monotonic()
    refs, done = [], 0
    chunks = [items[i : i + call_size] for i in range(0, len(items), call_size)]
    for chunk in chunks:
        refs.append(actor.score.remote(name, chunk))
        if len(refs) >= concurrent:
            ready, refs = ray.wait(refs, num_returns=1)
            done += sum(r.value is not None for r in ray.get(ready[0]))
    done += sum(r.value is not None for res in ray.get(refs) for r in res)
    assert done == len(items), f"{len(items) - done} items not scored"
    return len(items) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--clip-samples", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pf1m-bench-"))
    sts_path, clip_path = link_sts(work), build_clip(work / "clip")
    cfg = load_config(
        CONFIG,
        [f"filters.sts.model={sts_path}", f"filters.clip_paragraph.model=local-dir:{clip_path}"],
    )
    scoring = cfg.scoring.model_copy(update={"torch_threads": THREADS})
    torch.set_num_threads(THREADS)

    # Paper code: one encode per text, one sample at a time.
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import cos_sim

    items = pairs(args.samples)
    model = SentenceTransformer(str(sts_path), device="cpu")
    model.encode("warm up")
    start = time.monotonic()
    for raw, rewrite in items:
        cos_sim(model.encode(raw), model.encode(rewrite))
    per_sample = len(items) / (time.monotonic() - start)

    clip_cfg = ClipParagraphFilter(model=f"local-dir:{clip_path}", threshold=0.0)
    citems = clip_items(args.clip_samples, clip_cfg.max_sentences)
    scorer = ClipScorer(clip_cfg, "cpu", chunk=1)
    scorer.score(citems[:1])
    start = time.monotonic()
    for item in citems:
        scorer.score([item])
    clip_single = len(citems) / (time.monotonic() - start)
    del model, scorer

    from pf1m.actors.scorer import ScorerActor

    start_local_ray()
    actor = ray.remote(ScorerActor).options(max_concurrency=4096, num_cpus=2).remote(
        cfg.filters, ["sts", "clip_paragraph"], scoring
    )  # fmt: skip
    ray.get(actor.names.remote())
    actor_rate(actor, "sts", items[:64])  # warm-up
    sts_batched = max(actor_rate(actor, "sts", items) for _ in range(2))
    actor_rate(actor, "clip_paragraph", citems[:32])
    clip_batched = max(actor_rate(actor, "clip_paragraph", citems) for _ in range(2))
    note(f"batches filled: {ray.get(actor.batch_stats.remote())}")
    ray.shutdown()

    emit(
        "scorers", "sts_minilm_actor_vs_per_sample_encode", sts_batched, "pairs/s", per_sample, 3.0
    )
    emit("scorers", "clip_tiny_actor_vs_per_sample", clip_batched, "samples/s", clip_single, None)


if __name__ == "__main__":
    main()
