"""The LoRA on LLaMA's projections, with peft's parameter names, and its merge.

Polite Flamingo's LoRA (guanaco-style, peft 0.4.0) sits on q, k, v, o, gate, up and down of
every decoder layer: `output = W x + (alpha / r) * B(A x)` (dropout is off in eval). Its tensors
are named `<proj>.lora_A.default.weight` ([r, in]) and `<proj>.lora_B.default.weight`
([out, r]), the base weight stays `<proj>.weight`, exactly as in the released files.
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

ADAPTER = "default"  # peft's adapter name in the released key names
# The Linear modules of a LLaMA decoder layer that a LoRA target may name.
PROJECTIONS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @classmethod
    def from_peft_config(cls, config: dict) -> "LoraSpec":
        """From a peft `adapter_config.json` (r, lora_alpha, target_modules)."""
        targets = config.get("target_modules") or []
        if isinstance(targets, str):  # a regular expression in peft: not the released form
            raise ValueError(f"lora: target_modules as a pattern ({targets!r}) is not supported")
        return cls(int(config["r"]), float(config["lora_alpha"]), tuple(targets))

    def unmatched(self) -> list[str]:
        """Targets that name no LLaMA projection (peft would match them to nothing here)."""
        return [t for t in self.targets if t.rsplit(".", 1)[-1] not in PROJECTIONS]

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


class LoraLinear(nn.Module):
    """A bias-free Linear plus its low-rank update, unmerged (as the authors ran it)."""

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Linear; loads overwrite it
        self.lora_A = nn.ModuleDict({ADAPTER: nn.Linear(in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({ADAPTER: nn.Linear(r, out_features, bias=False)})
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A[ADAPTER], self.lora_B[ADAPTER]
        return F.linear(x, self.weight) + b(a(x.to(a.weight.dtype))) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """W + scaling * B A, computed in float32, in float32."""
        a = self.lora_A[ADAPTER].weight.float()
        b = self.lora_B[ADAPTER].weight.float()
        return self.weight.float() + (b @ a) * self.scaling


def apply_lora(decoder_layer: nn.Module, spec: LoraSpec) -> None:
    """Replace the targeted projections of one decoder layer by `LoraLinear`s."""
    for name in spec.targets:
        proj = name.rsplit(".", 1)[-1]
        parent = getattr(decoder_layer, PROJECTIONS[proj])
        old = getattr(parent, proj)
        if old.bias is not None:
            raise ValueError(f"lora: {proj} has a bias, which this LoRA does not support")
        setattr(parent, proj, LoraLinear(old.in_features, old.out_features, spec.r, spec.scaling))


def merge_lora(module: nn.Module) -> int:
    """Fold every `LoraLinear` under `module` into a plain Linear (fp32 merge, then the
    weight's dtype); returns how many were merged."""
    merged = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLinear):
                w = child.merged_weight().to(child.weight.dtype)
                lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
                lin.weight = nn.Parameter(w, requires_grad=False)
                setattr(parent, name, lin)
                merged += 1
    return merged
