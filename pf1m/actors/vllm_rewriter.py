"""The `vllm` rewriter backend: one asynchronous vLLM engine per replica. Calls from many
shards arrive concurrently (async actor, high max_concurrency); each request goes straight into
the engine, whose continuous batching mixes them. A dead engine ends the replica so that Ray
restarts it."""

import asyncio
import logging
import os
import tempfile
from pathlib import Path

from pf1m.actors import adapters
from pf1m.actors.replica import (
    Replica,
    decode_images,
    exit_for_restart,
    resolve_image_token,
    set_threads,
)
from pf1m.schemas.config import Rewriter as RewriterConfig
from pf1m.schemas.modelref import load_args
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult

logger = logging.getLogger(__name__)

NGRAM_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
UNIPROC_EXECUTOR = "vllm.v1.executor.uniproc_executor.UniProcExecutor"


def vllm_engine_kwargs(cfg: RewriterConfig, seed: int, gpus: int = 1, on_cpu: bool = False) -> dict:
    """vLLM engine arguments for a rewriter config (EngineArgs / AsyncEngineArgs / LLM). A
    replica holding several GPUs shards the model over them (tensor parallel, inside the
    actor's node). On vLLM's CPU build, `engine.cpu_executor` picks the executor."""
    model, revision = load_args(cfg.model)
    tokenizer, tokenizer_revision = load_args(cfg.tokenizer) if cfg.tokenizer else (None, revision)
    kwargs = dict(
        model=model,
        revision=revision,
        tokenizer=tokenizer,
        tokenizer_revision=tokenizer_revision,
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
    if cfg.image.processor_kwargs():  # dynamic resolution: the image sizes, so token counts
        kwargs["mm_processor_kwargs"] = cfg.image.processor_kwargs()
    if cfg.decoding.no_repeat_ngram_size:
        kwargs["logits_processors"] = [NGRAM_PROCESSOR]
    if gpus > 1:
        kwargs.update(tensor_parallel_size=gpus, distributed_executor_backend="mp")
    elif on_cpu and cfg.engine.cpu_executor == "uni" and one_rank(cfg.engine.extra_args):
        # by qualified name: the CPU platform turns a plain "uni" back into "mp"
        kwargs["distributed_executor_backend"] = UNIPROC_EXECUTOR
    return {**kwargs, **cfg.engine.extra_args}


def one_rank(extra_args: dict) -> bool:
    """Whether the engine runs one model rank: the uniprocess executor starts only rank 0, so
    tensor or pipeline parallelism asked for through `engine.extra_args` keeps vLLM's choice."""
    sizes = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
    return all(int(extra_args.get(size, 1)) == 1 for size in sizes)


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


class VllmRewriter(Replica):
    def __init__(
        self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None, gpus: int = 1
    ) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.engine.cpu_kvcache_gb))
        if cpu_threads:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        set_threads(cpu_threads)
        token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        from vllm.platforms import current_platform

        self.kwargs = vllm_engine_kwargs(cfg, seed, gpus, current_platform.is_cpu())
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
                exit_for_restart(RuntimeError("the engine core is no longer running"))

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
