"""The replica contract every rewriter backend shares: busy accounting, per-request errors
that never fail a batch, and `request_timeout_s` with an engine restart and one retry.

A backend subclasses `Replica` and implements `_run` (one request) and `_restart_engine`.
Failures: a request over `request_timeout_s` restarts the engine (requests cancelled by the
restart run again) and is retried once, then returned as error class `timeout`. A dead engine
ends the actor process, so Ray restarts the replica and retries its calls.
"""

import asyncio
import dataclasses
import io
import logging
import os
import time

from PIL import Image

from pf1m.models.hub import pretrained
from pf1m.pipeline import faults
from pf1m.pipeline.chat_template import ChatRenderer
from pf1m.schemas.config import Rewriter as RewriterConfig
from pf1m.schemas.reasons import TIMEOUT
from pf1m.schemas.rewrite import BusyStats, RewriteRequest, RewriteResult, RewriterInfo

logger = logging.getLogger(__name__)


def resolve_image_token(model: str, trust_remote_code: bool, override: str | None) -> str:
    """The model's own image token, from its processor (or tokenizer), unless configured."""
    if override:
        return override
    from transformers import AutoProcessor

    name, pin = pretrained(model)
    processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code, **pin)
    return image_token_of(processor, model)


def image_token_of(processor, model: str) -> str:
    """The image token a loaded processor (or its tokenizer) names."""
    for owner in (processor, getattr(processor, "tokenizer", None)):
        token = getattr(owner, "image_token", None)
        if isinstance(token, str) and token:
            return token
    raise ValueError(f"{model}: its processor names no image_token; set rewriter.image_token")


def decode_images(payloads: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in payloads]


class PromptTooLong(ValueError):
    """Prompt plus `decoding.max_tokens` exceed `rewriter.max_model_len` (as vLLM refuses)."""


def too_long(prompt_tokens: int, cfg: RewriterConfig) -> str | None:
    """Why a prompt of this many tokens leaves no room for the answer, or None if it fits."""
    d, limit = cfg.decoding, cfg.max_model_len
    if prompt_tokens + d.max_tokens <= limit:
        return None
    return (
        f"prompt of {prompt_tokens} tokens (images included) + decoding.max_tokens "
        f"{d.max_tokens} exceed rewriter.max_model_len {limit}"
    )


def exit_for_restart(exc: BaseException) -> None:
    """Inside a Ray actor, end the process: Ray restarts the replica (`max_restarts`) and
    retries its calls (`max_task_retries`). In-process (tests, benchmarks) the error rises."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
        logger.error("the engine died (%s); exiting so that Ray restarts this replica", exc)
        os._exit(1)


def set_threads(cpu_threads: int | None) -> None:
    if cpu_threads:
        import torch

        torch.set_num_threads(cpu_threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))


class Replica:
    """Busy accounting and per-request error handling shared by the backends."""

    # Where a prompt's images go when its instruction has no `<image>` markers (DESIGN.md):
    # "first" before the instruction, "append" after it (flamingo, as its authors did).
    images_without_markers = "first"

    def __init__(self, cfg: RewriterConfig, image_token: str, capacity: int) -> None:
        self.cfg = cfg
        self.image_token = image_token
        # `prompt.style: chat`: requests carry messages, rendered here with the model's chat
        # template (README, design notes); a model without one fails here, before any work.
        self.renderer = ChatRenderer.load(cfg) if cfg.prompt.style == "chat" else None
        self.capacity = capacity  # sequences the backend runs at once
        self._running = 0
        self._last_change = time.monotonic()
        self._first_request: float | None = None
        self._last_done: float | None = None
        self._busy_s = 0.0
        self._running_integral = 0.0
        self._done = 0
        self._generation = 0  # bumped by each engine restart
        self._restarts = 0
        self._inflight: set[asyncio.Future] = set()
        self._ready = asyncio.Event()
        self._ready.set()
        self._restart_lock = asyncio.Lock()

    def info(self) -> RewriterInfo:
        import ray

        node, gpus = None, None
        if ray.is_initialized():
            context = ray.get_runtime_context()
            node = context.get_node_id()
            gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        return RewriterInfo(
            self.cfg.model,
            self.image_token,
            self.cfg.max_model_len,
            node,
            gpus,
            self.images_without_markers,
        )

    def _track(self, delta: int) -> None:
        now = time.monotonic()
        if self._first_request is None:
            self._first_request = now
        span = now - self._last_change
        if self._running > 0:
            self._busy_s += span
        self._running_integral += self._running * span
        self._running += delta
        self._last_change = now

    def busy(self) -> BusyStats:
        self._track(0)
        return BusyStats(
            self._first_request,
            self._last_done,
            self._running,
            self._busy_s,
            self._running_integral,
            time.monotonic(),
            self._done,
            self.capacity,
        )

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        raise NotImplementedError

    async def _restart_engine(self) -> None:
        raise NotImplementedError

    async def _hang(self) -> RewriteResult:
        """A request that never answers (the `timeout_rewrite` fault point)."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _restart(self, generation: int) -> None:
        """Restart the engine once per timed-out generation; requests still running on the
        old engine are cancelled and run again on the new one."""
        async with self._restart_lock:
            if self._generation != generation:  # another request already restarted it
                return
            self._generation += 1
            self._ready.clear()
            for task in list(self._inflight):
                task.cancel()
            try:
                await self._restart_engine()
            finally:
                self._restarts += 1
                self._ready.set()

    async def _attempts(self, req: RewriteRequest) -> RewriteResult:
        """Run a request; a timeout restarts the engine and retries once, then gives up."""
        timeout = self.cfg.request_timeout_s
        timed_out = 0
        while True:
            await self._ready.wait()
            generation = self._generation
            if faults.expired("timeout_rewrite", req.uid):  # hangs, its deadline already past
                attempt, deadline = self._hang(), 0.0
            else:
                attempt, deadline = self._run(req), timeout
            task = asyncio.ensure_future(asyncio.wait_for(attempt, deadline))
            self._inflight.add(task)
            try:
                return await task
            except asyncio.CancelledError:
                if task.cancelled() and self._generation != generation:
                    continue  # its engine was restarted under it: not its fault, run again
                raise
            except TimeoutError:
                timed_out += 1
                await self._restart(generation)
                if timed_out == 2:
                    text = f"no answer within {timeout} s, twice (the engine restarted between)"
                    return RewriteResult(req.uid, None, None, None, None, TIMEOUT, text)
            finally:
                self._inflight.discard(task)

    def _rendered(self, req: RewriteRequest) -> RewriteRequest:
        """The request with its chat messages rendered into the prompt both backends read."""
        if req.messages is None:
            return req
        if self.renderer is None:
            raise ValueError("a request with chat messages, but rewriter.prompt.style is raw")
        return dataclasses.replace(req, prompt=self.renderer.render(req.messages), messages=None)

    def _reopened(self, req: RewriteRequest, result: RewriteResult) -> RewriteResult:
        """A prompt that ends inside an opened thinking block (a chat template's generation
        prompt may open it): the completion gets the opening back, so the answer is read as
        a block that closes, or never does."""
        start = self.cfg.prompt.think_start
        if result.completion is not None and req.prompt.rstrip().endswith(start):
            result.completion = start + result.completion
        return result

    async def _one(self, req: RewriteRequest) -> RewriteResult:
        self._track(+1)
        try:
            req = self._rendered(req)
            return self._reopened(req, await self._attempts(req))
        except Exception as exc:  # one bad request must not fail its batch ...
            if type(exc).__name__ == "EngineDeadError":  # ... but a dead engine ends the replica
                exit_for_restart(exc)
                raise
            return RewriteResult(
                req.uid, None, None, None, None, type(exc).__name__, str(exc)[:2000]
            )
        finally:
            self._done += 1
            self._track(-1)
            self._last_done = self._last_change

    async def generate(self, batch: list[RewriteRequest]) -> list[RewriteResult]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    def restarts(self) -> int:
        """Engine restarts after timeouts since the actor started."""
        return self._restarts
