"""One folder instead of five sources: the loaded model with its LoRA merged, as safetensors.

The released model is assembled from a LLaMA folder, open_clip weights and two or three
checkpoint files, with an unmerged LoRA. `merge` loads them once (in float32, so the LoRA is
merged in float32), folds the LoRA into the projections, and writes:

- `model.safetensors` (or shards with an index) in the chosen dtype, every parameter by the
  authors' names, the added-token rows of `lm_head` included;
- `config.json` holding the model's dimensions under `pf1m_flamingo` and where it came from;
- the tokenizer files of the LLaMA folder, and `load_report.txt` (the sources' load table).

`rewriter.model` pointed at this folder loads it with no checkpoints and no LoRA configured:
each replica memory-maps one file set, and the run's fingerprint covers one folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pf1m.models.flamingo.errors import FlamingoLoadError
from pf1m.models.flamingo.loader import MERGED_KEY, load
from pf1m.models.flamingo.lora import merge_lora

if TYPE_CHECKING:  # pydantic is not needed to run the model (e.g. a bare GPU machine)
    from pf1m.schemas.config import Flamingo

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
MAX_SHARD = "5GB"


def merge(
    model: str,
    cfg: Flamingo,
    out: Path,
    dtype: torch.dtype = torch.float16,
    device: str = "cpu",
    revision_map: dict | None = None,
    added_rows: torch.Tensor | None = None,
) -> Path:
    """Write the merged folder `out` (which must be new or empty); returns it."""
    from huggingface_hub import save_torch_state_dict

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FlamingoLoadError(f"--to {out}: the folder exists and is not empty")
    net, parts, report = load(model, cfg, torch.float32, device, revision_map, added_rows)
    if parts.merged:
        raise FlamingoLoadError(f"{model} is a merged folder already")
    merged = merge_lora(net.lang_encoder)
    net.to(dtype)  # tensor by tensor: the float32 copy is freed as it goes
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, out, max_shard_size=MAX_SHARD, metadata={"format": "pt"})
    spec = replace(parts.spec, lora=None)
    config = {
        MERGED_KEY: spec.to_dict(),
        "torch_dtype": str(dtype).removeprefix("torch."),
        "merged_from": {
            "model": model,
            "flamingo": cfg.model_dump(),
            "lora_modules_merged": merged,
        },
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (parts.folder / name).is_file():
            shutil.copyfile(parts.folder / name, out / name)
    (out / "load_report.txt").write_text(report + "\n")
    return out
