"""The rewriter replica: one asynchronous vLLM engine per Ray actor.

Calls from many shards arrive concurrently (the actor is async with high max_concurrency); each
request goes straight into the engine, whose continuous batching mixes them. Images travel as
encoded bytes and are decoded here. The engine's CPU thread and KV-cache settings come from the
environment, set before the engine starts, because its core runs in a child process.
"""

import asyncio
import io
import os
import time

from PIL import Image

from schemas.config import Rewriter as RewriterConfig
from schemas.rewrite import BusyStats, RewriteRequest, RewriteResult, RewriterInfo


def resolve_image_token(model: str, trust_remote_code: bool, override: str | None) -> str:
    """The model's own image token, from its processor (or tokenizer), unless configured."""
    if override:
        return override
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    for owner in (processor, getattr(processor, "tokenizer", None)):
        token = getattr(owner, "image_token", None)
        if isinstance(token, str) and token:
            return token
    raise ValueError(f"{model}: its processor names no image_token; set rewriter.image_token")


class Rewriter:
    def __init__(self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.engine.cpu_kvcache_gb))
        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)
            os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.cfg = cfg
        self.image_token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        args = AsyncEngineArgs(
            model=cfg.model,
            tokenizer=cfg.tokenizer,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.engine.max_num_seqs,
            enforce_eager=cfg.engine.enforce_eager,
            enable_chunked_prefill=cfg.engine.enable_chunked_prefill,
            gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
            limit_mm_per_prompt={"image": cfg.max_images},
            seed=seed,
            disable_log_stats=True,
            **cfg.engine.extra_args,
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self._running = 0
        self._last_change = time.monotonic()
        self._first_request: float | None = None
        self._last_done: float | None = None
        self._busy_s = 0.0
        self._running_integral = 0.0
        self._done = 0
        self._requests = 0

    def info(self) -> RewriterInfo:
        return RewriterInfo(self.cfg.model, self.image_token, self.cfg.max_model_len)

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
            self.cfg.engine.max_num_seqs,
        )

    def _sampling(self, seed: int):
        from vllm import SamplingParams

        d = self.cfg.decoding
        return SamplingParams(
            max_tokens=d.max_tokens,
            temperature=d.temperature,
            top_k=d.top_k,
            top_p=d.top_p,
            repetition_penalty=d.repetition_penalty,
            stop=d.stop or None,
            seed=seed,
        )

    async def _one(self, req: RewriteRequest) -> RewriteResult:
        self._track(+1)
        try:
            prompt: dict = {"prompt": req.prompt}
            if req.images:
                images = [Image.open(io.BytesIO(b)).convert("RGB") for b in req.images]
                prompt["multi_modal_data"] = {"image": images}
            final = None
            self._requests += 1  # request ids stay unique when a uid is retried
            request_id = f"{req.uid}#{self._requests}"
            async for out in self.engine.generate(prompt, self._sampling(req.seed), request_id):
                final = out
            completion = final.outputs[0]
            return RewriteResult(
                req.uid,
                completion.text,
                completion.finish_reason,
                len(final.prompt_token_ids or []),
                len(completion.token_ids),
            )
        except Exception as exc:  # one bad request must not fail its batch ...
            if type(exc).__name__ == "EngineDeadError":  # ... but a dead engine fails the call
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

    def shutdown(self) -> None:
        self.engine.shutdown()
