"""The `flamingo` rewriter backend: the paper's own Polite Flamingo (OpenFlamingo v1 with a LoRA
on LLaMA, `pf1m/models/flamingo/`), batched `generate` on transformers. No serving engine loads this
architecture (FLAMINGO.md, "Serving engines"), so it runs like the `transformers` backend:
requests from every shard gathered by a micro-batcher, one `generate` per batch.

Prompts carry `<image><|endofchunk|>` at each image's place; without markers the images go at
the end of the instruction, as the authors fed them (under the v1 media rule, text attends the
image that follows it, so images placed first would leave the instruction attending nothing).
"""

import logging

from pf1m.actors.batched import BatchedReplica
from pf1m.actors.replica import PromptTooLong, decode_images, set_threads, too_long
from pf1m.pipeline.batch_fit import Shape, fit_batch
from pf1m.schemas.config import Rewriter as RewriterConfig
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image><|endofchunk|>"


class FlamingoRewriter(BatchedReplica):
    images_without_markers = "append"

    def __init__(
        self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None, gpus: int = 1
    ) -> None:
        """`gpus` > 1 is accepted for symmetry; the model runs on the first GPU."""
        set_threads(cpu_threads)
        import torch

        from pf1m.models.flamingo import FlamingoRunner

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        hf = cfg.transformers
        if hf.dtype == "auto":  # the authors ran fp16 on GPUs; CPUs want fp32
            dtype = torch.float16 if self.device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, hf.dtype)
        self.runner = FlamingoRunner.load(cfg.model, cfg.flamingo, dtype, self.device)
        logger.info("Polite Flamingo loaded from %s:\n%s", cfg.model, self.runner.report)
        batch = 1 if cfg.deterministic else hf.batch_size
        if self.device == "cuda":
            batch = self._fit_gpu(cfg, batch, dtype)
        super().__init__(cfg, IMAGE_TOKEN, batch)
        self._start_batching(hf.max_wait_ms / 1000)

    def _fit_gpu(self, cfg: RewriterConfig, wanted: int, dtype) -> int:
        """The configured batch, lowered to what the GPU's free memory holds (or refused)."""
        import torch

        free, total = torch.cuda.mem_get_info()
        layers, hidden = self.runner.lm_shape
        shape = Shape(layers, hidden, torch.finfo(dtype).bits // 8)
        beams = cfg.decoding.beam_width or 1
        fitted = fit_batch(wanted, total, free, shape, cfg.max_model_len, beams,
                           cfg.engine.gpu_memory_utilization)  # fmt: skip
        if fitted < wanted:
            logger.warning(
                "rewriter.transformers.batch_size %d lowered to %d: the KV cache of %d beams x "
                "%d tokens fits %d samples in this GPU's memory", wanted, fitted, beams,
                cfg.max_model_len, fitted,
            )  # fmt: skip
        return fitted

    async def _run(self, req: RewriteRequest) -> RewriteResult:
        if req.adapter is not None:
            raise ValueError("the flamingo backend serves no adapters")
        why = too_long(len(self.runner.encode(req.prompt)), self.cfg)
        if why is not None:
            raise PromptTooLong(why)
        return await self.batcher.submit(req)

    def _generate_batch(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        d = self.cfg.decoding
        outs = self.runner.generate(
            [r.prompt for r in reqs],
            [decode_images(r.images) for r in reqs],
            max_new_tokens=d.max_tokens,
            do_sample=d.temperature > 0,
            temperature=d.temperature,
            top_k=d.top_k,
            top_p=d.top_p,
            num_beams=d.beam_width or 1,
            length_penalty=d.length_penalty,
            no_repeat_ngram_size=d.no_repeat_ngram_size,
            repetition_penalty=d.repetition_penalty,
            stop=d.stop,
            seed=reqs[0].seed,  # in deterministic mode (one sample a call): the sample's own
        )
        return [
            RewriteResult(r.uid, g.text, g.finish_reason, g.prompt_tokens, len(g.new_ids))
            for r, g in zip(reqs, outs, strict=True)
        ]

    def shutdown(self) -> None:
        del self.runner
