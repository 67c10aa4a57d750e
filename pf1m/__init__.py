"""pf1m: raw vision-language datasets -> polite visual-instruction data (PF-1M) on Ray.

Subpackages: `schemas` (every record shape), `pipeline` (the run: plan, shards, commit, audit),
`filters` (decisions), `actors` and `models` (model code on Ray), `ingest` (raw datasets in),
`export` (trainer formats out), `jobs` (the command line), `configs` (YAML presets), `demo`.
"""
