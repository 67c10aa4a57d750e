"""Hand-off to a fine-tuning job: export a committed run as released PF-1M JSON, LLaVA
conversations, a Hugging Face dataset with its card, or WebDataset shards; import released
PF-1M files back into a run directory; write stage mixtures for the U-shaped schedule."""
