"""LLaMA with a gated cross-attention block before every Nth decoder layer (OpenFlamingo v1).

transformers' own `LlamaForCausalLM` and `GenerationMixin` do the rest (KV cache, left padding,
beams, sampling, logits processors). Each original decoder layer is wrapped in a
`FlamingoLayer`, so its weights are named `model.layers.{i}.decoder_layer.*` and the block
`model.layers.{i}.gated_cross_attn_layer.*`, as in the released files.

The image latents travel as the `media` keyword: `forward` names it (so `generate` validates it
and expands it per beam, `repeat_interleave` like the authors' code), computes each call's
media index from that call's `input_ids` (the v1 rule, `cross_attention.py`) and hands both to
every layer through the decoder's keyword arguments. `forward` also names `position_ids`, so
`generate` keeps the mask-derived positions the caller gives it (transformers 5 builds them
only for a `forward` that names them).
"""

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from pf1m.models.flamingo.cross_attention import GatedCrossAttentionBlock, media_index_or_none
from pf1m.models.flamingo.lora import LoraSpec, apply_lora


class FlamingoLayer(nn.Module):
    """A decoder layer, preceded by a gated cross-attention block when it has one."""

    def __init__(self, gated_cross_attn_layer: GatedCrossAttentionBlock | None, decoder_layer):
        super().__init__()
        self.gated_cross_attn_layer = gated_cross_attn_layer
        self.decoder_layer = decoder_layer

    def forward(self, hidden_states, *args, media=None, media_index=None, **kwargs):
        if self.gated_cross_attn_layer is not None:
            if media is None:
                raise ValueError("Flamingo: a forward pass needs `media` (the image latents)")
            hidden_states = self.gated_cross_attn_layer(hidden_states, media, media_index)
        return self.decoder_layer(hidden_states, *args, **kwargs)


def has_cross_attention(layer: int, every: int) -> bool:
    """Blocks sit before layers every-1, 2*every-1, ... (3, 7, ..., 31 for every=4)."""
    return (layer + 1) % every == 0


class FlamingoLM(LlamaForCausalLM):
    def __init__(
        self,
        config: LlamaConfig,
        vis_dim: int,
        cross_attn_every_n_layers: int,
        media_token_id: int,
        lora: LoraSpec | None = None,
    ) -> None:
        super().__init__(config)
        self.media_token_id = media_token_id
        layers = []
        for i, layer in enumerate(self.model.layers):
            if lora is not None:
                apply_lora(layer, lora)
            block = None
            if has_cross_attention(i, cross_attn_every_n_layers):
                block = GatedCrossAttentionBlock(config.hidden_size, vis_dim)
            layers.append(FlamingoLayer(block, layer))
        self.model.layers = nn.ModuleList(layers)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        media: torch.Tensor | None = None,
        **kwargs,
    ):
        """As `LlamaForCausalLM.forward`, with `media`: (B, T_img, latents, vis_dim)."""
        if input_ids is None:
            raise ValueError("Flamingo: the media rule needs input_ids (not inputs_embeds)")
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            media=media,
            media_index=media_index_or_none(input_ids, self.media_token_id),
            **kwargs,
        )
