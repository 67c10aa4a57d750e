"""Ray actor classes. They hold models and serve batches; they know nothing of shards or files."""
