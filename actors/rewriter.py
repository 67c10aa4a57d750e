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

Failures: a request over `request_timeout_s` restarts the engine (requests cancelled by the
restart run again) and is retried once, then returned as error class `timeout`. A dead vLLM
engine ends the actor process, so Ray restarts the replica and retries its calls.
"""

import asyncio
import io
import logging
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from actors import adapters
from actors.batcher import MicroBatcher
from pipeline import faults
from schemas.config import Rewriter as RewriterConfig
from schemas.rewrite import BusyStats, RewriteRequest, RewriteResult, RewriterInfo

logger = logging.getLogger(__name__)


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


TIMEOUT = "timeout"  # error class of a request quarantined after its retry also timed out

NGRAM_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"


def vllm_engine_kwargs(cfg: RewriterConfig, seed: int, gpus: int = 1) -> dict:
    """vLLM engine arguments for a rewriter config (EngineArgs / AsyncEngineArgs / LLM). A
    replica holding several GPUs shards the model over them (tensor parallel, inside the
    actor's node)."""
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
    if gpus > 1:
        kwargs.update(tensor_parallel_size=gpus, distributed_executor_backend="mp")
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


def vllm_beam_ignores(cfg: RewriterConfig) -> list[str]:
    """Decoding settings that vLLM's beam search leaves unused (it samples nothing)."""
    d = cfg.decoding
    unused = {
        "top_k": d.top_k > 0,
        "top_p": d.top_p < 1.0,
        "repetition_penalty": d.repetition_penalty != 1.0,
    }
    return [name for name, set_ in unused.items() if set_]


def _exit_for_restart(exc: BaseException) -> None:
    """Inside a Ray actor, end the process: Ray restarts the replica (`max_restarts`) and
    retries its calls (`max_task_retries`). In-process (tests, benchmarks) the error rises."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
        logger.error("the engine died (%s); exiting so that Ray restarts this replica", exc)
        os._exit(1)


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
        return RewriterInfo(self.cfg.model, self.image_token, self.cfg.max_model_len, node, gpus)

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

    async def _timed(self, req: RewriteRequest) -> RewriteResult:
        stall = faults.delay("slow_rewrite", req.uid)
        if stall:
            await asyncio.sleep(stall)
        return await self._run(req)

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
            task = asyncio.ensure_future(asyncio.wait_for(self._timed(req), timeout))
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

    async def _one(self, req: RewriteRequest) -> RewriteResult:
        self._track(+1)
        try:
            return await self._attempts(req)
        except Exception as exc:  # one bad request must not fail its batch ...
            if type(exc).__name__ == "EngineDeadError":  # ... but a dead engine ends the replica
                _exit_for_restart(exc)
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


class VllmRewriter(_Replica):
    def __init__(
        self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None, gpus: int = 1
    ) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.engine.cpu_kvcache_gb))
        if cpu_threads:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        _set_threads(cpu_threads)
        token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        self.kwargs = vllm_engine_kwargs(cfg, seed, gpus)
        self.loras = self._loras(cfg)
        if self.loras:  # one slot per adapter, and one for the zero adapter (actors/adapters.py)
            dirs = [Path(r.lora_path) for r in self.loras.values()]
            self.kwargs.update(
                enable_lora=True, max_loras=len(dirs), max_lora_rank=adapters.vllm_max_rank(dirs)
            )
        super().__init__(cfg, token, self.kwargs["max_num_seqs"])
        self.engine = self._start_engine()
        self._requests = 0
        self._watchdog: asyncio.Task | None = None
        if cfg.decoding.beam_width:
            unused = vllm_beam_ignores(cfg)
            if unused:
                logger.warning("vLLM beam search does not use decoding.%s", ", ".join(unused))

    @staticmethod
    def _loras(cfg: RewriterConfig) -> dict:
        """Adapter name (None: the base model) -> LoRARequest; empty without adapters."""
        if not cfg.adapters:
            return {}
        from vllm.lora.request import LoRARequest

        dirs = adapters.resolved(cfg.adapters)
        zero = Path(tempfile.mkdtemp(prefix="pf1m-zero-lora-"))
        dirs[None] = adapters.write_zero_adapter(next(iter(dirs.values())), zero)
        return {
            name: LoRARequest(name or adapters.BASE, i + 1, str(path))
            for i, (name, path) in enumerate(dirs.items())
        }

    def _start_engine(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.kwargs))

    async def _restart_engine(self) -> None:
        self.engine.shutdown()
        self.engine = self._start_engine()

    async def _watch(self) -> None:
        """End the replica when its engine has died outside a restart of our own."""
        while True:
            await asyncio.sleep(self.cfg.engine.health_check_s)
            if self._ready.is_set() and self.engine is not None and self.engine.errored:
                _exit_for_restart(RuntimeError("the engine core is no longer running"))

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        if self._watchdog is None:  # started with the first request: it needs the event loop
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        prompt: dict = {"prompt": req.prompt}
        if req.images:
            prompt["multi_modal_data"] = {"image": decode_images(req.images)}
        self._requests += 1  # request ids stay unique when a uid is retried
        request_id = f"{req.uid}#{self._requests}"
        lora = self.loras.get(req.adapter)
        if req.adapter is not None and lora is None:
            raise ValueError(f"unknown adapter {req.adapter!r}")
        if self.cfg.decoding.beam_width:
            stream = self._beam_search(prompt, request_id, lora)
        else:
            sampling = vllm_sampling(self.cfg, req.seed)
            stream = self.engine.generate(prompt, sampling, request_id, lora_request=lora)
        final = None
        async for out in stream:
            final = out
        completion = final.outputs[0]
        return RewriteResult(
            req.uid,
            completion.text,
            completion.finish_reason,
            len(final.prompt_token_ids or []),
            len(completion.token_ids),
        )

    async def _beam_search(self, prompt: dict, request_id: str, lora):
        """vLLM's online beam search, the engine-level equivalent of `LLM.beam_search`."""
        from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin
        from vllm.renderers.inputs.preprocess import parse_model_prompt
        from vllm.sampling_params import BeamSearchParams

        class Search(BeamSearchOnlineMixin):
            def __init__(self, engine) -> None:
                self.engine_client, self.renderer = engine, engine.renderer

        d = self.cfg.decoding
        parsed = parse_model_prompt(self.engine.model_config, prompt)
        (engine_input,) = await self.engine.renderer.render_cmpl_async([parsed])
        params = BeamSearchParams(
            beam_width=d.beam_width,
            max_tokens=d.max_tokens,
            temperature=d.temperature,
            length_penalty=d.length_penalty,
        )
        search = Search(self.engine).beam_search(engine_input, request_id, params, lora)
        async for out in search:
            yield out

    def shutdown(self) -> None:
        self.engine.shutdown()
        self.engine = None  # its finaliser runs now, not at interpreter exit


class TransformersRewriter(_Replica):
    def __init__(
        self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None, gpus: int = 1
    ) -> None:
        """`gpus` > 1 is accepted for symmetry; batched `generate` runs on the first GPU."""
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
        if cfg.adapters:
            self.model = self._with_adapters(self.model, cfg)
        self.model.to(self.device).eval()
        self.batcher = MicroBatcher(self._generate_batch, batch, hf.max_wait_ms / 1000)

    @staticmethod
    def _with_adapters(model, cfg: RewriterConfig):
        """The model wrapped by peft with every adapter loaded under its name."""
        from peft import PeftModel

        dirs = adapters.resolved(cfg.adapters)
        names = list(dirs)
        model = PeftModel.from_pretrained(model, str(dirs[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            model.load_adapter(str(dirs[name]), adapter_name=name)
        return model

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        if req.adapter is not None and req.adapter not in {a.name for a in self.cfg.adapters}:
            raise ValueError(f"unknown adapter {req.adapter!r}")
        return await self.batcher.submit(req)

    async def _restart_engine(self) -> None:
        """A fresh batcher and worker thread. A `generate` call that never returns cannot be
        interrupted: its thread is left behind, and the model is shared."""
        self.batcher.close()
        self.batcher = MicroBatcher(self._generate_batch, self.capacity, self.batcher.max_wait_s)

    def _generate_batch(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        """One `generate` per adapter among the batch's requests, results in request order."""
        if not self.cfg.adapters:
            return self._generate(reqs)
        by_uid: dict[str, RewriteResult] = {}
        for name in dict.fromkeys(r.adapter for r in reqs):
            group = [r for r in reqs if r.adapter == name]
            if name is None:
                with self.model.disable_adapter():
                    results = self._generate(group)
            else:
                self.model.set_adapter(name)
                results = self._generate(group)
            by_uid.update((res.uid, res) for res in results)
        return [by_uid[r.uid] for r in reqs]

    def _generate(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
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
                num_beams=d.beam_width or 1,
                length_penalty=d.length_penalty,
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
