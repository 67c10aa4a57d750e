"""Loading a Polite Flamingo from its released files (or a merged folder), with a pre-check.

`resolve` finds every file and the model's dimensions from config files and key listings
alone; `precheck` plans the load from key names and shapes (no weights in memory) and raises
`FlamingoLoadError` naming the group, tensor or file when the files cannot make the model;
`load` runs the same plan and copies the tensors, file after file, into a model built on the
target device. The load table (`Plan.table`) says where every group came from.

The rows of `<|endofchunk|>`, `<image>` and `<PAD>` in `lm_head` are in no released file (the
authors' `resize_token_embeddings` drew them from N(0, 0.02) with the global RNG). Here they are
drawn from the same distribution with a generator seeded `ADDED_ROWS_SEED`, so every replica and
every run has the same ones; `added_rows` replaces them (the tests pass the reference's rows).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pf1m.models.flamingo.accounting import FLAMINGO, LLAMA, LM_HEAD, VISION, Plan, Source, plan
from pf1m.models.flamingo.errors import FlamingoLoadError
from pf1m.models.flamingo.files import (
    fetch_optional,
    hub_file,
    list_tensors,
    read_tensors,
    resolve_file,
    resolve_folder,
    weight_files,
)
from pf1m.models.flamingo.lora import PROJECTIONS, LoraSpec
from pf1m.models.flamingo.model import DEFAULT_LATENTS, FlamingoModel, FlamingoSpec, build
from pf1m.models.flamingo.tokenizer import TOKENIZER_FILE, PromptTokenizer
from pf1m.models.flamingo.vision import VisionSpec
from pf1m.schemas.modelref import split_revision

if TYPE_CHECKING:  # pydantic is not needed to run the model (e.g. a bare GPU machine)
    from pf1m.schemas.config import Flamingo, FlamingoLora

MERGED_KEY = "pf1m_flamingo"  # config.json of a merged folder holds the FlamingoSpec here
MERGED_WEIGHTS = "model.safetensors"
ADDED_ROWS_SEED = 0
DEFAULT_PERCEIVER_DEPTH = 6  # the released model's, used only to name what is missing
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass
class Parts:
    """Everything `rewriter.model` + `rewriter.flamingo` point at, resolved to local files."""

    spec: FlamingoSpec
    folder: Path
    tokenizer_file: Path
    sources: list[Source]  # in load order
    merged: bool


def added_rows_rule(spec: FlamingoSpec) -> str:
    std = spec.llama_config().initializer_range
    return f"N(0, {std}) from a torch.Generator seeded {ADDED_ROWS_SEED}"


def default_added_rows(spec: FlamingoSpec, rows: int) -> torch.Tensor:
    config = spec.llama_config()
    gen = torch.Generator().manual_seed(ADDED_ROWS_SEED)
    return torch.randn(rows, config.hidden_size, generator=gen) * config.initializer_range


def _source(label: str, path: Path, kind: str, labels: set[str]) -> Source:
    while label in labels:
        label += "'"
    labels.add(label)
    return Source(label, path, kind, list_tensors(path))


def _vision(cfg: Flamingo, revision_map: dict | None) -> tuple[VisionSpec, Path | None, str]:
    """The tower's spec, its weights file (None: none configured) and their label."""
    path = Path(cfg.vision).expanduser()
    if path.is_file() or cfg.vision.endswith(".json"):
        if not path.is_file():
            raise FlamingoLoadError(f"vision: config file {cfg.vision} does not exist")
        model_cfg, name = json.loads(path.read_text()), path.stem
    else:
        import open_clip

        model_cfg, name = open_clip.get_model_config(cfg.vision), cfg.vision
        if model_cfg is None:
            raise FlamingoLoadError(
                f"vision: {cfg.vision} is neither an open_clip model name nor a config JSON"
            )
    quick_gelu, weights = False, None
    pre = cfg.vision_pretrained
    if pre and (Path(pre).expanduser().is_file() or hub_file(pre)):
        weights = resolve_file(pre, "vision_pretrained", revision_map)
    elif pre:
        weights, quick_gelu = _open_clip_tag(name, pre, revision_map)
    try:
        spec = VisionSpec.from_open_clip(model_cfg, quick_gelu)
    except (KeyError, ValueError) as exc:
        raise FlamingoLoadError(f"vision: {cfg.vision}: {exc}") from None
    local = weights is not None and Path(pre).expanduser().is_file()
    return spec, weights, (f"{weights.parent.name}/{weights.name}" if local else str(pre))


def _open_clip_tag(name: str, tag: str, revision_map: dict | None) -> tuple[Path, bool]:
    """An open_clip pretrained tag -> its weights from the hub (open_clip's own table says
    where), and whether the weights imply QuickGELU (the OpenAI ones do)."""
    import open_clip

    tag, pinned = split_revision(tag)  # `openai@COMMIT`: the run pinned the tag's hub repo
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        raise FlamingoLoadError(
            f"vision_pretrained: {tag} is not a local file, a hub `repo:file`, nor an open_clip "
            f"pretrained tag of {name}"
        )
    if not pcfg.get("hf_hub"):
        raise FlamingoLoadError(
            f"vision_pretrained: open_clip tag {tag} of {name} has no hub file; download the "
            "weights and give their path"
        )
    repo, file = os.path.split(pcfg["hf_hub"])  # "org/name/" means open_clip's default names
    names = (file,) if file else OPEN_CLIP_WEIGHTS
    last = None
    for fname in names:
        try:
            ref = f"{repo}@{pinned}:{fname}" if pinned else f"{repo}:{fname}"
            return resolve_file(ref, "vision_pretrained", revision_map), bool(
                pcfg.get("quick_gelu", False)
            )
        except FlamingoLoadError as exc:
            last = exc
    raise last


def _lora(cfg: FlamingoLora | None, revision_map: dict | None) -> LoraSpec | None:
    if cfg is None:
        return None
    if cfg.path:
        found = fetch_optional(cfg.path, "adapter_config.json", revision_map)
        if found is None:
            raise FlamingoLoadError(f"LoRA: {cfg.path} has no adapter_config.json (a peft folder)")
        try:
            spec = LoraSpec.from_peft_config(json.loads(found.read_text()))
        except (KeyError, ValueError) as exc:
            raise FlamingoLoadError(f"LoRA: {found}: {exc}") from None
    else:
        spec = LoraSpec(int(cfg.r), float(cfg.alpha), tuple(cfg.targets))
    bad = spec.unmatched()
    if bad or not spec.targets:
        raise FlamingoLoadError(
            f"LoRA: target(s) {', '.join(bad) or '(none)'} match no module of LLaMA's decoder "
            f"layers (the targets a LoRA here may name: {', '.join(PROJECTIONS)})"
        )
    return spec


def _perceiver_shape(sources: list[Source]) -> tuple[int, int]:
    """Depth and latents, from the last file that holds the perceiver's keys."""
    for source in reversed(sources):
        keys = source.tensors
        if "perceiver.latents" in keys:
            layers = {int(k.split(".")[2]) for k in keys if k.startswith("perceiver.layers.")}
            return (max(layers) + 1 if layers else 0), keys["perceiver.latents"].shape[0]
    return DEFAULT_PERCEIVER_DEPTH, DEFAULT_LATENTS


def resolve(model: str, cfg: Flamingo, revision_map: dict | None = None) -> Parts:
    folder = resolve_folder(model, "rewriter.model", revision_map)
    config_file, tokenizer_file = folder / "config.json", folder / TOKENIZER_FILE
    for f, what in ((config_file, "config.json"), (tokenizer_file, "the sentencepiece model")):
        if not f.is_file():
            raise FlamingoLoadError(f"rewriter.model: {folder} has no {f.name} ({what})")
    config = json.loads(config_file.read_text())
    labels: set[str] = set()
    if MERGED_KEY in config:
        if cfg.checkpoints or cfg.lora:
            raise FlamingoLoadError(
                "rewriter.model is a merged folder (pf1m flamingo-merge), which holds every "
                "weight with LoRA merged: rewriter.flamingo.checkpoints and lora must be unset"
            )
        files = weight_files(folder, (MERGED_WEIGHTS,))
        sources = [_source(f"{folder.name}/{f.name}", f, FLAMINGO, labels) for f in files]
        spec = FlamingoSpec.from_dict(config[MERGED_KEY])
        return Parts(spec, folder, tokenizer_file, sources, merged=True)
    vocab = len(PromptTokenizer(tokenizer_file)) - 3
    vision, vision_file, vision_label = _vision(cfg, revision_map)
    lora = _lora(cfg.lora, revision_map)
    sources = [_source(f"{folder.name}/{f.name}", f, LLAMA, labels) for f in weight_files(folder)]
    if vision_file is not None:
        sources.append(_source(vision_label, vision_file, VISION, labels))
    for ref in cfg.checkpoints:
        path = resolve_file(ref, "rewriter.flamingo.checkpoints", revision_map)
        sources.append(_source(path.name if Path(ref).is_file() else ref, path, FLAMINGO, labels))
    depth, latents = _perceiver_shape([s for s in sources if s.kind == FLAMINGO])
    spec = FlamingoSpec(
        llama=config,
        vision=vision,
        perceiver_depth=depth,
        num_latents=latents,
        cross_attn_every_n_layers=cfg.cross_attn_every_n_layers,
        vocab=vocab,
        lora=lora,
    )
    return Parts(spec, folder, tokenizer_file, sources, merged=False)


def make_plan(parts: Parts) -> Plan:
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in FlamingoModel(parts.spec).named_parameters()}
    return plan(shapes, parts.spec.vocab, parts.spec.lora is not None, parts.sources)


def _checked(model: str, cfg: Flamingo, revision_map: dict | None) -> tuple[Parts, Plan]:
    try:
        parts = resolve(model, cfg, revision_map)
    except FlamingoLoadError as exc:
        raise FlamingoLoadError(f"Polite Flamingo from {model}: {exc}") from None
    p = make_plan(parts)
    problems = p.check()
    if problems:
        raise FlamingoLoadError(
            f"Polite Flamingo from {model} cannot be loaded:\n"
            + "\n".join(f"  - {x}" for x in problems)
        )
    return parts, p


def precheck(model: str, cfg: Flamingo, revision_map: dict | None = None) -> str:
    """Refuse (FlamingoLoadError) what the files cannot make, reading key names and shapes
    only; returns the load table the replicas will log."""
    parts, p = _checked(model, cfg, revision_map)
    return p.table(added_rows_rule(parts.spec))


def load(
    model: str,
    cfg: Flamingo,
    dtype: torch.dtype,
    device: str | torch.device,
    revision_map: dict | None = None,
    added_rows: torch.Tensor | None = None,
) -> tuple[FlamingoModel, Parts, str]:
    """The model on `device` in `dtype`, its parts and the load table."""
    parts, p = _checked(model, cfg, revision_map)
    net = build(parts.spec, device, dtype)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for source in parts.sources:
            todo = p.loads[source.label]
            for key, tensor in read_tensors(source.path):
                if key in todo:
                    name, rows = todo[key]
                    target = params[name][:rows] if params[name].dim() else params[name]
                    target.copy_(tensor)
        for name, rows in p.initialised().items():
            assert name == LM_HEAD
            extra = added_rows if added_rows is not None else default_added_rows(parts.spec, rows)
            params[name][-rows:].copy_(extra)
    return net, parts, p.table(added_rows_rule(parts.spec))
