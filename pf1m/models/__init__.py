"""Models this project implements itself, for architectures no serving engine loads.

- `pf1m.models.flamingo`: the paper's Polite Flamingo (OpenFlamingo v1 + LoRA on LLaMA), on the
  current transformers, faithful to the authors' code (see FLAMINGO.md in the shared notes).
"""
