"""Where a loader finds its weights: a local path, or a hub repository at the commit the run
pinned (`ORG/NAME@SHA`, `ORG/NAME@SHA:FILE`, `hf-hub:ORG/NAME@SHA`, tag `openai@SHA`; see
pf1m/schemas/modelref.py). Every download names that commit as `revision=`, so every node of a
cluster reads the same weights whatever the hub's `main` is by then.
"""

from pathlib import Path
from typing import Any

from pf1m.schemas.modelref import LOCAL_DIR, load_args, local_path, open_clip_hub, parse_hub

# What a pinned `hf-hub:` open_clip model needs besides its weights: its config and, for
# models with a Hugging Face tokenizer, the tokenizer files (open_clip reads them from the
# model's folder).
OPEN_CLIP_SIDE_FILES = ["*.json", "*.txt", "*.model"]


def pretrained(text: str) -> tuple[str, dict[str, Any]]:
    """(path or repo id, kwargs) for `from_pretrained`-style loaders (transformers,
    sentence-transformers, peft): `{"revision": SHA}` for a pinned hub model."""
    name, revision = load_args(text)
    return name, ({"revision": revision} if revision else {})


def folder(text: str) -> Path:
    """A model folder: the local path, or the hub snapshot at the pinned commit (fetched into
    the hub cache when this node has none)."""
    local = local_path(text)
    if local is not None:
        return local
    from huggingface_hub import snapshot_download

    ref = parse_hub(text)
    return Path(snapshot_download(ref.repo, revision=ref.revision))


def fetch_file(text: str) -> Path:
    """A weights file: the local path, or `ORG/NAME@SHA:FILE` fetched at that commit."""
    local = local_path(text)
    if local is not None:
        return local
    from huggingface_hub import hf_hub_download

    ref = parse_hub(text, with_file=True)
    if ref.filename is None:
        raise FileNotFoundError(f"{text}: no such file, nor a hub file ORG/NAME:FILE")
    return Path(hf_hub_download(ref.repo, ref.filename, revision=ref.revision))


def open_clip_args(model: str, weights: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """(model name, pretrained, extra keyword arguments) for
    `open_clip.create_model_and_transforms` (and the name for `get_tokenizer`) that load the
    pinned commit: open_clip's own downloads take no revision, so pinned weights are fetched
    here and handed over as a folder (`local-dir:`) or a file, with the preprocessing and
    activation the tag would have set."""
    hub = open_clip_hub(model)
    if hub is not None and hub.revision:
        from huggingface_hub import snapshot_download
        from open_clip.pretrained import download_pretrained_from_hf

        download_pretrained_from_hf(hub.repo, revision=hub.revision)  # safetensors first
        snapshot = snapshot_download(
            hub.repo, revision=hub.revision, allow_patterns=OPEN_CLIP_SIDE_FILES
        )
        return LOCAL_DIR + snapshot, None, {}
    if weights is None or model.startswith(LOCAL_DIR) or hub is not None:
        return model, weights, {}
    if local_path(weights) is not None:
        return model, weights, {}
    if ":" in weights:  # ORG/NAME@SHA:FILE
        return model, str(fetch_file(weights)), {}
    tag, revision = load_args(weights)
    if revision is None:
        return model, weights, {}
    from open_clip.pretrained import download_pretrained_from_hf, get_pretrained_cfg

    cfg = get_pretrained_cfg(model, tag)
    repo, filename = cfg["hf_hub"].rsplit("/", 1)
    path = download_pretrained_from_hf(repo, filename=filename or None, revision=revision)
    extra = {
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
    }
    return model, path, extra
