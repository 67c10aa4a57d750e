"""Rule filter decisions and the recorded Rouge-L score."""

import pytest

from pf1m.filters.change import normalize
from pf1m.filters.rouge import rouge_l
from pf1m.pipeline.prompt import extract_answer
from pf1m.pipeline.row_flow import RowFlow
from pf1m.schemas.config import load_config
from tests.conftest import PAPER_CONFIG


def rules_of(*overrides: str):
    """The rule decisions under the paper preset with these overrides."""
    return RowFlow(load_config(PAPER_CONFIG, list(overrides)), "t").rules


@pytest.fixture(scope="module")
def filters():
    return rules_of("filters.length.min_words=3", "filters.length.max_words=8")


def row(rewrite: str, original: str = "blue", finish: str = "stop", task: str = "vqa") -> dict:
    return {"rewrite_raw": rewrite, "original": original, "finish_reason": finish, "task": task}


def test_keeps_a_changed_rewrite_of_fitting_length(filters):
    assert filters(row("The sky is blue today.")) == []


def test_length_reasons(filters):
    assert filters(row("Blue sky.")) == ["length:too_short"]
    assert filters(row("word " * 9)) == ["length:too_long"]
    assert filters(row("It is clearly blue.", finish="length")) == ["length:no_eos"]
    assert filters(row("")) == ["length:empty"]


def test_empty_and_echoed_answers_are_recorded_as_such(filters):
    """What the rewriter said is judged after the last answer marker: nothing there is
    `length:empty`; the raw annotation said again (any case or punctuation) is unchanged."""
    marker = "(Revised Response):"
    empty = extract_answer("(Revised Response): draft (Revised Response):  \n", marker)
    assert filters(row(empty)) == ["length:empty"]
    raw = "the sky is blue, mostly"
    echoed = extract_answer("(Revised Response): The sky is blue mostly!", marker)
    assert filters(row(echoed, original=raw)) == ["change:unchanged"]


def test_no_eos_can_be_allowed():
    rules = rules_of("filters.length.reject_no_eos=false")
    assert rules(row("It is clearly blue.", finish="length")) == []


def test_unchanged_after_case_whitespace_punctuation(filters):
    got = filters(row("A  photo, of a CAT!", original="a photo of a cat", task="caption"))
    assert "change:unchanged" in got
    assert normalize("  Hello,\tWorld!! ") == "hello world"


def test_task_map_selects_filters():
    rules = rules_of("filters.tasks.text=[]")
    assert rules(row("blue", task="text")) == []
    assert rules(row("blue", task="vqa")) == ["length:too_short", "change:unchanged"]


def test_rouge_l():
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("dog", "the cat") == 0.0
    assert rouge_l("", "x") == 0.0
    # LCS("the cat sat on the mat", "the cat lay on a mat") = the cat on mat = 4
    p, r = 4 / 6, 4 / 6
    assert rouge_l("The cat sat on the mat.", "the cat lay on a mat") == pytest.approx(
        2 * p * r / (p + r)
    )
