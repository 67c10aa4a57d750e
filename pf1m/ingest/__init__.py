"""`pf1m ingest`: raw vision-language datasets (COCO, RefCOCO, VQAv2, GQA, A-OKVQA, image
folders, LLaVA, JSONL/CSV) -> WebDataset shards in the input schema (`pf1m/schemas/sample.py`).

readers (`ingest/formats/`) -> chunks of `shard_size` records (`ingest/run.py`) -> one shard
task per chunk (`ingest/shards.py`, loading images with `ingest/images.py`), committed like a
run's shards; `pf1m/ingest/manifest.py` keeps `DIR/ingest.json`.
"""
