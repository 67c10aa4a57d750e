"""The model's chat template: found in its processor (or tokenizer), or given by
`rewriter.prompt.chat_template`, and used to render chat messages into the one prompt string
that every backend generates from. Loads the processor only, never the weights."""

from typing import Any

from pf1m.schemas.config import Rewriter as RewriterConfig

FIELD = "rewriter.prompt.chat_template"


class NoChatTemplate(ValueError):
    """`style: chat` with a model that ships no chat template and no override in the config."""


class ChatRenderer:
    """Renders `pf1m.pipeline.prompt.chat_messages` output with the generation prompt added."""

    def __init__(self, owner: Any, template: str, kwargs: dict[str, Any]) -> None:
        self.owner = owner  # the processor, or the tokenizer for a text-only processor
        self.template = template
        self.kwargs = dict(kwargs)

    @classmethod
    def load(cls, cfg: RewriterConfig) -> "ChatRenderer":
        """From the model's processor (with `rewriter.image` sizes, as the replicas load it)."""
        from transformers import AutoProcessor

        from pf1m.models.hub import pretrained

        name, pin = pretrained(cfg.tokenizer or cfg.model)
        processor = AutoProcessor.from_pretrained(
            name, trust_remote_code=cfg.trust_remote_code, **pin, **cfg.image.processor_kwargs()
        )
        return cls.of(processor, cfg)

    @classmethod
    def of(cls, processor: Any, cfg: RewriterConfig) -> "ChatRenderer":
        template = cfg.prompt.chat_template
        if template is None:
            tokenizer = getattr(processor, "tokenizer", None)
            for owner in (processor, tokenizer):
                found = getattr(owner, "chat_template", None)
                if isinstance(found, dict):
                    found = found.get("default")
                if isinstance(found, str) and found:
                    template = found
                    break
        if template is None:
            raise NoChatTemplate(
                f"{FIELD}: {cfg.model} ships no chat template (processor or tokenizer) and "
                f"rewriter.prompt.style is chat; give one in {FIELD} (a path or inline Jinja)"
            )
        return cls(processor, template, cfg.prompt.chat_template_kwargs)

    def render(self, messages: list[dict[str, Any]]) -> str:
        return self.owner.apply_chat_template(
            messages,
            chat_template=self.template,
            add_generation_prompt=True,
            tokenize=False,
            **self.kwargs,
        )
