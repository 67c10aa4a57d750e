"""Rewriter replicas: one model per Ray actor, behind one interface, two backends.

- `VllmRewriter`: one asynchronous vLLM engine. Calls from many shards arrive concurrently
  (async actor, high max_concurrency); each request goes straight into the engine, whose
  continuous batching mixes them.
- `TransformersRewriter`: batched `generate` for models vLLM cannot load; requests from all
  calls are gathered into batches by a micro-batcher.

Both take images as encoded bytes and decode them here, record token counts and finish
reasons, and turn a failing request into an error result without failing its batch. In
`deterministic` mode rows do not depend on batching: vLLM runs one sequence at a time,
transformers one sample per `generate` call seeded with the sample's own seed.
"""

import asyncio
import io
import os
import time

from PIL import Image

from actors.batcher import MicroBatcher
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


def decode_images(payloads: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in payloads]


NGRAM_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"


def vllm_engine_kwargs(cfg: RewriterConfig, seed: int) -> dict:
    """vLLM engine arguments for a rewriter config (EngineArgs / AsyncEngineArgs / LLM)."""
    kwargs = dict(
        model=cfg.model,
        tokenizer=cfg.tokenizer,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        max_model_len=cfg.max_model_len,
        max_num_seqs=1 if cfg.deterministic else cfg.engine.max_num_seqs,
        enforce_eager=cfg.engine.enforce_eager,
        enable_chunked_prefill=cfg.engine.enable_chunked_prefill,
        gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
        limit_mm_per_prompt={"image": cfg.max_images},
        seed=seed,
        disable_log_stats=True,
    )
    if cfg.decoding.no_repeat_ngram_size:
        kwargs["logits_processors"] = [NGRAM_PROCESSOR]
    return {**kwargs, **cfg.engine.extra_args}


def vllm_sampling(cfg: RewriterConfig, seed: int):
    from vllm import SamplingParams

    d = cfg.decoding
    extra = None
    if d.no_repeat_ngram_size:  # the window covers the whole output
        extra = {"ngram_size": d.no_repeat_ngram_size, "window_size": d.max_tokens}
    return SamplingParams(
        max_tokens=d.max_tokens,
        temperature=d.temperature,
        top_k=d.top_k,
        top_p=d.top_p,
        repetition_penalty=d.repetition_penalty,
        stop=d.stop or None,
        seed=seed,
        extra_args=extra,
    )


def _set_threads(cpu_threads: int | None) -> None:
    if cpu_threads:
        import torch

        torch.set_num_threads(cpu_threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))


class _Replica:
    """Busy accounting and per-request error handling shared by the backends."""

    def __init__(self, cfg: RewriterConfig, image_token: str, capacity: int) -> None:
        self.cfg = cfg
        self.image_token = image_token
        self.capacity = capacity  # sequences the backend runs at once
        self._running = 0
        self._last_change = time.monotonic()
        self._first_request: float | None = None
        self._last_done: float | None = None
        self._busy_s = 0.0
        self._running_integral = 0.0
        self._done = 0

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
            self.capacity,
        )

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        raise NotImplementedError

    async def _one(self, req: RewriteRequest) -> RewriteResult:
        self._track(+1)
        try:
            return await self._run(req)
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


class VllmRewriter(_Replica):
    def __init__(self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.engine.cpu_kvcache_gb))
        if cpu_threads:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        _set_threads(cpu_threads)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        kwargs = vllm_engine_kwargs(cfg, seed)
        super().__init__(cfg, token, kwargs["max_num_seqs"])
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        self._requests = 0

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        prompt: dict = {"prompt": req.prompt}
        if req.images:
            prompt["multi_modal_data"] = {"image": decode_images(req.images)}
        self._requests += 1  # request ids stay unique when a uid is retried
        final = None
        request_id = f"{req.uid}#{self._requests}"
        async for out in self.engine.generate(
            prompt, vllm_sampling(self.cfg, req.seed), request_id
        ):
            final = out
        completion = final.outputs[0]
        return RewriteResult(
            req.uid,
            completion.text,
            completion.finish_reason,
            len(final.prompt_token_ids or []),
            len(completion.token_ids),
        )

    def shutdown(self) -> None:
        self.engine.shutdown()


class TransformersRewriter(_Replica):
    def __init__(self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None) -> None:
        _set_threads(cpu_threads)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        hf = cfg.transformers
        batch = 1 if cfg.deterministic else hf.batch_size
        super().__init__(cfg, token, batch)
        kw = {"trust_remote_code": cfg.trust_remote_code}
        self.processor = AutoProcessor.from_pretrained(cfg.tokenizer or cfg.model, **kw)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # generation continues every prompt at its end
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if hf.dtype == "auto" else getattr(torch, hf.dtype)
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype, **kw)
        self.model.to(self.device).eval()
        self.batcher = MicroBatcher(self._generate_batch, batch, hf.max_wait_ms / 1000)

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        return await self.batcher.submit(req)

    def _generate_batch(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        import torch

        d = self.cfg.decoding
        images = [img for r in reqs for img in decode_images(r.images)]
        inputs = self.processor(
            images=images or None, text=[r.prompt for r in reqs], padding=True, return_tensors="pt"
        ).to(self.device)
        torch.manual_seed(reqs[0].seed)  # in deterministic mode: the sample's own seed
        sampling = d.temperature > 0
        extra = {"stop_strings": d.stop, "tokenizer": self.tokenizer} if d.stop else {}
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=d.max_tokens,
                do_sample=sampling,
                temperature=d.temperature if sampling else None,
                top_k=d.top_k if sampling and d.top_k > 0 else None,
                top_p=d.top_p if sampling else None,
                repetition_penalty=d.repetition_penalty,
                no_repeat_ngram_size=d.no_repeat_ngram_size,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
        prompt_len = inputs["input_ids"].shape[1]
        results = []
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        for i, r in enumerate(reqs):
            new = out[i, prompt_len:].tolist()
            stop_at = next((j for j, t in enumerate(new) if t in eos_ids), None)
            tokens = new if stop_at is None else new[:stop_at]
            tokens = [t for t in tokens if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((text.index(s) for s in d.stop if s in text), default=None)
            if cut is not None:  # like vLLM: the stop string is not part of the output
                text = text[:cut]
            finish = "stop" if stop_at is not None or cut is not None else "length"
            prompt_tokens = int(inputs["attention_mask"][i].sum())
            results.append(RewriteResult(r.uid, text, finish, prompt_tokens, len(tokens)))
        return results

    def shutdown(self) -> None:
        del self.model


BACKENDS = {"vllm": VllmRewriter, "transformers": TransformersRewriter}
