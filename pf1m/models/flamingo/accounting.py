"""Key accounting: which tensor of which file fills which parameter, and what is left over.

Pure logic on key names and shapes (no weights), shared by the pre-check and the loader, so
both see the same plan. Files load in order, non-strictly, the last one wins (the authors'
`load_state_dict(strict=False)`, file after file):

- the LLaMA folder (Hugging Face names, mapped under `lang_encoder.model.layers.{i}.decoder_layer`),
- the CLIP weights (open_clip names, mapped under `vision_encoder.`),
- the Flamingo checkpoints (the authors' names; the cross-attention blocks appear under two
  names, `lang_encoder.gated_cross_attn_layers.{i}` and `...layers.{i}.gated_cross_attn_layer`).

Every parameter must end up filled, except the rows of the three added tokens in `lm_head`,
which no file holds and which are initialised by a stated rule. Known leftovers (rotary
buffers, CLIP's text tower, `ln_post`/`proj`) are counted, anything else is named.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pf1m.models.flamingo.files import TensorInfo

GROUPS = ("vision", "perceiver", "cross-attention", "embeddings", "decoder", "LoRA")
EMBED = "lang_encoder.model.embed_tokens.weight"
LM_HEAD = "lang_encoder.lm_head.weight"
ROW_PARTIAL = (EMBED, LM_HEAD)  # LLaMA's own files hold the rows before the added tokens
LLAMA, VISION, FLAMINGO = "llama", "vision", "flamingo"  # how a file names its keys

ROTARY = "rotary_emb.inv_freq buffers (recomputed from the fp32 formula)"
TEXT_TOWER = "CLIP text tower (unused)"
POOLED = "CLIP ln_post/proj (never applied to the patch tokens)"
ALIAS = "second name of a cross-attention tensor"

_LLAMA_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_XATTN_ALIAS = re.compile(r"^lang_encoder\.gated_cross_attn_layers\.(\d+)\.(.+)$")


def group_of(name: str) -> str:
    if name.startswith("vision_encoder."):
        return "vision"
    if name.startswith("perceiver."):
        return "perceiver"
    if ".lora_A." in name or ".lora_B." in name:
        return "LoRA"
    if ".gated_cross_attn_layer." in name or name.startswith("lang_encoder.gated_cross_attn"):
        return "cross-attention"
    if name in ROW_PARTIAL:
        return "embeddings"
    if name.startswith("lang_encoder."):
        return "decoder"
    return "other"


def canonical(kind: str, key: str) -> tuple[str | None, str | None]:
    """(parameter name, None), or (None, why it is ignored), or (key, None) when unknown."""
    if key.endswith("rotary_emb.inv_freq"):
        return None, ROTARY
    if kind == LLAMA:
        m = _LLAMA_LAYER.match(key)
        if m:
            return f"lang_encoder.model.layers.{m[1]}.decoder_layer.{m[2]}", None
        if key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            return f"lang_encoder.{key}", None
        return key, None
    if kind == VISION:
        key = "vision_encoder." + key.removeprefix("module.")
    m = _XATTN_ALIAS.match(key)
    if m:
        key = f"lang_encoder.model.layers.{m[1]}.gated_cross_attn_layer.{m[2]}"
    key = key.replace(".base_layer.weight", ".weight")  # newer peft's name of the base weight
    if key.startswith("vision_encoder."):
        if not key.startswith("vision_encoder.visual."):
            return None, TEXT_TOWER
        if key.startswith(("vision_encoder.visual.ln_post.", "vision_encoder.visual.proj")):
            return None, POOLED
    return key, None


@dataclass
class Source:
    label: str  # how the table names the file
    path: Path
    kind: str  # LLAMA, VISION or FLAMINGO
    tensors: dict[str, TensorInfo]


@dataclass
class Plan:
    params: dict[str, tuple[int, ...]]
    vocab: int  # rows before the added tokens
    lora: bool
    # file label -> its key -> (parameter, rows it fills)
    loads: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    # parameter -> every (file label, rows) that writes it, in load order (the last wins)
    history: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ignored: dict[str, Counter] = field(default_factory=dict)
    unexpected: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # label -> how the file names keys

    def add(self, source: Source) -> None:
        self.kinds[source.label] = source.kind
        loads, seen = {}, set()
        ignored, unexpected = Counter(), []
        for key, info in source.tensors.items():
            name, why = canonical(source.kind, key)
            if why:
                ignored[why] += 1
                continue
            shape = self.params.get(name)
            if shape is None:
                if group_of(name) == "LoRA":
                    self.problems.append(self._stray_lora(source, key))
                unexpected.append(key)
                continue
            if name in seen:  # both names of one cross-attention tensor
                ignored[ALIAS] += 1
                continue
            rows = self._rows(name, shape, info.shape)
            if rows is None:
                self.problems.append(
                    f"{group_of(name)}: tensor {key} in {source.label} has shape "
                    f"{list(info.shape)}, the model needs {list(shape)}"
                )
                continue
            seen.add(name)
            loads[key] = (name, rows)
            self.history.setdefault(name, []).append((source.label, rows))
        self.loads[source.label] = loads
        self.ignored[source.label] = ignored
        self.unexpected[source.label] = unexpected

    def _rows(self, name: str, want: tuple[int, ...], got: tuple[int, ...]) -> int | None:
        if got == want:
            return want[0] if want else 0
        if name in ROW_PARTIAL and got[1:] == want[1:] and got[0] == self.vocab:
            return got[0]
        return None

    def _stray_lora(self, source: Source, key: str) -> str:
        if not self.lora:
            return (
                f"LoRA: {source.label} holds LoRA tensors (e.g. {key}) but rewriter.flamingo.lora "
                "is not set: they would be dropped"
            )
        return (
            f"LoRA: {source.label} holds {key}, a LoRA tensor for a module that the LoRA "
            "config (rewriter.flamingo.lora targets, or the peft folder's target_modules) "
            "does not name"
        )

    def rows_filled(self, name: str) -> int:
        return max((rows for _, rows in self.history.get(name, [])), default=0)

    def initialised(self) -> dict[str, int]:
        """Parameters completed by rule: lm_head's added-token rows (no file holds them)."""
        full = self.params[LM_HEAD][0]
        filled = self.rows_filled(LM_HEAD)
        return {LM_HEAD: full - filled} if filled == self.vocab else {}

    def missing(self) -> list[str]:
        """Parameters (or rows of them) that no file fills and no rule completes."""
        by_rule = self.initialised()
        return [
            name
            for name, shape in self.params.items()
            if name not in by_rule
            and (name not in self.history or (shape and self.rows_filled(name) < shape[0]))
        ]

    def check(self) -> list[str]:
        """Every reason this plan cannot make the model, in plain words."""
        problems = list(dict.fromkeys(self.problems))
        missing = self.missing()
        by_group: dict[str, list[str]] = {}
        for name in missing:
            by_group.setdefault(group_of(name), []).append(name)
        totals = Counter(group_of(n) for n in self.params)
        for group, names in by_group.items():
            if group == "embeddings" and EMBED in names and EMBED in self.history:
                problems.append(
                    f"embeddings: no file holds {EMBED} with {self.params[EMBED][0]} rows (only "
                    f"LLaMA's {self.vocab}): the <|endofchunk|> and <image> embeddings would be "
                    "missing; the OpenFlamingo checkpoint belongs in rewriter.flamingo.checkpoints"
                )
                names = [n for n in names if n != EMBED]
                if not names:
                    continue
            if len(names) == totals[group]:
                problems.append(
                    f"{group}: missing, no file holds any of its {totals[group]} tensors "
                    f"(e.g. {names[0]})"
                )
            else:
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                problems.append(
                    f"{group}: {len(names)} of {totals[group]} tensors missing: {shown}"
                )
        return problems

    def table(self, rule: str) -> str:
        """The load report: per group, tensors loaded / missing / unexpected, and the files."""
        absent = set(self.missing())
        missing = Counter(group_of(n) for n in absent)
        loaded = Counter(group_of(n) for n in self.history if n not in absent)
        unexpected = Counter(
            group_of(canonical(kind, k)[0] or k)
            for label, keys in self.unexpected.items()
            for kind in [self.kinds[label]]
            for k in keys
        )
        sources: dict[str, Counter] = {}
        for name, hist in self.history.items():
            label, rows = hist[-1]
            full = self.params[name][0] if self.params[name] else 0
            note = f"{label} ({rows} rows)" if self.params[name] and rows < full else label
            sources.setdefault(group_of(name), Counter())[note] += 1
        lines = [f"{'group':<16}{'loaded':>7}{'missing':>8}{'unexpected':>11}  from"]
        for group in GROUPS:
            total = sum(1 for n in self.params if group_of(n) == group)
            if not total and not unexpected[group]:
                continue
            files = ", ".join(f"{f} x{c}" for f, c in sources.get(group, {}).items()) or "-"
            lines.append(
                f"{group:<16}{loaded[group]:>7}{missing[group]:>8}{unexpected[group]:>11}  {files}"
            )
        for name, rows in self.initialised().items():
            lines.append(f"initialised: {rows} added-token rows of {name}: {rule}")
        for label, counts in self.ignored.items():
            for why, n in counts.items():
                lines.append(f"ignored: {label}: {n} {why}")
        for label, keys in self.unexpected.items():
            if keys:
                shown = ", ".join(keys[:10]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 10 else ""
                )
                lines.append(f"unexpected: {label}: {shown}")
        return "\n".join(lines)


def plan(params: dict[str, tuple[int, ...]], vocab: int, lora: bool, sources: list[Source]) -> Plan:
    """The load plan of `sources`, in load order."""
    p = Plan(params=params, vocab=vocab, lora=lora)
    for source in sources:
        p.add(source)
    return p
