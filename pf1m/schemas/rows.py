"""Arrow schemas of the output files (data/, rejected/, quarantine/).

The schema and its version go into each Parquet file's metadata, together with the Hugging Face
`datasets` features so that `load_dataset("parquet", ...)` decodes `images` as images.
"""

import json

import pyarrow as pa

# 2: quarantine rows carry source and task when known. 3: output rows carry `reasoning`, a
# thinking model's block cut from the answer (null when absent); readers take version-2 files
# as having it null.
SCHEMA_VERSION = "3"

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARAGRAPH_TYPE = pa.struct([("text", pa.string()), ("clip_score", pa.float32())])
MEMBER_TYPE = pa.struct([("name", pa.string()), ("size", pa.int64())])

# Order of nli_logits, whatever the model's own label order (DESIGN.md).
NLI_LABELS: tuple[str, str, str] = ("contradiction", "entailment", "neutral")

_OUTPUT_FIELDS: list[pa.Field] = [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("task", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("original", pa.string()),
    pa.field("rewrite_raw", pa.string()),
    pa.field("reasoning", pa.string()),
    pa.field("output", pa.string()),
    pa.field("images", pa.list_(IMAGE_TYPE)),
    pa.field("rouge_l", pa.float32()),
    pa.field("sts", pa.float32()),
    pa.field("nli_logits", pa.list_(pa.float32())),
    pa.field("nli_label", pa.string()),
    pa.field("paragraphs", pa.list_(PARAGRAPH_TYPE)),
    pa.field("reward", pa.float32()),
    pa.field("reward_original", pa.float32()),
    pa.field("finish_reason", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reject_reasons", pa.list_(pa.string())),
    pa.field("run_id", pa.string()),
]

_QUARANTINE_FIELDS: list[pa.Field] = [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("task", pa.string()),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_class", pa.string(), nullable=False),
    pa.field("error_text", pa.string()),
    pa.field("members", pa.list_(MEMBER_TYPE)),
    pa.field("rewrite_raw", pa.string()),
    pa.field("run_id", pa.string()),
]

OUTPUT_COLUMNS: tuple[str, ...] = tuple(f.name for f in _OUTPUT_FIELDS)
QUARANTINE_COLUMNS: tuple[str, ...] = tuple(f.name for f in _QUARANTINE_FIELDS)


def _hf_feature(dtype: pa.DataType) -> dict:
    """The `datasets` feature dict for an Arrow type (only the types used here)."""
    if dtype == IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_list(dtype):
        return {"_type": "List", "feature": _hf_feature(dtype.value_type)}
    if pa.types.is_struct(dtype):
        return {
            dtype.field(i).name: _hf_feature(dtype.field(i).type) for i in range(dtype.num_fields)
        }
    names = {
        pa.string(): "string",
        pa.binary(): "binary",
        pa.float32(): "float32",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.bool_(): "bool",
    }
    return {"_type": "Value", "dtype": names[dtype]}


def _with_metadata(fields: list[pa.Field], kind: str) -> pa.Schema:
    features = {f.name: _hf_feature(f.type) for f in fields}
    metadata = {
        b"pf1m.schema": kind.encode(),
        b"pf1m.schema_version": SCHEMA_VERSION.encode(),
        b"huggingface": json.dumps({"info": {"features": features}}).encode(),
    }
    return pa.schema(fields, metadata=metadata)


OUTPUT_SCHEMA: pa.Schema = _with_metadata(_OUTPUT_FIELDS, "output")
QUARANTINE_SCHEMA: pa.Schema = _with_metadata(_QUARANTINE_FIELDS, "quarantine")
