"""Decisions of the model filters (pure: no model loaded) and their request builders."""

import pytest

from pf1m.filters import registry
from pf1m.filters.clip_paragraph import rebuild_output, sentences, split_paragraphs
from pf1m.models.scorers.nli import canonical_order
from pf1m.pipeline.row_flow import RowFlow
from pf1m.schemas.config import load_config
from pf1m.schemas.rows import OUTPUT_SCHEMA
from tests.conftest import PAPER_CONFIG

FILTERS = registry.load()
sts, nli, clip_paragraph, reward = (FILTERS[n] for n in ("sts", "nli", "clip_paragraph", "reward"))
OVERRIDES = ["filters.reward.min_reward=-1", "filters.reward.min_gain=0.5"]


@pytest.fixture(scope="module")
def filters():
    return load_config(PAPER_CONFIG, OVERRIDES).filters


def row(task="caption", **fields) -> dict:
    out = {name: None for name in OUTPUT_SCHEMA.names}
    out.update(
        task=task,
        instruction="<image>\nWhat colour is it?",
        original="red",
        rewrite_raw="It is red.",
        images=[],
    )
    out.update(fields)
    return out


def test_sts_threshold(filters):
    assert sts.decide(row(sts=0.39), filters.sts) == ["sts:below_threshold"]
    assert sts.decide(row(sts=0.40), filters.sts) == []
    assert sts.decide(row(sts=None), filters.sts) == []  # not computed decides nothing
    assert sts.request(row(), filters.sts) == ("red", "It is red.")


def test_nli_pair_is_the_papers(filters):
    premise, hypothesis = nli.request(row(task="vqa"), filters.nli)
    assert premise == '"It is red." is the answer to the question: "What colour is it?"'
    assert hypothesis == '"red" is the answer to the question: "What colour is it?"'


def test_nli_label_order_from_id2label():
    assert canonical_order({0: "ENTAILMENT", 1: "neutral", 2: "Contradiction"}) == [2, 0, 1]
    assert canonical_order({0: "contradiction", 1: "entailment", 2: "neutral"}) == [0, 1, 2]
    with pytest.raises(ValueError, match="no neutral label"):
        canonical_order({0: "contradiction", 1: "entailment", 2: "LABEL_2"})


def test_nli_decision_from_canonical_logits(filters):
    r = row(task="vqa")
    nli.record(r, [2.0, 0.1, 0.3])
    assert r["nli_label"] == "contradiction" and nli.decide(r, filters.nli) == ["nli:contradiction"]
    nli.record(r, [0.0, 3.0, 0.3])
    assert r["nli_label"] == "entailment" and nli.decide(r, filters.nli) == []


def test_paragraph_split_and_sentences():
    text = "First para. Second sentence.\n\n  \nSecond para\n\n\nThird."
    assert split_paragraphs(text) == ["First para. Second sentence.", "Second para", "Third."]
    assert sentences("a. b. c. d", limit=3) == ["a", "b", "c"]
    assert sentences("...", limit=10) == ["..."]


def test_clip_one_paragraph_is_not_filtered(filters):
    assert rebuild_output([{"text": "only", "clip_score": 1.0}], 17.0) == (None, [])
    r = row(rewrite_raw="only one paragraph")
    clip_paragraph.record(r, [3.0])
    clip_paragraph.after_phase(r, filters.clip_paragraph)
    assert r["output"] is None and clip_paragraph.decide(r, filters.clip_paragraph) == []


def test_clip_removes_low_paragraphs_and_rebuilds_output(filters):
    r = row(
        rewrite_raw="Good one.\n\nHallucinated.\n\nGood two.",
        output="Good one.\n\nHallucinated.\n\nGood two.",
    )
    clip_paragraph.record(r, [25.0, 12.0, 17.0])
    clip_paragraph.after_phase(r, filters.clip_paragraph)
    assert r["output"] == "Good one.\n\nGood two."
    assert [p["text"] for p in r["paragraphs"]] == ["Good one.", "Hallucinated.", "Good two."]
    assert clip_paragraph.decide(r, filters.clip_paragraph) == []


def test_clip_all_removed(filters):
    r = row(rewrite_raw="a\n\nb", output="a\n\nb")
    clip_paragraph.record(r, [1.0, 2.0])
    clip_paragraph.after_phase(r, filters.clip_paragraph)
    assert r["output"] == "" and clip_paragraph.decide(r, filters.clip_paragraph) == [
        "clip_paragraph:all_removed"
    ]


def test_clip_request_needs_an_image(filters):
    assert (
        clip_paragraph.request(row(images=[]), filters.clip_paragraph) == "clip_paragraph:no_image"
    )
    item = clip_paragraph.request(
        row(images=[{"bytes": b"x", "path": "k.png"}], rewrite_raw="A. B.\n\nC"),
        filters.clip_paragraph,
    )
    assert item == {"images": [b"x"], "paragraphs": [["A", "B"], ["C"]]}


def test_empty_rewrite_has_no_paragraphs(filters):
    item = clip_paragraph.request(
        row(images=[{"bytes": b"x", "path": "p"}], rewrite_raw=""), filters.clip_paragraph
    )
    assert item["paragraphs"] == []


def test_reward_thresholds(filters):
    assert reward.decide(row(reward=-2.0, reward_original=-2.2), filters.reward) == [
        "reward:below_min",
        "reward:low_gain",
    ]
    assert reward.decide(row(reward=0.0, reward_original=-1.0), filters.reward) == []
    assert reward.decide(row(reward=None), filters.reward) == []
    paper = load_config(PAPER_CONFIG).filters
    assert (
        reward.decide(row(reward=-9.0, reward_original=5.0), paper.reward) == []
    )  # paper: record only


def test_model_decisions_follow_the_task_map():
    flow = RowFlow(load_config(PAPER_CONFIG, OVERRIDES), "t")
    r = row(task="vqa", sts=0.0, nli_label="entailment", reward=0.0, reward_original=-1.0)
    assert flow.redecide(r)[0]["reject_reasons"] == []  # sts is not a VQA filter
    paragraphs = [{"text": "It is red.", "clip_score": 30.0}]
    r = row(task="caption", sts=0.0, paragraphs=paragraphs, reward=0.0, reward_original=-1.0)
    assert flow.redecide(r)[0]["reject_reasons"] == ["sts:below_threshold"]
