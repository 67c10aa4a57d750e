"""`pf1m prompt`: the exact prompt the rewriter gets for one input sample, and where each of its
images goes, rendered by the code the pipeline runs. Loads the model's processor only (for its
image token, chat template and image sizes), never the weights."""

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pf1m.pipeline.chat_template import ChatRenderer
from pf1m.pipeline.plan import PlanError, plan_shards
from pf1m.pipeline.prompt import chat_messages, render_prompt
from pf1m.pipeline.reader import Bad, Sample, read_samples
from pf1m.pipeline.storage import open_url
from pf1m.schemas.config import ConfigError, RunConfig


@dataclass
class PromptView:
    prompt: str
    style: str
    images: list[str]  # one line per image: its member, size, placeholder and token count
    prompt_tokens: int | None  # after the processor expands the image placeholders

    def format(self, max_model_len: int) -> str:
        lines = [f"== prompt (style {self.style}), between the markers ==", ">>>"]
        lines += [self.prompt, "<<<", f"== images ({len(self.images)}) =="]
        lines += self.images or ["(none)"]
        if self.prompt_tokens is not None:
            lines.append(f"== prompt tokens: {self.prompt_tokens} (max_model_len {max_model_len})")
        return "\n".join(lines)


def find_sample(cfg: RunConfig, spec: str) -> Sample:
    """`SHARD:KEY`: SHARD is a tar path or URL, or the name of one of the config's input shards."""
    shard, sep, key = spec.rpartition(":")
    if not sep or not shard or not key:
        raise ConfigError(f"--sample {spec!r}: expected SHARD:KEY (a tar or a shard name)")
    url, source = shard, None
    if not Path(shard).exists() and "://" not in shard:
        try:
            jobs = {j.shard: j for j in plan_shards(cfg.inputs())}
        except PlanError as exc:
            raise ConfigError(f"--sample {spec!r}: {exc}") from None
        job = jobs.get(shard) or jobs.get(posixpath.splitext(posixpath.basename(shard))[0])
        if job is None:
            raise ConfigError(f"--sample {spec!r}: no file {shard} and no such input shard")
        url, source = job.url, job.source
    with open_url(url) as stream:
        for item in read_samples(stream, source, cfg.rewriter.max_images):
            if item.key != key:
                continue
            if isinstance(item, Bad):
                raise ConfigError(
                    f"--sample {spec!r}: the pipeline quarantines it ({item.stage}/"
                    f"{item.error_class}: {item.error_text})"
                )
            return item
    raise ConfigError(f"--sample {spec!r}: no sample {key!r} in {url}")


def _processor(cfg: RunConfig):
    from transformers import AutoProcessor

    from pf1m.models.hub import pretrained

    name, pin = pretrained(cfg.rewriter.tokenizer or cfg.rewriter.model)
    kwargs = cfg.rewriter.image.processor_kwargs()
    trust = cfg.rewriter.trust_remote_code
    return AutoProcessor.from_pretrained(name, trust_remote_code=trust, **pin, **kwargs)


def view_prompt(cfg: RunConfig, sample: Sample) -> PromptView:
    """The prompt as the replica sends it to the engine (chat: rendered with the model's chat
    template; raw: the template with the processor's image token, or flamingo's placement)."""
    rw, rec = cfg.rewriter, sample.record
    p = rw.prompt
    n = len(sample.images)
    processor = None
    if rw.backend == "flamingo":
        from pf1m.actors.flamingo_rewriter import IMAGE_TOKEN

        placeholder, where = IMAGE_TOKEN, "append"
        prompt = render_prompt(p.template, p.system or "", rec.instruction, rec.response, n,
                               placeholder, where)  # fmt: skip
    else:
        processor = _processor(cfg)
        if p.style == "chat":
            messages = chat_messages(p.system, p.template, rec.instruction, rec.response, n)
            prompt = ChatRenderer.of(processor, rw).render(messages)
        else:
            from pf1m.actors.replica import image_token_of

            placeholder = rw.image_token or image_token_of(processor, rw.model)
            prompt = render_prompt(p.template, p.system or "", rec.instruction, rec.response, n,
                                   placeholder)  # fmt: skip
    pils = [Image.open(io.BytesIO(b)).convert("RGB") for b in sample.images]
    per_image = _tokens_per_image(processor, pils)
    lines = []
    for i, (name, pil) in enumerate(zip(sample.image_names, pils, strict=True)):
        count = f", {per_image[i]} image tokens" if per_image else ""
        lines.append(f"{i + 1}. {name} ({pil.width}x{pil.height}{count})")
    tokens = None
    if processor is not None:
        ids = processor(text=[prompt], images=pils or None, return_tensors="pt")["input_ids"]
        tokens = int(ids.shape[1])
    return PromptView(prompt, p.style, lines, tokens)


def _tokens_per_image(processor, pils: list) -> list[int]:
    """Each image's token count once the processor expands its placeholder (dynamic-resolution
    models: it depends on the image's size); empty when the processor names no image token."""
    token = getattr(processor, "image_token", None)
    token_id = getattr(processor, "image_token_id", None)
    if processor is None or token is None or token_id is None:
        return []
    counts = []
    for pil in pils:
        ids = processor(text=[token], images=[pil], return_tensors="pt")["input_ids"][0]
        counts.append(int((ids == token_id).sum()))
    return counts
