"""Polite Flamingo against what the authors' own code produced on the same tiny random weights
(tests/data/flamingo-ref/dev, see its README), through the loader a replica uses: prompt ids,
decoded answers, vision_x, the media rule, prompt logits and generated ids. fp32 on CPU.
About 5 s."""

import pytest
import torch
from PIL import Image
from transformers import NoRepeatNGramLogitsProcessor

from pf1m.models.flamingo import FlamingoRunner
from pf1m.models.flamingo.cross_attention import media_index
from pf1m.models.flamingo.images import vision_batch
from pf1m.models.flamingo.model import mask_positions
from pf1m.models.flamingo.ngram import NoRepeatNGram
from tests.flamingofiles import (
    FIXTURE,
    load_released,
    one_thread,
    reference,
)

REF = reference()
CASES = list(REF["cases"])
VARIANTS = {  # reference.json's generation variants (max_new_tokens 12, no sampling)
    "greedy": {"num_beams": 1, "no_repeat_ngram_size": None},
    "beam3": {"num_beams": 3, "no_repeat_ngram_size": None},
    "greedy_nrng3": {"num_beams": 1, "no_repeat_ngram_size": 3},
    "greedy_nrng2": {"num_beams": 1, "no_repeat_ngram_size": 2},
    "beam3_nrng3": {"num_beams": 3, "no_repeat_ngram_size": 3},
}
LOGIT_TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def runner() -> FlamingoRunner:
    return load_released()


@pytest.fixture(scope="module")
def tensors() -> dict:
    return torch.load(FIXTURE / "reference.pt", weights_only=True)


def images(case: str) -> list[list[Image.Image]]:
    rows = REF["cases"][case]["images_per_row"]
    return [[Image.open(FIXTURE / "images" / name) for name in row] for row in rows]


def unpadded(case: str) -> list[list[int]]:
    c = REF["cases"][case]
    return [
        [t for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(c["input_ids"], c["attention_mask"], strict=True)
    ]


def generate(runner: FlamingoRunner, case: str, **kw) -> list:
    return runner.generate(
        REF["cases"][case]["prompts"],
        images(case),
        max_new_tokens=REF["settings"]["max_new_tokens"],
        do_sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        length_penalty=1.0,
        repetition_penalty=1.0,
        stop=[],
        seed=None,
        **kw,
    )


@pytest.mark.parametrize("case", CASES)
def test_prompt_ids_equal_the_authors_tokenizer(runner, case):
    assert [runner.encode(p) for p in REF["cases"][case]["prompts"]] == unpadded(case)


def test_tokenizer_probes_give_the_authors_pieces(runner):
    tok = runner.tokenizer
    names = {1: "<s>", tok.eoc_id: "<|endofchunk|>", tok.media_id: "<image>"}
    for text, pieces in REF["tokenizer"]["probe"].items():
        got = [names.get(i) or tok.sp.id_to_piece(i) for i in runner.encode(text)]
        assert got == pieces, text
    assert (len(tok), tok.eoc_id, tok.media_id) == (643, 640, 641)


@pytest.mark.parametrize("case", CASES)
def test_vision_x_equals_the_inferencers(tensors, case):
    got = vision_batch(images(case), REF["model"]["clip"]["vision_cfg"]["image_size"])
    assert torch.equal(got, tensors["vision_x"][case])


@pytest.mark.parametrize("case", CASES)
def test_media_index_per_token_follows_the_v1_rule(runner, case):
    ids = torch.tensor(REF["cases"][case]["input_ids"])
    got = media_index(ids, runner.tokenizer.media_id)
    assert got.tolist() == REF["cases"][case]["xattn_image_index_per_token"]


def test_media_index_example_of_flamingo_md():
    x, img = 5, 9  # `..x x <img> x x x <img> x x` -> 1 1 1 1 2 2 2 2 0 0 0
    ids = torch.tensor([[x, x, x, img, x, x, x, img, x, x, x]])
    assert media_index(ids, img).tolist() == [[1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0]]


@pytest.mark.parametrize("case", ["a_text_only", "b_one_image", "c_two_images"])
def test_prompt_logits_agree(runner, tensors, case):
    c = REF["cases"][case]
    with torch.inference_mode():
        logits = runner.model(
            torch.tensor(c["input_ids"]),
            torch.tensor(c["attention_mask"]),
            tensors["vision_x"][case],
        )
    assert (logits - tensors["logits"][case]).abs().max().item() < LOGIT_TOL


def test_left_padded_batch_last_position_agrees_with_generate_positions(runner, tensors):
    case = "d_batch_left_padded"
    c = REF["cases"][case]
    mask = torch.tensor(c["attention_mask"])
    assert not mask.all()  # the case is left padded
    with torch.inference_mode():
        logits = runner.model(
            torch.tensor(c["input_ids"]), mask, tensors["vision_x"][case], mask_positions(mask)
        )
    want = tensors["prefill_logits_cumsum_positions"][case]
    assert (logits[:, -1] - want).abs().max().item() < LOGIT_TOL


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_generated_ids_and_text_equal(runner, case, variant):
    want = REF["cases"][case]["generation"][variant]
    out = generate(runner, case, **VARIANTS[variant])
    assert [g.new_ids for g in out] == want["new_ids"]
    assert [g.text for g in out] == want["decoded_new_only"]
    assert [g.prompt_tokens for g in out] == [len(r) for r in unpadded(case)]
    assert {g.finish_reason for g in out} == {"length"}  # 12 tokens, no EOS in the reference


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_ban_equals_transformers_processor(n):
    gen = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 6, (5, 40), generator=gen)  # a small vocabulary repeats n-grams
    scores = torch.randn(5, 6, generator=gen)
    want = NoRepeatNGramLogitsProcessor(n)(ids, scores.clone())
    assert torch.equal(NoRepeatNGram(n)(ids, scores.clone()), want)
    assert torch.isinf(want).any()  # the comparison covers some bans


def test_stop_string_cuts_text_and_finishes_as_stop(runner):
    case = "b_one_image"
    full = REF["cases"][case]["generation"]["greedy"]["decoded_new_only"][0]
    stop = full[len(full) // 2 :][:3]  # a piece of the greedy answer
    (g,) = generate(runner, case, num_beams=1, no_repeat_ngram_size=None)
    (s,) = runner.generate(
        REF["cases"][case]["prompts"], images(case), max_new_tokens=12, do_sample=False,
        temperature=1.0, top_k=0, top_p=1.0, num_beams=1, length_penalty=1.0,
        no_repeat_ngram_size=None, repetition_penalty=1.0, stop=[stop], seed=None,
    )  # fmt: skip
    assert s.finish_reason == "stop" and s.text == full[: full.index(stop)]
    assert len(s.new_ids) < len(g.new_ids) and g.new_ids[: len(s.new_ids)] == s.new_ids


def test_images_and_markers_must_agree(runner):
    with pytest.raises(ValueError, match="1 <image> markers but 0 images"):
        runner.generate(
            REF["cases"]["b_one_image"]["prompts"], [[]], max_new_tokens=2, do_sample=False,
            temperature=1.0, top_k=0, top_p=1.0, num_beams=1, length_penalty=1.0,
            no_repeat_ngram_size=None, repetition_penalty=1.0, stop=[], seed=None,
        )  # fmt: skip
