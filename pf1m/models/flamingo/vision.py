"""The CLIP vision tower, returning the patch tokens the authors' open_clip returned.

OpenFlamingo v1 feeds the perceiver `visual(x)[1]`: the patch tokens of the last transformer
block. open_clip up to 2.22 returned them BEFORE `ln_post` (which it applied to the pooled class
token only); later versions normalise them. This module is the same ViT with open_clip's
parameter names (so open_clip weights load as they are), returning the pre-`ln_post` tokens
without any projection. `ln_post` and `proj` are not part of it: they never touch the tokens.

The architecture comes from an open_clip model config (`vision_cfg`); only the options of the
plain OpenAI-style ViT are supported, anything else is refused by `VisionSpec.from_open_clip`.
"""

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

# vision_cfg fields that do not change the patch tokens (pooling, training-time dropout)
_IGNORED = {"pool_type", "final_ln_after_pool", "output_tokens", "patch_dropout", "embed_cls"}
_DEFAULT_HEAD_WIDTH = 64  # open_clip's CLIPVisionCfg default
_DEFAULT_MLP_RATIO = 4.0


@dataclass(frozen=True)
class VisionSpec:
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    quick_gelu: bool

    @classmethod
    def from_open_clip(cls, model_cfg: dict, quick_gelu: bool) -> "VisionSpec":
        """From an open_clip model config (`{"vision_cfg": {...}, "quick_gelu": ...}`)."""
        vc = dict(model_cfg["vision_cfg"])
        known = {"image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio"}
        odd = sorted(
            k
            for k, v in vc.items()
            if k not in known | _IGNORED and v not in (None, False, 0, 0.0, "learnable")
        )
        if odd or vc.get("embed_cls") is False or vc.get("pool_type", "tok") != "tok":
            raise ValueError(
                f"vision: open_clip option(s) {', '.join(odd) or 'pool_type/embed_cls'} are not "
                "supported (only the plain ViT of the OpenAI CLIP models)"
            )
        size = vc["image_size"]
        if isinstance(size, list | tuple):
            if size[0] != size[1]:
                raise ValueError(f"vision: non-square image_size {size} is not supported")
            size = size[0]
        width = vc["width"]
        return cls(
            image_size=int(size),
            patch_size=int(vc["patch_size"]),
            width=int(width),
            layers=int(vc["layers"]),
            heads=width // vc.get("head_width", _DEFAULT_HEAD_WIDTH),
            mlp_ratio=float(vc.get("mlp_ratio", _DEFAULT_MLP_RATIO)),
            quick_gelu=bool(quick_gelu or model_cfg.get("quick_gelu", False)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


class QuickGELU(nn.Module):
    """The activation the OpenAI CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """open_clip's LayerNorm: computed in the input dtype and cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        return super().forward(x).to(orig)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", act()),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, spec: VisionSpec) -> None:
        super().__init__()
        act = QuickGELU if spec.quick_gelu else nn.GELU
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(spec.width, spec.heads, spec.mlp_ratio, act)
            for _ in range(spec.layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """open_clip's `visual` tower up to its last block; `forward` gives the patch tokens."""

    def __init__(self, spec: VisionSpec) -> None:
        super().__init__()
        self.spec = spec
        grid = spec.image_size // spec.patch_size
        self.conv1 = nn.Conv2d(3, spec.width, spec.patch_size, spec.patch_size, bias=False)
        scale = spec.width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(spec.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, spec.width))
        self.ln_pre = LayerNorm(spec.width)
        self.transformer = Transformer(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, patches, width) tokens, before `ln_post`."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device
        )
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return x[:, 1:]


class VisionEncoder(nn.Module):
    """Holds the tower as `visual`: parameter names are the authors' `vision_encoder.visual.*`."""

    def __init__(self, spec: VisionSpec) -> None:
        super().__init__()
        self.visual = VisionTransformer(spec)
