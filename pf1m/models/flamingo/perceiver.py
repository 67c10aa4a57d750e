"""The perceiver resampler: each image's patch tokens become a fixed set of latents.

OpenFlamingo v1 (`helpers.py`): learned latents attend to [image tokens ; latents] in each of
`depth` layers (attention then feed-forward, both residual), then a final LayerNorm. No biases
in the Linear layers, exact GELU, no time or frame embeddings (the released model has none).
"""

import torch
from torch import nn

HEADS = 8
DIM_HEAD = 64
FF_MULT = 4


def feed_forward(dim: int, mult: int = FF_MULT) -> nn.Sequential:
    """LayerNorm, Linear up, GELU, Linear down (keys `0`, `1`, `3`)."""
    inner = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The authors' attention arithmetic: scaled q, max-subtracted softmax."""
    sim = torch.einsum("...id,...jd->...ij", q * q.shape[-1] ** -0.5, k)
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    return torch.einsum("...ij,...jd->...id", sim.softmax(dim=-1), v)


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int = HEADS, dim_head: int = DIM_HEAD) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # b t n (h d) -> b h t n d
        b, T, n, _ = t.shape
        return t.view(b, T, n, self.heads, -1).permute(0, 3, 1, 2, 4)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: (b, T, tokens, D) image features; latents: (b, T, n, D)."""
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        out = softmax_attention(self._split(q), self._split(k), self._split(v))
        b, h, T, n, d = out.shape
        return self.to_out(out.permute(0, 2, 3, 1, 4).reshape(b, T, n, h * d))


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, depth: int, num_latents: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim), feed_forward(dim)]) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, T, tokens, D) -> (b, T, num_latents, D)."""
        b, T = x.shape[:2]
        latents = self.latents.expand(b, T, *self.latents.shape)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)
