"""Chat prompts through the whole pipeline (Ray, commit, audit) on the tiny Qwen2.5-VL-shaped
chat model: vLLM (the session's `chat_rewriter` engine) and transformers generate from the same
rendered prompt; an image too large for the context is quarantined with its reason; a thinking
template's unclosed block is rejected as `length:empty`.

Cost: the session's one extra vLLM engine (~17 s, shared), a transformers replica actor and an
in-process one (a few seconds each), four small pipeline runs."""

import asyncio
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pf1m.jobs.cli import main as pf1m
from pf1m.pipeline.chat_template import ChatRenderer
from pf1m.pipeline.driver import Driver, absolutize
from pf1m.pipeline.prompt import chat_messages, sample_seed
from pf1m.pipeline.reader import read_samples
from pf1m.pipeline.row_flow import RowFlow
from pf1m.schemas.rewrite import RewriteRequest
from pf1m.schemas.run import ExitCode
from tests.conftest import chat_demo_config
from tests.tarutil import png, record, write_tar

pytestmark = pytest.mark.slow

PROMPTS = Path(__file__).parent / "data" / "prompts"


def rows(out: Path) -> dict[str, dict]:
    found = {}
    for kind in ("data", "rejected"):
        for path in sorted((out / kind).glob("*.parquet")):
            table = pq.read_table(path)
            assert table.schema.metadata[b"pf1m.schema_version"] == b"3"
            found.update((r["uid"], r) for r in table.to_pylist())
    return found


def expected_prompt_tokens(cfg, shards: Path) -> dict[str, int]:
    """Each sample's prompt rendered here and run through the model's processor: the token
    count both backends must report if they generated from this very prompt."""
    renderer = ChatRenderer.load(cfg.rewriter)
    p = cfg.rewriter.prompt
    counts = {}
    for tar in sorted(shards.glob("*.tar")):
        with open(tar, "rb") as f:
            samples = list(read_samples(f, max_images=cfg.rewriter.max_images))
        for s in samples[: cfg.limit_per_shard]:
            r = s.record
            text = renderer.render(
                chat_messages(p.system, p.template, r.instruction, r.response, len(s.images))
            )
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in s.images] or None
            ids = renderer.owner(text=[text], images=images, return_tensors="pt")["input_ids"]
            counts[f"{tar.stem}/{s.key}"] = ids.shape[1]
    return counts


def test_vllm_and_transformers_generate_from_the_same_rendered_prompt(
    ray_local, chat_rewriter, scorers, demo_models, demo_shards, tmp_path
):
    small = ["limit_per_shard=5", "resources.shards_in_flight=2", "resources.shard_task_cpus=0.05"]
    by_backend = {}
    for backend, given in (("vllm", chat_rewriter), ("transformers", None)):
        out = tmp_path / backend
        extra = [*small, f"rewriter.backend={backend}", "resources.cpus_per_replica=0.05"]
        cfg = chat_demo_config(demo_shards, demo_models, out, *extra)
        result = Driver(cfg, quiet=True, rewriters=given, scorers=scorers).run()
        assert result.exit_code == ExitCode.OK, backend
        assert pf1m(["audit", str(out)]) == 0
        by_backend[backend] = rows(out)
    vllm, hf = by_backend["vllm"], by_backend["transformers"]
    expected = expected_prompt_tokens(absolutize(cfg), demo_shards)
    assert set(vllm) == set(hf) == set(expected) and len(expected) == 20
    for uid, count in expected.items():
        assert vllm[uid]["prompt_tokens"] == hf[uid]["prompt_tokens"] == count, uid
        for row in (vllm[uid], hf[uid]):  # random weights emit <think> now and then: cut out
            assert "<think>" not in row["rewrite_raw"] and row["output_tokens"] > 0
    with_images = [u for u in expected if vllm[u]["images"]]
    assert with_images  # image tokens were counted on both sides, not just text


def test_an_image_too_large_for_the_context_is_quarantined(
    ray_local, chat_rewriter, scorers, demo_models, tmp_path
):
    """At max_pixels 640 x 640 an image takes 529 tokens: more than the 512-token context."""
    shards = tmp_path / "shards"
    shards.mkdir()
    members = [
        ("ok.json", record(instruction="<image>\nWhat colour?", response="red")),
        ("ok.png", png(size=(96, 96))),
        ("big.json", record(instruction="<image>\nWhat colour?", response="purple")),
        ("big.png", png(colour=(90, 20, 160), size=(640, 640))),
    ]
    write_tar(shards / "00000.tar", members)
    out = tmp_path / "out"
    cfg = chat_demo_config(shards, demo_models, out, "resources.shard_task_cpus=0.05")
    result = Driver(cfg, quiet=True, rewriters=chat_rewriter, scorers=scorers).run()
    assert result.exit_code == ExitCode.OK
    assert set(rows(out)) == {"00000/ok"}
    quarantined = pq.read_table(out / "quarantine" / "00000.parquet").to_pylist()
    assert [(q["uid"], q["stage"]) for q in quarantined] == [("00000/big", "rewrite")]
    text = quarantined[0]["error_text"]
    assert "512" in text and "length" in text.lower(), text  # the context it did not fit


def test_an_unclosed_thinking_block_is_rejected_and_enable_thinking_turns_it_off(
    demo_models, demo_shards, tmp_path
):
    """A Qwen3-style template opens the block in the generation prompt when thinking is on:
    random weights never close it, so no answer is left (`length:empty`) and the block is the
    row's reasoning. Off, the template closes an empty block and the completion starts outside
    it. The transformers replica in-process, on the tiny chat model (seeded, so the random
    weights give the same 24 tokens every run)."""
    from pf1m.actors.transformers_rewriter import TransformersRewriter

    template = f"rewriter.prompt.chat_template={PROMPTS / 'thinking.jinja'}"
    with open(sorted(demo_shards.glob("*.tar"))[0], "rb") as f:
        sample = next(s for s in read_samples(f) if s.images)
    results = {}
    for flag in ("true", "false"):
        kwargs = f"rewriter.prompt.chat_template_kwargs={{enable_thinking: {flag}}}"
        cfg = chat_demo_config(demo_shards, demo_models, tmp_path, template, kwargs)
        replica = TransformersRewriter(cfg.rewriter, 0, cpu_threads=1)
        p = cfg.rewriter.prompt
        r = sample.record
        messages = chat_messages(p.system, p.template, r.instruction, r.response, 1)
        uid = f"00000/{sample.key}"
        req = RewriteRequest(uid, "", sample.images, sample_seed(0, uid), messages=messages)
        (result,) = asyncio.run(replica.generate([req]))
        assert result.error_class is None, result.error_text
        flow = RowFlow(cfg, "run", replica.image_token)
        results[flag] = (result, flow.begin("00000", sample, result).row)
        replica.shutdown()
    (on, on_row), (off, _) = results["true"], results["false"]
    # Thinking on: the prompt ends inside the block, so the completion starts in it.
    assert on.completion.startswith("<think>") and "</think>" not in on.completion
    assert on_row["rewrite_raw"] == "" and on_row["reject_reasons"] == ["length:empty"]
    assert on_row["reasoning"] == on.completion.removeprefix("<think>").strip()
    assert on_row["output_tokens"] == on.output_tokens == 24  # the reasoning's tokens count
    # Thinking off: the template closed an empty block, the completion starts outside it.
    assert not off.completion.startswith("<think>")


def test_the_transformers_backend_refuses_an_image_too_large_for_the_context(
    demo_models, demo_shards, tmp_path
):
    """The same rule on the transformers backend (in-process): the oversized request fails
    alone with its token count, its batch-mate is generated."""
    from pf1m.actors.transformers_rewriter import TransformersRewriter

    cfg = chat_demo_config(demo_shards, demo_models, tmp_path)
    replica = TransformersRewriter(cfg.rewriter, 0, cpu_threads=1)
    p = cfg.rewriter.prompt
    messages = chat_messages(p.system, p.template, "<image>\nWhat colour?", "purple", 1)
    reqs = [
        RewriteRequest("s/big", "", [png(size=(640, 640))], 1, messages=messages),
        RewriteRequest("s/ok", "", [png(size=(96, 96))], 2, messages=messages),
    ]
    big, ok = asyncio.run(replica.generate(reqs))
    replica.shutdown()
    assert big.error_class == "PromptTooLong" and big.prompt_tokens > 512
    assert "exceed rewriter.max_model_len 512" in big.error_text
    assert ok.error_class is None and ok.output_tokens > 0
