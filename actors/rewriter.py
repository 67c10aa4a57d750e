"""The rewriter backends by config name; each lives in a module of its own.

- `vllm` (`actors/vllm_rewriter.py`): one asynchronous vLLM engine, continuous batching.
- `transformers` (`actors/transformers_rewriter.py`): batched `generate`.
- `flamingo` (`actors/flamingo_rewriter.py`): the paper's Polite Flamingo, batched `generate`.

All share the replica contract of `actors/replica.py`: images arrive as encoded bytes and are
decoded in the replica, token counts and finish reasons are recorded, a failing request becomes
an error result without failing its batch, and `deterministic` mode makes rows independent of
batching.
"""

from actors.flamingo_rewriter import FlamingoRewriter
from actors.transformers_rewriter import TransformersRewriter
from actors.vllm_rewriter import VllmRewriter

BACKENDS = {
    "vllm": VllmRewriter,
    "transformers": TransformersRewriter,
    "flamingo": FlamingoRewriter,
}
