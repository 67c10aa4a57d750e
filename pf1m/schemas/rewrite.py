"""What a shard sends to a rewriter replica and what comes back (plain dataclasses: cheap to
serialise through Ray)."""

from dataclasses import dataclass
from typing import Any


@dataclass
class RewriteRequest:
    uid: str
    prompt: str
    images: list[bytes]
    seed: int
    adapter: str | None = None  # a rewriter.adapters name; None: the base model
    # `prompt.style: chat`: the messages the replica renders with the model's chat template
    # into `prompt` (pf1m/pipeline/prompt.py chat_messages); None: `prompt` is already rendered.
    messages: list[dict[str, Any]] | None = None


@dataclass
class RewriteResult:
    uid: str
    completion: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    error_class: str | None = None
    error_text: str | None = None


@dataclass
class RewriterInfo:
    model: str
    image_token: str
    max_model_len: int
    node_id: str | None = None  # where Ray placed the replica
    gpu_ids: list[str] | None = None  # the GPU ids Ray gave it on that node
    images_without_markers: str = "first"  # or "append" (pf1m/pipeline/prompt.py)


@dataclass
class BusyStats:
    """Busy = at least one request running. `running_integral` / wall gives mean running."""

    first_request_at: float | None
    last_done_at: float | None
    running: int  # requests inside the replica now
    busy_s: float
    running_integral: float
    now: float
    requests_done: int
    max_num_seqs: int
