"""How many samples one batched `generate` can hold in GPU memory: pure arithmetic over the
model's shape, the decoding and the free memory, so a replica picks a batch that fits (or
refuses with the numbers) instead of dying out of memory in the middle of a run.

The dominant cost of generation is the KV cache: for every sequence (each beam is one) and every
token of prompt plus answer, one key and one value vector per decoder layer.
"""

from dataclasses import dataclass


class BatchDoesNotFit(ValueError):
    """Not even one sample fits; the message gives the numbers."""


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    dtype_bytes: int


def kv_bytes_per_sample(shape: Shape, tokens: int, beams: int) -> int:
    """KV cache of one sample: keys and values of every layer for `tokens` positions, per beam."""
    return 2 * shape.layers * shape.hidden * shape.dtype_bytes * tokens * beams


def fit_batch(
    wanted: int, total_bytes: int, free_bytes: int, shape: Shape, tokens: int, beams: int,
    usable_fraction: float,
) -> int:  # fmt: skip
    """The largest batch up to `wanted` whose KV cache fits in what is left of
    `usable_fraction` of the device's memory once the weights are loaded (`free_bytes`, measured
    after loading), as vLLM's `gpu_memory_utilization` counts; `BatchDoesNotFit` when not even
    one sample does."""
    per_sample = kv_bytes_per_sample(shape, tokens, beams)
    budget = int(total_bytes * usable_fraction) - (total_bytes - free_bytes)
    fits = budget // per_sample if budget > 0 else 0
    if fits < 1:
        gib = 1 << 30
        raise BatchDoesNotFit(
            f"one sample needs {per_sample / gib:.2f} GiB of KV cache ({beams} beams x {tokens} "
            f"tokens x {shape.layers} layers x hidden {shape.hidden} x {shape.dtype_bytes} bytes "
            f"x 2), but {usable_fraction:.0%} of {total_bytes / gib:.1f} GiB less the "
            f"{(total_bytes - free_bytes) / gib:.1f} GiB in use leaves {max(budget, 0) / gib:.2f} "
            "GiB; lower rewriter.max_model_len or decoding.beam_width, or use a larger GPU"
        )
    return min(wanted, fits)
