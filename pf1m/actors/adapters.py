"""LoRA adapters for the rewriter backends: where their files are, the rank an engine must
accept, and the zero adapter that stands in for the base model on vLLM.

Why a zero adapter: on the CPU build of vLLM 0.32, when every LoRA slot (`max_loras`) holds
an adapter, a base-model request batched with LoRA requests is served with the last slot's
adapter applied (measured: every base request wrong in such batches, none in adapter-only
batches, none with a slot to spare). Routing base requests through an adapter whose B
matrices are zero gives exactly the base model's output whatever the build does with "no
LoRA" (tested against transformers + peft), costs one slot, and keeps one code path.
"""

import json
from pathlib import Path

from pf1m.models.hub import folder
from pf1m.schemas.config import Adapter

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted max_lora_rank values
BASE = "pf1m-base"  # the zero adapter's name


def local_dir(path: str) -> Path:
    """An adapter's directory: the path itself, or the hub snapshot at the pinned commit."""
    return folder(path)


def rank(path: Path) -> int:
    return int(json.loads((path / "adapter_config.json").read_text())["r"])


def vllm_max_rank(dirs: list[Path]) -> int:
    """The smallest rank vLLM accepts that covers every adapter."""
    need = max(rank(d) for d in dirs)
    return next(r for r in VLLM_RANKS if r >= need)


def write_zero_adapter(like: Path, out: Path) -> Path:
    """`like`'s config and tensors with every lora_B zeroed: a LoRA that changes nothing."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text((like / "adapter_config.json").read_text())
    tensors = load_file(like / "adapter_model.safetensors")
    zeroed = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()}
    save_file(zeroed, out / "adapter_model.safetensors")
    return out


def resolved(adapters: list[Adapter]) -> dict[str, Path]:
    return {a.name: local_dir(a.path) for a in adapters}
