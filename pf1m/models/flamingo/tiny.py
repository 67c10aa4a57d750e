"""A tiny random-weight Polite Flamingo in the released file layout, for demos and tests.

`build_tiny(out, seed)` writes what a user downloads for the real model, at the reference
fixture's dimensions (LLaMA: 8 layers, hidden 40; ViT: width 16 at 32 px; perceiver depth 2):

- `llama/`: a Hugging Face LLaMA folder (config, fp16 `pytorch_model.bin` with the fp16
  `rotary_emb.inv_freq` buffers real conversions carry, a sentencepiece `tokenizer.model`
  trained here on the demo text with LLaMA's settings);
- `clip/`: an open_clip model config JSON and its fp16 weights (`open_clip_pytorch_model.bin`);
- `adapter/adapter_config.json`: the guanaco-style peft config (r, lora_alpha, targets);
- `openflamingo_checkpoint.pt`: perceiver, cross-attention (under both names) and the
  embeddings resized to vocab + 3, as the OpenFlamingo v1 checkpoint;
- `polite_flamingo.pt`: the LoRA and the embeddings, as the gen1 Polite Flamingo file.

Weights are random (rewrites are noise); they exist to run the real loading and generation
paths offline, in seconds on a CPU.
"""

import io
import json
from pathlib import Path

import torch

from pf1m.models.flamingo.accounting import EMBED, LM_HEAD
from pf1m.models.flamingo.lora import LoraSpec
from pf1m.models.flamingo.model import FlamingoModel, FlamingoSpec
from pf1m.models.flamingo.vision import VisionSpec

VOCAB = 640
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 40,
    "intermediate_size": 112,
    "num_attention_heads": 4,
    "num_hidden_layers": 8,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-06,
    "initializer_range": 0.02,
    "vocab_size": VOCAB,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}
CLIP = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 16, "head_width": 8, "layers": 2},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}
CLIP_NAME = "pf-tiny-vit"
LORA = LoraSpec(
    8, 16.0, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
)
PERCEIVER_DEPTH = 2
GATES = (0.7, 0.5)  # attn_gate, ff_gate: open, so the images change the text
LORA_B_STD = 0.05  # trained LoRA has non-zero B; the authors' init would leave it zero
# LLaMA's sentencepiece settings (identity normalisation, dummy prefix, digits split, bytes)
SENTENCEPIECE = dict(
    vocab_size=VOCAB,
    model_type="bpe",
    byte_fallback=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    num_threads=1,
    minloglevel=2,
)
# phrases of the paper's prompt, so the tokenizer has pieces for them
PROMPT_TEXT = [
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.",
    "### Human: ### Assistent: (Drafted Response): (Revised Response):",
]


def train_tokenizer() -> bytes:
    import sentencepiece as spm

    from pf1m.demo.data import corpus

    buf = io.BytesIO()
    texts = PROMPT_TEXT * 20 + corpus()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, **SENTENCEPIECE)
    return buf.getvalue()


def _spec() -> FlamingoSpec:
    return FlamingoSpec(
        llama=LLAMA,
        vision=VisionSpec.from_open_clip(CLIP, quick_gelu=False),
        perceiver_depth=PERCEIVER_DEPTH,
        num_latents=64,
        cross_attn_every_n_layers=4,
        vocab=VOCAB,
        lora=LORA,
    )


def _random_model(seed: int) -> FlamingoModel:
    torch.manual_seed(seed)
    net = FlamingoModel(_spec()).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("attn_gate"):
                p.fill_(GATES[0])
            elif name.endswith("ff_gate"):
                p.fill_(GATES[1])
            elif ".lora_B." in name:
                p.normal_(0.0, LORA_B_STD)
            elif name.endswith("_proj.weight") and ".decoder_layer." in name:
                p.normal_(0.0, LLAMA["initializer_range"])  # LLaMA's init of its projections
    return net


def _llama_state(state: dict[str, torch.Tensor], head_dim: int) -> dict[str, torch.Tensor]:
    """The base LLaMA's weights by Hugging Face names (fp16, LLaMA's own vocabulary rows)."""
    out = {}
    prefix = "lang_encoder.model.layers."
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for k, v in state.items():
        if ".lora_" in k or ".gated_cross_attn_layer." in k:
            continue
        if k.startswith(prefix):
            layer, rest = k[len(prefix) :].split(".decoder_layer.")
            out[f"model.layers.{layer}.{rest}"] = v
            if rest == "self_attn.q_proj.weight":
                out[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq
        elif k in (EMBED, LM_HEAD):
            out[k.removeprefix("lang_encoder.")] = v[:VOCAB]
        elif k.startswith("lang_encoder."):
            out[k.removeprefix("lang_encoder.")] = v
    return {k: v.half().contiguous() for k, v in out.items()}


def _clip_state(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """open_clip names: the tower, plus `ln_post`/`proj` and a text tower as real files have."""
    gen = torch.Generator().manual_seed(seed)
    width, embed = CLIP["vision_cfg"]["width"], CLIP["embed_dim"]
    out = {
        k.removeprefix("vision_encoder."): v
        for k, v in state.items()
        if k.startswith("vision_encoder.")
    }
    out["visual.ln_post.weight"] = torch.ones(width)
    out["visual.ln_post.bias"] = torch.zeros(width)
    out["visual.proj"] = torch.randn(width, embed, generator=gen) * width**-0.5
    text = CLIP["text_cfg"]
    out["token_embedding.weight"] = torch.randn(text["vocab_size"], text["width"], generator=gen)
    out["positional_embedding"] = torch.randn(text["context_length"], text["width"], generator=gen)
    out["text_projection"] = torch.randn(text["width"], embed, generator=gen)
    out["logit_scale"] = torch.tensor(4.6052)
    return {k: v.half().contiguous() for k, v in out.items()}


def build_tiny(out: str | Path, seed: int = 0) -> Path:
    """Write the tiny model's files under `out`; returns `out`."""
    out = Path(out)
    for sub in ("llama", "clip", "adapter"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    net = _random_model(seed)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]

    llama = out / "llama"
    (llama / "tokenizer.model").write_bytes(train_tokenizer())
    (llama / "config.json").write_text(json.dumps(LLAMA, indent=2) + "\n")
    (llama / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, indent=2) + "\n"
    )
    (llama / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
            },
            indent=2,
        )
        + "\n"
    )
    (llama / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}) + "\n"
    )
    torch.save(_llama_state(state, head_dim), llama / "pytorch_model.bin")

    (out / "clip" / f"{CLIP_NAME}.json").write_text(json.dumps(CLIP, indent=2) + "\n")
    torch.save(_clip_state(state, seed), out / "clip" / "open_clip_pytorch_model.bin")

    (out / "adapter" / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": LORA.r,
                "lora_alpha": LORA.alpha,
                "lora_dropout": 0.05,
                "target_modules": list(LORA.targets),
                "bias": "none",
                "inference_mode": True,
            },
            indent=2,
        )
        + "\n"
    )

    flamingo = {}
    for k, v in state.items():
        if k.startswith("perceiver.") or k == EMBED:
            flamingo[k] = v
        elif ".gated_cross_attn_layer." in k:  # the authors' files hold both names
            flamingo[k] = v
            layer, rest = k.removeprefix("lang_encoder.model.layers.").split(
                ".gated_cross_attn_layer."
            )
            flamingo[f"lang_encoder.gated_cross_attn_layers.{layer}.{rest}"] = v
    torch.save(flamingo, out / "openflamingo_checkpoint.pt")
    polite = {k: v for k, v in state.items() if ".lora_" in k or k == EMBED}
    torch.save(polite, out / "polite_flamingo.pt")
    return out


def tiny_rewriter_fields(out: str | Path) -> dict:
    """`rewriter.model` and `rewriter.flamingo` for a folder `build_tiny` wrote (gen1 order)."""
    out = Path(out)
    return {
        "model": str(out / "llama"),
        "flamingo": {
            "vision": str(out / "clip" / f"{CLIP_NAME}.json"),
            "vision_pretrained": str(out / "clip" / "open_clip_pytorch_model.bin"),
            "cross_attn_every_n_layers": 4,
            "checkpoints": [
                str(out / "openflamingo_checkpoint.pt"),
                str(out / "polite_flamingo.pt"),
            ],
            "lora": {"path": str(out / "adapter")},
        },
    }
