"""Polite Flamingo (OpenFlamingo v1 + LoRA on LLaMA-7B) on the current transformers.

Modules: `tokenizer` (prompt ids by the authors' 4.28 rules), `images` (vision_x), `vision`,
`perceiver`, `cross_attention` (and the v1 media rule), `lora`, `language` (LLaMA with the
blocks), `model` (the whole), `ngram` (no-repeat n-grams on tensors), `files`, `accounting`
(key plan and load table), `loader` (pre-check and load), `runner` (what a replica calls),
`merge` (one safetensors folder), `tiny` (a tiny random model in the released layout).
"""

from pf1m.models.flamingo.errors import FlamingoLoadError
from pf1m.models.flamingo.loader import precheck
from pf1m.models.flamingo.runner import FlamingoRunner, Generated

__all__ = ["FlamingoLoadError", "FlamingoRunner", "Generated", "precheck"]
