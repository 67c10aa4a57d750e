"""The flamingo replica's batch against GPU memory: pure arithmetic, no GPU needed."""

import pytest

from pf1m.pipeline.batch_fit import BatchDoesNotFit, Shape, fit_batch, kv_bytes_per_sample

GIB = 1 << 30
LLAMA_7B_FP16 = Shape(layers=32, hidden=4096, dtype_bytes=2)


def test_kv_cache_of_a_7b_sample_at_the_papers_decoding():
    # 2 x 32 layers x 4096 x 2 bytes = 0.5 MiB a token; 3 beams x 2048 tokens = 3 GiB
    assert kv_bytes_per_sample(LLAMA_7B_FP16, tokens=2048, beams=3) == 3 * GIB


def test_the_wanted_batch_when_it_fits_else_what_fits():
    # an 80 GiB GPU with 14 GiB of weights loaded: 0.9 x 80 - 14 = 58 GiB for the KV cache
    total, free = 80 * GIB, 66 * GIB
    assert fit_batch(16, total, free, LLAMA_7B_FP16, 2048, 3, 0.9) == 16
    assert fit_batch(64, total, free, LLAMA_7B_FP16, 2048, 3, 0.9) == 19  # 58 // 3
    assert fit_batch(64, total, free, LLAMA_7B_FP16, 2048, 1, 0.9) == 58


def test_refused_with_the_numbers_when_not_one_sample_fits():
    with pytest.raises(BatchDoesNotFit) as err:
        fit_batch(8, 24 * GIB, 4 * GIB, LLAMA_7B_FP16, 2048, 3, 0.9)  # 1.6 GiB left
    msg = str(err.value)
    assert "3.00 GiB of KV cache" in msg and "3 beams x 2048 tokens" in msg
    assert "max_model_len" in msg
