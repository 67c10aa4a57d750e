"""Gated cross-attention from text to image latents, and the v1 rule of which image a token sees.

The authors' copy of OpenFlamingo hard-codes `attend_previous=False` and
`only_attend_immediate_media=True`: a text token attends only the latents of the NEXT `<image>`
at or after its position; tokens after the last `<image>` attend none (their cross-attention
output is exactly zero) but still pass through the gated feed-forward. Left pads count as
text. During cached generation each step sees only new tokens, which hold no `<image>`, so
generated tokens attend no image.
"""

import torch
from torch import nn

from pf1m.models.flamingo.perceiver import DIM_HEAD, FF_MULT, HEADS, feed_forward


def media_index(input_ids: torch.Tensor, media_token_id: int) -> torch.Tensor:
    """(B, L) 1-based index of the image each token attends, 0 for none (the v1 rule)."""
    is_media = input_ids == media_token_id
    index = is_media.cumsum(dim=-1)
    index = index + (~is_media).long()
    return index.masked_fill(index > is_media.sum(dim=-1, keepdim=True), 0)


def media_index_or_none(input_ids: torch.Tensor, media_token_id: int) -> torch.Tensor | None:
    """`media_index`, or None when no token attends an image. A token that attends none gets
    exactly zero from the attention (its weights are zeroed and the projections have no bias),
    so such a call (every cached generation step) may skip the attention: same result."""
    index = media_index(input_ids, media_token_id)
    return index if bool(index.any()) else None


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim: int, dim_visual: int, heads: int = HEADS, dim_head: int = DIM_HEAD):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, media: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x: (B, L, dim) text; media: (B, T_img, n, dim_visual) latents; index: (B, L)."""
        B, T_img, n = media.shape[:3]
        h = self.heads
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(media.reshape(B, T_img * n, -1)).chunk(2, dim=-1)
        q, k, v = (t.view(B, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        sim = torch.einsum("bhid,bhjd->bhij", q * q.shape[-1] ** -0.5, k)
        image_of_key = torch.arange(T_img, device=x.device).repeat_interleave(n) + 1
        allowed = index[:, None, :, None] == image_of_key[None, None, None, :]
        sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1).masked_fill((index == 0)[:, None, :, None], 0.0)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return self.to_out(out.transpose(1, 2).reshape(B, x.shape[1], -1))


class GatedCrossAttentionBlock(nn.Module):
    """tanh-gated cross-attention, then a tanh-gated feed-forward applied to every token."""

    def __init__(self, dim: int, dim_visual: int) -> None:
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = feed_forward(dim, FF_MULT)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(
        self, x: torch.Tensor, media: torch.Tensor, index: torch.Tensor | None
    ) -> torch.Tensor:
        """`index` None: no token attends an image (see `media_index_or_none`)."""
        if index is not None:
            x = self.attn(x, media, index) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x
