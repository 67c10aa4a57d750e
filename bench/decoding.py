"""What the rewriter's decoding options cost (issue: rewriter fidelity). Each line compares a
variant with plain sampling on vLLM, on the same requests, measured in the same run with the
repeats of both sides interleaved (two shared cores make single runs noisy; each side keeps
its best):

(a) `no_repeat_ngram_size=3` (vLLM's per-request n-gram processor) with long outputs;
    target >= 0.9 of plain sampling's samples/s.
(b) beam search, width 3 (vLLM's beam search) vs sampling; no target: the price of the option.
(c) the transformers backend (batched `generate`) vs vLLM; no target.

Run: `make bench` or `python -m bench.decoding [--samples N --ngram-tokens T --beam-tokens T]`.
"""

import argparse
import tempfile
from pathlib import Path

import ray

from bench.common import demo_inputs, emit, note
from bench.rewriter import CONFIG, load_requests, rewriter_alone
from pf1m.pipeline.driver import absolutize, start_rewriters
from pf1m.pipeline.local_ray import start_local_ray
from pf1m.schemas.config import load_config


def compare(name: str, base: list[str], variant: list[str], requests, batch: int, repeats: int):
    """(variant samples/s, plain samples/s), both replicas alive, repeats interleaved."""
    plain_cfg = absolutize(load_config(CONFIG, base))
    variant_cfg = absolutize(load_config(CONFIG, [*base, *variant]))
    plain = start_rewriters(plain_cfg, f"bench-{name}-plain")
    other = start_rewriters(variant_cfg, f"bench-{name}")
    warm = requests[: batch * 2]
    rewriter_alone(plain, warm, batch)
    rewriter_alone(other, warm, batch)
    plain_rates, variant_rates = [], []
    for rep in range(repeats):
        p_rate, p_tokens = rewriter_alone(plain, requests, batch)
        v_rate, v_tokens = rewriter_alone(other, requests, batch)
        plain_rates.append(p_rate)
        variant_rates.append(v_rate)
        note(
            f"{name} rep {rep}: plain {p_rate:.2f} samples/s ({p_tokens} tokens), "
            f"variant {v_rate:.2f} samples/s ({v_tokens} tokens)"
        )
    for actor in plain + other:
        ray.kill(actor)
    return max(variant_rates), max(plain_rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--ngram-tokens", type=int, default=256)
    parser.add_argument("--beam-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--lines", default="ngram,beam,transformers", help="comma-separated subset to run"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf1m-bench-"))
    shards, models = demo_inputs(work, args.samples, 4)
    # Two replicas at once on two cores: small logical CPU requests so both fit.
    base = [
        f"input={shards}/*.tar",
        f"output={work / 'unused'}",
        f"rewriter.model={models['rewriter']}",
        "resources.cpus_per_replica=0.5",
    ]
    cfg = absolutize(load_config(CONFIG, base))
    batch = cfg.resources.batch_size

    start_local_ray()
    requests = [r for r, _ in load_requests(cfg, shards, "<image>")]

    # name -> (variant overrides, max tokens, metric, target)
    variants = {
        "ngram": (["rewriter.decoding.no_repeat_ngram_size=3"], args.ngram_tokens,
                  "ngram3_vs_plain_sampling", 0.9),
        "beam": (["rewriter.decoding.beam_width=3"], args.beam_tokens, "beam3_vs_sampling", None),
        "transformers": (["rewriter.backend=transformers"], args.beam_tokens,
                         "transformers_vs_vllm", None),
    }  # fmt: skip
    for name in args.lines.split(","):
        variant, tokens, metric, target = variants[name]
        sized = [*base, f"rewriter.decoding.max_tokens={tokens}"]
        value, plain = compare(name, sized, variant, requests, batch, args.repeats)
        emit("decoding", f"{metric}_samples_per_s_{tokens}_tokens", value, "samples/s", plain,
             target)  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    main()
