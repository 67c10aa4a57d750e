"""The whole Polite Flamingo: vision tower, perceiver, and LLaMA with cross-attention and LoRA.

Parameter names are the authors' (`vision_encoder.visual.*`, `perceiver.*`, `lang_encoder.*`),
so their checkpoint files load by name. `FlamingoSpec` holds every dimension; `build` makes the
module without touching memory (meta device) and then places it, so a 7B model is never
initialised on the CPU.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from pf1m.models.flamingo.language import FlamingoLM
from pf1m.models.flamingo.lora import LoraSpec
from pf1m.models.flamingo.perceiver import PerceiverResampler
from pf1m.models.flamingo.tokenizer import ADDED, BOS_ID, EOS_ID, PAD_ID
from pf1m.models.flamingo.vision import VisionEncoder, VisionSpec

DEFAULT_LATENTS = 64  # the perceiver's latents per image in OpenFlamingo v1


@dataclass(frozen=True)
class FlamingoSpec:
    llama: dict  # the LLaMA folder's config.json
    vision: VisionSpec
    perceiver_depth: int
    num_latents: int
    cross_attn_every_n_layers: int
    vocab: int  # sentencepiece vocabulary; the model has vocab + 3 rows (ADDED tokens)
    lora: LoraSpec | None = None

    @property
    def media_token_id(self) -> int:
        return self.vocab + 1

    @property
    def eoc_token_id(self) -> int:
        return self.vocab

    def llama_config(self) -> LlamaConfig:
        keep = {k: v for k, v in self.llama.items() if not k.startswith("_")}
        for k in ("transformers_version", "architectures", "torch_dtype", "dtype"):
            keep.pop(k, None)
        config = LlamaConfig(**keep)
        config.vocab_size = self.vocab + len(ADDED)
        config.pad_token_id, config.bos_token_id, config.eos_token_id = PAD_ID, BOS_ID, EOS_ID
        config.tie_word_embeddings = False
        return config

    def to_dict(self) -> dict:
        return {
            "llama": self.llama,
            "vision": self.vision.to_dict(),
            "perceiver_depth": self.perceiver_depth,
            "num_latents": self.num_latents,
            "cross_attn_every_n_layers": self.cross_attn_every_n_layers,
            "vocab": self.vocab,
            "lora": self.lora.to_dict() if self.lora else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FlamingoSpec":
        lora = d.get("lora")
        return cls(
            llama=d["llama"],
            vision=VisionSpec(**d["vision"]),
            perceiver_depth=int(d["perceiver_depth"]),
            num_latents=int(d["num_latents"]),
            cross_attn_every_n_layers=int(d["cross_attn_every_n_layers"]),
            vocab=int(d["vocab"]),
            lora=LoraSpec(lora["r"], lora["alpha"], tuple(lora["targets"])) if lora else None,
        )


class FlamingoModel(nn.Module):
    def __init__(self, spec: FlamingoSpec) -> None:
        super().__init__()
        self.spec = spec
        self.vision_encoder = VisionEncoder(spec.vision)
        self.perceiver = PerceiverResampler(
            spec.vision.width, spec.perceiver_depth, spec.num_latents
        )
        self.lang_encoder = FlamingoLM(
            spec.llama_config(),
            spec.vision.width,
            spec.cross_attn_every_n_layers,
            spec.media_token_id,
            spec.lora,
        )
        generation = self.lang_encoder.generation_config
        generation.pad_token_id, generation.bos_token_id = PAD_ID, BOS_ID
        generation.eos_token_id = EOS_ID

    def encode_vision(self, vision_x: torch.Tensor) -> torch.Tensor:
        """(B, T_img, 1, 3, H, W) images -> (B, T_img, latents, vis_dim), each image alone."""
        B, T, F = vision_x.shape[:3]
        if F != 1:
            raise ValueError(f"Flamingo: one frame per image, got {F}")
        tokens = self.vision_encoder.visual(vision_x.reshape(B * T * F, *vision_x.shape[3:]))
        return self.perceiver(tokens.reshape(B, T, F * tokens.shape[1], tokens.shape[2]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        vision_x: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of every prompt position (no cache)."""
        out = self.lang_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            media=self.encode_vision(vision_x),
            use_cache=False,
        )
        return out.logits

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision_x: torch.Tensor, **kw
    ) -> torch.Tensor:
        """transformers' `generate` with the image latents and mask-derived positions (as
        transformers 4.28 made them: cumsum - 1, pads 1). Returns prompt + new ids."""
        return self.lang_encoder.generate(
            input_ids,
            attention_mask=attention_mask,
            position_ids=mask_positions(attention_mask),
            media=self.encode_vision(vision_x),
            **kw,
        )


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions from the attention mask: cumsum - 1, left pads set to 1 (transformers 4.28)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def build(spec: FlamingoSpec, device: str | torch.device, dtype: torch.dtype) -> FlamingoModel:
    """The module on `device` in `dtype` with UNINITIALISED parameters (fill them all)."""
    with torch.device("meta"):
        model = FlamingoModel(spec)
    model = model.to(dtype=dtype).to_empty(device=device)
    reset_rotary(model, device)
    return model.eval().requires_grad_(False)


def reset_rotary(model: FlamingoModel, device: str | torch.device) -> None:
    """Rotary tables from the float32 formula, as transformers 4.28 built them (LLaMA folders
    of that time store `inv_freq` in fp16; a dtype cast of the module would round it too)."""
    config = model.lang_encoder.config
    model.lang_encoder.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
