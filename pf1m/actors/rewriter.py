"""The rewriter backends by config name; each lives in a module of its own.

- `vllm` (`pf1m/actors/vllm_rewriter.py`): one asynchronous vLLM engine, continuous batching.
- `transformers` (`pf1m/actors/transformers_rewriter.py`): batched `generate`.
- `flamingo` (`pf1m/actors/flamingo_rewriter.py`): the paper's Polite Flamingo, batched `generate`.

All share the replica contract of `pf1m/actors/replica.py`: images arrive as encoded bytes and are
decoded in the replica, token counts and finish reasons are recorded, a failing request becomes
an error result without failing its batch, and `deterministic` mode makes rows independent of
batching.
"""

from pf1m.actors.flamingo_rewriter import FlamingoRewriter
from pf1m.actors.transformers_rewriter import TransformersRewriter
from pf1m.actors.vllm_rewriter import VllmRewriter

BACKENDS = {
    "vllm": VllmRewriter,
    "transformers": TransformersRewriter,
    "flamingo": FlamingoRewriter,
}
