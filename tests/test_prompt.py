"""Prompt rendering with the `paper` preset, answer extraction and per-sample seeds."""

import pytest

from pf1m.pipeline.prompt import (
    ImageCountMismatch,
    extract_answer,
    render_prompt,
    sample_seed,
)
from pf1m.schemas.config import load_config
from tests.conftest import PAPER_CONFIG

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER_CONFIG).rewriter.prompt


def render(paper, instruction: str, raw: str, n: int, token: str = "<image>") -> str:
    return render_prompt(paper.template, paper.system, instruction, raw, n, token)


def test_paper_text_only_is_the_published_prompt(paper):
    got = render(paper, "What is a triangle?", "3 sides", 0)
    assert got == (
        f"{SYSTEM}\n### Human: What is a triangle?\n"
        "### Assistent: (Drafted Response): 3 sides\n (Revised Response): "
    )


def test_one_image_uses_the_models_own_token(paper):
    got = render(paper, "<image>\nWhat is this?", "a photo of a cat", 1, token="<img_tok>")
    assert "### Human: <img_tok>\nWhat is this?\n" in got
    assert "<image>" not in got


def test_two_images_keep_their_positions(paper):
    got = render(paper, "Before: <image> After: <image> What changed?", "gone", 2, token="<I>")
    assert "### Human: Before: <I> After: <I> What changed?\n" in got


def test_no_markers_put_the_images_first(paper):
    got = render(paper, "What changed?", "gone", 2, token="<I>")
    assert "### Human: <I>\n<I>\nWhat changed?\n" in got


FLAMINGO_IMAGE = "<image><|endofchunk|>"


def test_flamingo_appends_images_after_a_marker_less_instruction(paper):
    """As the authors fed Polite Flamingo: under the v1 media rule text attends the image that
    follows it, so the instruction comes first and each image after it, in order."""
    got = render_prompt(
        paper.template, paper.system, "What changed?", "gone", 2, FLAMINGO_IMAGE, "append"
    )
    assert f"### Human: What changed?{FLAMINGO_IMAGE}{FLAMINGO_IMAGE}\n### Assistent:" in got
    text_only = render_prompt(
        paper.template, paper.system, "Hi?", "hello", 0, FLAMINGO_IMAGE, "append"
    )
    assert "### Human: Hi?\n### Assistent:" in text_only


def test_flamingo_keeps_marker_positions(paper):
    got = render_prompt(
        paper.template, paper.system, "A <image> then B <image>?", "x", 2, FLAMINGO_IMAGE, "append"
    )
    assert f"### Human: A {FLAMINGO_IMAGE} then B {FLAMINGO_IMAGE}?\n" in got


@pytest.mark.parametrize("markers,images", [(1, 2), (2, 1), (2, 0)])
def test_marker_count_mismatch_is_an_error(paper, markers, images):
    with pytest.raises(ImageCountMismatch, match=f"{markers} <image> markers for {images} images"):
        render(paper, "<image> " * markers + "Describe.", "raw", images)


def test_braces_in_sample_text_are_not_template_fields(paper):
    got = render(paper, "What is {raw}?", "a {system} b", 0)
    assert "### Human: What is {raw}?" in got and "(Drafted Response): a {system} b" in got


def test_answer_after_the_last_marker_or_whole_completion():
    marker = "(Revised Response):"
    assert extract_answer("  A polite answer. ", marker) == "A polite answer."
    assert extract_answer("x (Revised Response): one (Revised Response):  two ", marker) == "two"
    assert extract_answer("(Revised Response):", marker) == ""


def test_seed_depends_on_run_seed_and_uid_only():
    assert sample_seed(0, "a/1") == sample_seed(0, "a/1")
    assert sample_seed(0, "a/1") != sample_seed(1, "a/1")
    assert sample_seed(0, "a/1") != sample_seed(0, "a/2")
    assert 0 <= sample_seed(123, "x") < 2**31
