"""Scorer throughput at full size on one GPU, with random weights built from configs.

CLIP ViT-L-14-336 (open_clip, images/s), DeBERTa-v3-large reward and DeBERTa-v3-base NLI
(pairs/s of fixed-length token pairs), mpnet-base STS (pairs/s: two mean-pooled encodes per
pair). No weights are downloaded and no tokenizer is needed: inputs are random token ids and
random pixels of the real shapes. Runs without Ray or this project's config code, from
PYTHONPATH, on a machine with torch and transformers (and open_clip, carried as a wheel).

    python -m bench.gpu_scorers [--seq-len 256] [--seconds 8] [--small]

Prints JSON lines; `baseline` is the same model at batch size 1 (the paper code's per-sample
calls), so `ratio` is the batching gain.
"""

import argparse
import json
import sys
import time

import torch


def timed(fn, items_per_call: int, seconds: float, device: str) -> float:
    """Items per second of `fn`, after one warm-up call, over at least `seconds`."""
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync()
        wall = time.perf_counter() - start
        if wall >= seconds and calls >= 3:
            return calls * items_per_call / wall


def deberta(large: bool, labels: int, small: bool):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    size = dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    )
    if not large:
        size = dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
        )
    if small:
        size = dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    cfg = DebertaV2Config(
        vocab_size=128100, max_position_embeddings=512, relative_attention=True,
        position_buckets=256, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        norm_rel_ebd="layer_norm", share_att_key=True, num_labels=labels, **size,
    )  # fmt: skip
    return DebertaV2ForSequenceClassification(cfg)


def mpnet(small: bool):
    from transformers import MPNetConfig, MPNetModel

    size = dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    if small:
        size = dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    return MPNetModel(MPNetConfig(vocab_size=30527, max_position_embeddings=514, **size))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per text pair")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--small", action="store_true", help="tiny shapes, to check the script on CPU"
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    torch.manual_seed(0)

    precision = str(dtype).removeprefix("torch.")
    print(f"# device: {gpu}, dtype: {precision}, seq_len: {args.seq_len}", file=sys.stderr)

    def report(metric, value, unit, baseline):
        print(json.dumps({
            "bench": "gpu_scorers", "metric": f"{metric}_{precision}", "value": round(value, 1),
            "unit": unit, "baseline": round(baseline, 1), "ratio": round(value / baseline, 2),
            "target": None,
        }), flush=True)  # fmt: skip

    def text_pairs(model, batch: int):
        ids = torch.randint(1000, 20000, (batch, args.seq_len), device=device)
        mask = torch.ones_like(ids)

        def run():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)

        return run

    batches = {"reward": 64, "nli": 128, "sts": 256, "clip": 128}
    for name, build in (
        ("reward", lambda: deberta(True, 1, args.small)),
        ("nli", lambda: deberta(False, 3, args.small)),
    ):
        model = build().to(device, dtype).eval()
        b = batches[name]
        batched = timed(text_pairs(model, b), b, args.seconds, device)
        single = timed(text_pairs(model, 1), 1, args.seconds / 2, device)
        report(f"{name}_pairs_per_s_batch{b}", batched, "pairs/s", single)
        del model

    model = mpnet(args.small).to(device, dtype).eval()
    b = batches["sts"]
    enc_b, enc_1 = text_pairs(model, b), text_pairs(model, 1)
    # A pair is two encodes (raw annotation and rewrite), mean pooling is negligible.
    batched = timed(lambda: (enc_b(), enc_b()), b, args.seconds, device)
    single = timed(lambda: (enc_1(), enc_1()), 1, args.seconds / 2, device)
    report(f"sts_pairs_per_s_batch{b}", batched, "pairs/s", single)
    del model

    import open_clip

    clip = open_clip.create_model("ViT-B-32" if args.small else "ViT-L-14-336", pretrained=None)
    clip = clip.to(device, dtype).eval()
    side = clip.visual.image_size
    side = side[0] if isinstance(side, tuple | list) else side

    def images(batch: int):
        pixels = torch.randn(batch, 3, side, side, device=device, dtype=dtype)

        def run():
            with torch.inference_mode():
                clip.encode_image(pixels)

        return run

    b = batches["clip"]
    batched = timed(images(b), b, args.seconds, device)
    single = timed(images(1), 1, args.seconds / 2, device)
    report(f"clip_images_per_s_batch{b}", batched, "images/s", single)
    tokens = torch.randint(1, 49000, (b * 4, 77), device=device)

    def sentences(n: int):
        def run():
            with torch.inference_mode():
                clip.encode_text(tokens[:n])

        return run

    batched = timed(sentences(b * 4), b * 4, args.seconds, device)
    single = timed(sentences(1), 1, args.seconds / 2, device)
    report(f"clip_sentences_per_s_batch{b * 4}", batched, "sentences/s", single)


if __name__ == "__main__":
    main()
