"""The `transformers` rewriter backend: batched `generate` for models vLLM cannot load, and
for deterministic runs (one sample per call, seeded with the sample's own seed). Requests from
all calls are gathered into batches by a micro-batcher; LoRA adapters through peft."""

from pf1m.actors import adapters
from pf1m.actors.batched import BatchedReplica
from pf1m.actors.replica import (
    PromptTooLong,
    decode_images,
    resolve_image_token,
    set_threads,
    too_long,
)
from pf1m.models.hub import pretrained
from pf1m.schemas.config import Rewriter as RewriterConfig
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult


class TransformersRewriter(BatchedReplica):
    def __init__(
        self, cfg: RewriterConfig, seed: int, cpu_threads: int | None = None, gpus: int = 1
    ) -> None:
        """`gpus` > 1 is accepted for symmetry; batched `generate` runs on the first GPU."""
        set_threads(cpu_threads)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        token = resolve_image_token(cfg.model, cfg.trust_remote_code, cfg.image_token)
        hf = cfg.transformers
        batch = 1 if cfg.deterministic else hf.batch_size
        super().__init__(cfg, token, batch)
        kw = {"trust_remote_code": cfg.trust_remote_code}
        sizes = cfg.image.processor_kwargs()  # dynamic resolution: as vLLM's processor has them
        processor, pin = pretrained(cfg.tokenizer or cfg.model)
        self.processor = AutoProcessor.from_pretrained(processor, **kw, **pin, **sizes)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # generation continues every prompt at its end
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if hf.dtype == "auto" else getattr(torch, hf.dtype)
        model, pin = pretrained(cfg.model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype, **kw, **pin)
        if cfg.adapters:
            self.model = self._with_adapters(self.model, cfg)
        self.model.to(self.device).eval()
        self._start_batching(hf.max_wait_ms / 1000)

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

    def _without_too_long(self, reqs: list[RewriteRequest], lengths: list[int]) -> list:
        """Requests whose prompt (images expanded) leaves no room for `decoding.max_tokens` in
        `max_model_len` fail alone, with the reason, like vLLM's refusal; the rest generate."""
        why = {r.uid: too_long(n, self.cfg) for r, n in zip(reqs, lengths, strict=True)}
        fits = [r for r in reqs if why[r.uid] is None]
        done = {res.uid: res for res in (self._generate(fits) if fits else [])}
        for r, n in zip(reqs, lengths, strict=True):
            if r.uid not in done:
                error = PromptTooLong.__name__
                done[r.uid] = RewriteResult(r.uid, None, None, n, None, error, why[r.uid])
        return [done[r.uid] for r in reqs]

    def _generate(self, reqs: list[RewriteRequest]) -> list[RewriteResult]:
        import torch

        d = self.cfg.decoding
        images = [img for r in reqs for img in decode_images(r.images)]
        inputs = self.processor(
            images=images or None, text=[r.prompt for r in reqs], padding=True, return_tensors="pt"
        ).to(self.device)
        lengths = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
        if max(lengths) + d.max_tokens > self.cfg.max_model_len:
            return self._without_too_long(reqs, lengths)
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
