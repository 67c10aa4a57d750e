"""Which config fields enter the config hash, so that upgrading pf1m does not orphan a run.

A run directory is resumed only while its config hash is unchanged. A field added to the
config in a later version must therefore not change the hash of runs that never set it: a
field enters the hashed view only when its value differs from its default, or when it is
required. The fields of the first hashed view (run.json version 1, pf1m 0.1.0) stay in it
whatever their value, as they always were, so hashes written then keep matching.
"""

from typing import Any

from pydantic import BaseModel

# Every field path of the version-1 hashed view (`[]` marks a list's elements). Frozen: a new
# field is added to the config models, never here.
V1_FIELDS = frozenset(
    {
        "filters.change",
        "filters.clip_paragraph",
        "filters.clip_paragraph.max_sentences",
        "filters.clip_paragraph.model",
        "filters.clip_paragraph.pretrained",
        "filters.clip_paragraph.threshold",
        "filters.clip_paragraph.trust_remote_code",
        "filters.length",
        "filters.length.max_words",
        "filters.length.min_words",
        "filters.length.reject_no_eos",
        "filters.nli",
        "filters.nli.hypothesis",
        "filters.nli.model",
        "filters.nli.premise",
        "filters.nli.trust_remote_code",
        "filters.reward",
        "filters.reward.min_gain",
        "filters.reward.min_reward",
        "filters.reward.model",
        "filters.reward.trust_remote_code",
        "filters.scoring",
        "filters.sts",
        "filters.sts.model",
        "filters.sts.threshold",
        "filters.sts.trust_remote_code",
        "filters.tasks",
        "rewriter.adapters",
        "rewriter.adapters[]",
        "rewriter.adapters[].name",
        "rewriter.adapters[].path",
        "rewriter.adapters[].sources",
        "rewriter.adapters[].tasks",
        "rewriter.answer_marker",
        "rewriter.backend",
        "rewriter.decoding",
        "rewriter.decoding.beam_width",
        "rewriter.decoding.length_penalty",
        "rewriter.decoding.max_tokens",
        "rewriter.decoding.no_repeat_ngram_size",
        "rewriter.decoding.repetition_penalty",
        "rewriter.decoding.stop",
        "rewriter.decoding.temperature",
        "rewriter.decoding.top_k",
        "rewriter.decoding.top_p",
        "rewriter.deterministic",
        "rewriter.dtype",
        "rewriter.image_token",
        "rewriter.max_images",
        "rewriter.max_model_len",
        "rewriter.model",
        "rewriter.system",
        "rewriter.template",
        "rewriter.tokenizer",
        "rewriter.trust_remote_code",
    }
)


def _value(value: Any, path: str) -> Any:
    """A field's value as the view holds it: models pruned, lists of models element-wise."""
    if isinstance(value, BaseModel):
        return hashed_fields(value, path)
    if isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
        return [_value(v, path + "[]") for v in value]
    if isinstance(value, list | tuple):
        return [_value(v, path) for v in value]
    if isinstance(value, dict):
        return {k: _value(v, path) for k, v in value.items()}
    return value


def hashed_fields(model: BaseModel, path: str, exclude: frozenset[str] = frozenset()) -> dict:
    """`model` (at dotted `path` in the config) as the hash sees it: version-1 fields and
    required fields always, any other field only when it differs from its default."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        if name in exclude:
            continue
        here = f"{path}.{name}"
        value = getattr(model, name)
        keep = (
            here in V1_FIELDS
            or field.is_required()
            or value != field.get_default(call_default_factory=True)
        )
        if keep:
            out[name] = _value(value, here)
    return out
