"""Chat-style prompts (`rewriter.prompt.style: chat`): messages, rendering with the model's own
chat template, thinking blocks, image sizes, and the config fields that ask for them.

Processors only, no engine and no Ray (about 10 s beyond the session's demo models)."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from pf1m.pipeline.chat_template import FIELD, ChatRenderer, NoChatTemplate
from pf1m.pipeline.prompt import ImageCountMismatch, chat_messages, split_reasoning
from pf1m.pipeline.reader import Sample
from pf1m.pipeline.row_flow import RowFlow
from pf1m.schemas.config import (
    ConfigError,
    RunConfig,
    config_hash,
    load_config,
    migrate_flat_prompt,
)
from pf1m.schemas.rewrite import RewriteResult
from pf1m.schemas.run import RunManifest
from pf1m.schemas.sample import InputSample
from tests.conftest import DEMO_CONFIG, PAPER_CONFIG, ROOT

PROMPTS = Path(__file__).parent / "data" / "prompts"
EXPECTED = json.loads((PROMPTS / "expected.json").read_text())
ZERO_SHOT = ROOT / "pf1m" / "configs" / "zero-shot-qwen2.5-vl.yaml"
TEMPLATE = "Question: {instruction}\nDraft answer: {raw}\nRewrite the draft."
CHAT = [
    "rewriter.prompt.style=chat",
    f"rewriter.prompt.template={json.dumps(TEMPLATE)}",
    "rewriter.prompt.system=Be polite.",
    "rewriter.prompt.answer_marker=''",
]


def chat_config(model: Path, *extra: str) -> RunConfig:
    return load_config(DEMO_CONFIG, [f"rewriter.model={model}", *CHAT, *extra])


def png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


# --- messages and thinking blocks: pure functions ---


def test_messages_put_images_at_the_markers_or_first():
    one = chat_messages(None, TEMPLATE, "<image>\nWhat?", "x", 1)
    assert one == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Question: "},
                {"type": "image"},
                {"type": "text", "text": "\nWhat?\nDraft answer: x\nRewrite the draft."},
            ],
        }
    ]
    none = chat_messages("S", TEMPLATE, "What?", "x", 2)
    assert none[0] == {"role": "system", "content": [{"type": "text", "text": "S"}]}
    assert [p["type"] for p in none[1]["content"]] == ["image", "image", "text"]
    with pytest.raises(ImageCountMismatch):
        chat_messages(None, TEMPLATE, "<image> and <image>", "x", 1)


@pytest.mark.parametrize(
    "completion,reasoning,rest",
    [
        ("Plain answer.", None, "Plain answer."),
        ("<think> plan it </think>\nThe answer.", "plan it", "\nThe answer."),
        ("no block opened</think> here.", None, "no block opened</think> here."),
        ("<think> never closed, out of tokens", "never closed, out of tokens", ""),
    ],
)
def test_split_reasoning(completion, reasoning, rest):
    assert split_reasoning(completion, "<think>", "</think>") == (reasoning, rest)


def _row(cfg: RunConfig, completion: str, tokens: int) -> dict:
    record = InputSample(source="demo", task="vqa", instruction="What?", response="a red car")
    sample = Sample("k0", record, "demo", [], [], [])
    flow = RowFlow(cfg, "run", "<image>")
    return flow.begin("00000", sample, RewriteResult("00000/k0", completion, "stop", 9, tokens)).row


def test_thinking_block_goes_to_reasoning_and_an_unclosed_one_is_rejected():
    cfg = load_config(DEMO_CONFIG, [*CHAT, "filters.length.min_words=1"])
    row = _row(cfg, "<think>The car is red.</think>\n\nThe car in the picture is red.", 17)
    assert row["reasoning"] == "The car is red."
    assert row["rewrite_raw"] == row["output"] == "The car in the picture is red."
    assert row["output_tokens"] == 17  # the reasoning's tokens count: the engine generated them
    assert row["reject_reasons"] == []
    unclosed = _row(cfg, "<think>The car is red, so", 24)
    assert unclosed["rewrite_raw"] == "" and unclosed["reasoning"] == "The car is red, so"
    assert unclosed["reject_reasons"] == ["length:empty"]
    plain = _row(cfg, "The car is red.", 5)
    assert plain["reasoning"] is None and plain["rewrite_raw"] == "The car is red."
    other = load_config(
        DEMO_CONFIG, [*CHAT, "rewriter.prompt.think_start=<r>", "rewriter.prompt.think_end=</r>"]
    )
    assert _row(other, "<r>hmm</r> Red.", 4)["reasoning"] == "hmm"


# --- rendering with the model's own template (processor only) ---


@pytest.mark.parametrize("case", sorted(EXPECTED["cases"]))
def test_rendered_prompts_equal_the_expected_strings(demo_models, case):
    """The tiny chat model's own template, and the tiny LLaVA with llava-hf's template given in
    rewriter.prompt.chat_template (a path)."""
    instruction, raw, n = EXPECTED["cases"][case]
    llava = f"rewriter.prompt.chat_template={PROMPTS / 'llava-1.5.jinja'}"
    for name, cfg in (
        ("chat", chat_config(demo_models["chat"])),
        ("llava", chat_config(demo_models["rewriter"], llava)),
    ):
        p = cfg.rewriter.prompt
        rendered = ChatRenderer.load(cfg.rewriter).render(
            chat_messages(p.system, p.template, instruction, raw, n)
        )
        assert rendered == EXPECTED[name][case], name


def test_enable_thinking_reaches_the_template(demo_models):
    """A Qwen3-style template: thinking on, the generation prompt opens the block; off, it
    writes an empty block. The kwargs come from rewriter.prompt.chat_template_kwargs."""
    template = f"rewriter.prompt.chat_template={PROMPTS / 'thinking.jinja'}"
    messages = chat_messages("S", TEMPLATE, "What?", "x", 0)
    rendered = {}
    for flag in ("true", "false"):
        kwargs = f"rewriter.prompt.chat_template_kwargs={{enable_thinking: {flag}}}"
        cfg = chat_config(demo_models["chat"], template, kwargs)
        assert cfg.rewriter.prompt.chat_template.startswith("{%- for message")  # read inline
        rendered[flag] = ChatRenderer.load(cfg.rewriter).render(messages)
    assert rendered["true"].endswith("<|im_start|>assistant\n<think>\n")
    assert rendered["false"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def _image_tokens(cfg: RunConfig, image: bytes) -> int:
    renderer = ChatRenderer.load(cfg.rewriter)
    p = cfg.rewriter.prompt
    prompt = renderer.render(chat_messages(p.system, p.template, "<image>\nWhat?", "x", 1))
    pil = Image.open(io.BytesIO(image)).convert("RGB")
    ids = renderer.owner(text=[prompt], images=[pil], return_tensors="pt")["input_ids"][0]
    return int((ids == renderer.owner.image_token_id).sum())


def test_max_pixels_changes_the_number_of_image_tokens(demo_models):
    """96 x 96 becomes 84 x 84 (9 tokens of 28 x 28) under the model's own range; capped at
    4000 pixels it is 56 x 56, 4 tokens. vLLM gets the same sizes as mm_processor_kwargs."""
    from pf1m.actors.vllm_rewriter import vllm_engine_kwargs

    image = png(96)
    default = chat_config(demo_models["chat"])
    small = chat_config(demo_models["chat"], "rewriter.image.max_pixels=4000")
    assert _image_tokens(default, image) == 9
    assert _image_tokens(small, image) == 4
    assert "mm_processor_kwargs" not in vllm_engine_kwargs(default.rewriter, 0)
    assert vllm_engine_kwargs(small.rewriter, 0)["mm_processor_kwargs"] == {"max_pixels": 4000}


def test_a_model_without_a_chat_template_fails_at_start_naming_the_field(demo_models):
    """The tiny LLaVA ships none: the renderer, and so the replica before its engine, refuse."""
    from pf1m.actors.vllm_rewriter import VllmRewriter

    cfg = chat_config(demo_models["rewriter"])
    with pytest.raises(NoChatTemplate, match=FIELD.replace(".", r"\.")):
        ChatRenderer.load(cfg.rewriter)
    with pytest.raises(NoChatTemplate, match=FIELD.replace(".", r"\.")):
        VllmRewriter(cfg.rewriter, 0)


def test_the_zero_shot_preset_validates_and_renders(demo_models):
    cfg = load_config(ZERO_SHOT, [f"rewriter.model={demo_models['chat']}"])
    p = cfg.rewriter.prompt
    assert p.style == "chat" and cfg.rewriter.backend == "vllm"
    assert cfg.filters == load_config(PAPER_CONFIG).filters  # the paper's filters
    instruction = "<image>\nDescribe the picture."
    rendered = ChatRenderer.load(cfg.rewriter).render(
        chat_messages(p.system, p.template, instruction, "a dog on grass", 1)
    )
    assert rendered.startswith(f"<|im_start|>system\n{p.system}<|im_end|>\n<|im_start|>user\n")
    assert "Instruction: <|vision_start|><|image_pad|><|vision_end|>\nDescribe" in rendered
    assert "Draft answer: a dog on grass" in rendered
    for rule in ("helpful, detailed and polite", "Keep every fact", "does not support"):
        assert rule in rendered
    assert "Do not mention the draft" in rendered
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")


# --- configuration ---


def test_old_flat_prompt_keys_are_refused_naming_the_new_ones(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(f"extends: {DEMO_CONFIG}\nrewriter:\n  system: hi\n  template: '{{raw}}'\n")
    with pytest.raises(ConfigError) as err:
        load_config(old)
    msg = str(err.value)
    assert "rewriter.prompt.system" in msg and "rewriter.prompt.template" in msg
    with pytest.raises(ConfigError, match=r"rewriter\.prompt\.answer_marker"):
        load_config(DEMO_CONFIG, ["rewriter.answer_marker=X"])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["rewriter.backend=flamingo"], "flamingo backend takes the paper's raw template"),
        (["rewriter.prompt.template='{system} {instruction} {raw}'"], "has no {system}"),
        (["rewriter.prompt.chat_template=/no/such.jinja"], "cannot read /no/such.jinja"),
        (["rewriter.prompt.style=raw", "rewriter.prompt.chat_template_kwargs={a: 1}"], "only for"),
        (["rewriter.image.min_pixels=9", "rewriter.image.max_pixels=4"], "min_pixels"),
    ],
)
def test_chat_settings_that_cannot_run_are_refused(extra, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace(".", r"\.")):
        load_config(DEMO_CONFIG, [*CHAT, *extra])


FINGERPRINTS = {n: f"fp-{n}" for n in ("rewriter", "sts", "nli", "clip_paragraph", "reward")}
# config_hash(load_config("pf1m/configs/demo.yaml").hashed_view(FINGERPRINTS)) computed by the code
# before the prompt block (flat rewriter.system/template/answer_marker): at commit 07e0ace, and
# equally at b90ecfc once the hashed view drops its `flamingo: null`, a field added later and
# left at its default (pf1m/schemas/hashed_view.py).
DEMO_HASH_BEFORE_PROMPT_BLOCK = "de89beeef6bb5102"


def test_a_raw_prompt_keeps_the_config_hash_of_existing_runs():
    demo = load_config(DEMO_CONFIG)
    view = demo.hashed_view(FINGERPRINTS)
    assert config_hash(view) == DEMO_HASH_BEFORE_PROMPT_BLOCK
    assert view["rewriter"]["template"] == demo.rewriter.prompt.template  # the old flat keys
    assert "prompt" not in view["rewriter"] and "image" not in view["rewriter"]


def test_prompt_and_image_settings_change_the_hash_when_set():
    base = config_hash(load_config(DEMO_CONFIG).hashed_view(FINGERPRINTS))
    changed = [
        ["rewriter.prompt.think_end=</reasoning>"],
        ["rewriter.image.max_pixels=3136"],
        CHAT,
        [*CHAT, "rewriter.prompt.chat_template_kwargs={enable_thinking: false}"],
    ]
    hashes = {config_hash(load_config(DEMO_CONFIG, c).hashed_view(FINGERPRINTS)) for c in changed}
    assert base not in hashes and len(hashes) == len(changed)


def test_runs_recorded_with_flat_keys_are_read_with_the_prompt_block():
    """run.json of a run made before the prompt block: resume, audit and refilter read it."""
    data = load_config(DEMO_CONFIG).model_dump()
    prompt = data["rewriter"].pop("prompt")
    data["rewriter"].update(
        system=prompt["system"], template=prompt["template"], answer_marker=prompt["answer_marker"]
    )
    migrated = migrate_flat_prompt(data)
    assert migrated["rewriter"]["prompt"]["template"] == prompt["template"]
    assert "system" not in migrated["rewriter"]
    manifest = RunManifest(
        run_id="r", config=data, config_hash="h", hashed={}, versions={},
        started_at="t", updated_at="t",
    )  # fmt: skip
    assert RunConfig.model_validate(manifest.config).rewriter.prompt.style == "raw"


def test_audit_and_refilter_read_a_version_2_run(tmp_path, capsys):
    """tests/data/run-before-revisions holds a run written before row schema 3 (its README):
    audit verifies it, refilter re-decides its rows into version-3 files with `reasoning`
    null, reading its run.json's flat prompt keys."""
    import shutil

    import pyarrow.parquet as pq

    from pf1m.jobs.cli import main as pf1m

    old = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run-before-revisions" / "run", old)
    rejected = pq.read_table(old / "rejected" / "00000.parquet")
    assert rejected.schema.metadata[b"pf1m.schema_version"] == b"2"
    assert "reasoning" not in rejected.column_names and rejected.num_rows == 4
    assert pf1m(["audit", str(old)]) == 0
    new = tmp_path / "new"
    assert (
        pf1m(["refilter", str(old), "--set", "filters.length.max_words=500", "--to", str(new)]) == 0
    )
    assert pf1m(["audit", str(new)]) == 0
    tables = [pq.read_table(new / kind / "00000.parquet") for kind in ("data", "rejected")]
    assert sum(t.num_rows for t in tables) == 4
    for table in tables:
        assert table.schema.metadata[b"pf1m.schema_version"] == b"3"
        assert set(table.column("reasoning").to_pylist()) <= {None}
    before = [x for r in rejected.to_pylist() for x in r["reject_reasons"]]
    after = [x for t in tables for r in t.to_pylist() for x in r["reject_reasons"]]
    assert before.count("length:too_long") == 1 and "length:too_long" not in after
    capsys.readouterr()


def test_pf1m_prompt_prints_the_rendered_prompt_and_the_images(demo_models, demo_shards, capsys):
    """`pf1m prompt CONFIG --sample SHARD:KEY`: the prompt the replica sends, verbatim between
    markers, then each image with its size and image-token count. Processor only."""
    from pf1m.jobs.cli import main as pf1m
    from pf1m.pipeline.reader import read_samples

    with open(demo_shards / "00001.tar", "rb") as f:
        sample = next(s for s in read_samples(f) if len(s.images) == 1)
    sets = ["--set", f"rewriter.model={demo_models['chat']}", "--set", f"input={demo_shards}/*.tar"]
    assert pf1m(["prompt", str(ZERO_SHOT), *sets, "--sample", f"00001:{sample.key}"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(ZERO_SHOT, [f"rewriter.model={demo_models['chat']}"])
    p, r = cfg.rewriter.prompt, sample.record
    expected = ChatRenderer.load(cfg.rewriter).render(
        chat_messages(p.system, p.template, r.instruction, r.response, 1)
    )
    assert f">>>\n{expected}\n<<<\n" in out
    assert f"== images (1) ==\n1. {sample.image_names[0]} (96x96, 9 image tokens)\n" in out
    assert "== prompt tokens: " in out
    missing = ["prompt", str(ZERO_SHOT), *sets, "--sample", "00001:no-such-key"]
    assert pf1m(missing) == 2
    assert "no sample 'no-such-key'" in capsys.readouterr().err


def test_pf1m_run_refuses_a_model_without_a_chat_template_before_any_work(
    demo_models, demo_shards, tmp_path, capsys
):
    """Before Ray starts and before OUT exists: exit 2, naming the field."""
    from pf1m.jobs.cli import demo_model_overrides
    from pf1m.jobs.cli import main as pf1m

    out = tmp_path / "out"
    sets = [f"input={demo_shards}/*.tar", f"output={out}"]
    sets += demo_model_overrides(demo_models["rewriter"].parent)  # the tiny LLaVA: no template
    args = [x for s in [*sets, *CHAT] for x in ("--set", s)]
    assert pf1m(["run", str(DEMO_CONFIG), *args, "--quiet"]) == 2
    assert "rewriter.prompt.chat_template" in capsys.readouterr().err
    assert not out.exists()
