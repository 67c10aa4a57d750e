"""The row flow without Ray and without models: fake scores go in, decided rows come out, on
every path (rule rejection, cheap_first vs full, CLIP paragraph removal then the reward on the
new output, a scorer error, a reason instead of a score, unscored rows in refilter)."""

import pytest

from pf1m.pipeline.reader import Sample
from pf1m.pipeline.row_flow import RowFlow
from pf1m.schemas.config import load_config
from pf1m.schemas.rewrite import RewriteResult
from pf1m.schemas.sample import InputSample
from pf1m.schemas.scores import ScoreResult
from tests.conftest import PAPER_CONFIG

THRESHOLDS = ["filters.reward.min_reward=0.0", "filters.length.min_words=3"]
CAPTION = "A red car.\n\nA flying whale sings.\n\nParked by the road."


def flow_with(*overrides: str) -> RowFlow:
    return RowFlow(load_config(PAPER_CONFIG, [*THRESHOLDS, *overrides]), "run")


def sample(task: str = "caption", response: str = "a red car", images: int = 1) -> Sample:
    record = InputSample(source="demo", task=task, instruction="Describe.", response=response)
    return Sample("k0", record, "demo", [b"img"] * images, ["k0.jpg"] * images, [("k0.json", 9)])


def rewrite(text: str, finish: str = "stop") -> RewriteResult:
    return RewriteResult("s/k0", f"(Revised Response): {text}", finish, 10, 5)


def score_all(flow: RowFlow, rows: list, values: dict) -> list[str]:
    """Answer every request of every phase with `values[name]` (a ScoreResult, a plain value,
    or a function of the row's request item); the names asked, in order."""
    asked = []
    for phase in range(len(flow.phases)):
        for req in flow.requests(rows, phase):
            asked.append(req.name)
            answer = values[req.name]
            results = [answer(item) if callable(answer) else answer for item in req.items]
            results = [r if isinstance(r, ScoreResult) else ScoreResult(value=r) for r in results]
            flow.take_scores(req.name, req.targets, results)
        flow.end_phase(rows, phase)
    return asked


def test_a_rule_rejection_skips_the_scorers_under_cheap_first_only():
    for mode, scored in (("cheap_first", False), ("full", True)):
        flow = flow_with(f"filters.scoring={mode}")
        f = flow.begin("s", sample(), rewrite("Red."))
        assert f.row["reject_reasons"] == ["length:too_short"]
        assert flow.needs_scores(f) is scored
        if scored:
            values = {"sts": 0.9, "clip_paragraph": [30.0], "reward": (1.0, 0.0)}
            assert score_all(flow, [f], values) == ["sts", "clip_paragraph", "reward"]
        kind, row = flow.finish(f)
        assert kind == "rejected" and row["reject_reasons"] == ["length:too_short"]
        assert (row["sts"] is not None) is scored


def test_clip_removes_a_paragraph_and_the_reward_reads_the_new_output():
    flow = flow_with()
    f = flow.begin("s", sample(), rewrite(CAPTION))
    assert flow.needs_scores(f)
    [sts, clip] = flow.requests([f], 0)
    assert (sts.name, clip.name) == ("sts", "clip_paragraph")
    flow.take_scores("sts", sts.targets, [ScoreResult(value=0.8)])
    flow.take_scores("clip_paragraph", clip.targets, [ScoreResult(value=[30.0, 5.0, 20.0])])
    flow.end_phase([f], 0)
    [reward] = flow.requests([f], 1)
    assert reward.items == [("Describe.", "A red car.\n\nParked by the road.", "a red car")]
    flow.take_scores("reward", reward.targets, [ScoreResult(value=(1.5, 0.5))])
    kind, row = flow.finish(f)
    assert kind == "data" and row["output"] == "A red car.\n\nParked by the road."
    assert row["rewrite_raw"] == CAPTION and row["reward"] == 1.5 and row["kept"]


def test_each_model_filter_decides_in_the_tasks_order():
    flow = flow_with()
    f = flow.begin("s", sample(), rewrite(CAPTION))
    score_all(flow, [f], {"sts": 0.1, "clip_paragraph": [1.0, 2.0, 3.0], "reward": (-1.0, 0.0)})
    kind, row = flow.finish(f)
    assert kind == "rejected" and row["output"] == ""
    assert row["reject_reasons"] == [
        "sts:below_threshold", "clip_paragraph:all_removed", "reward:below_min",
    ]  # fmt: skip


def test_a_scorer_error_quarantines_the_row_by_stage_and_the_rest_go_on():
    flow = flow_with()
    bad, good = (flow.begin("s", sample(), rewrite(CAPTION)) for _ in range(2))
    [sts, clip] = flow.requests([bad, good], 0)
    flow.take_scores(
        "sts", sts.targets, [ScoreResult(error_class="RuntimeError", error_text="boom")]
        + [ScoreResult(value=0.9)]
    )  # fmt: skip
    flow.take_scores("clip_paragraph", clip.targets, [ScoreResult(value=[30.0] * 3)] * 2)
    flow.end_phase([bad, good], 0)
    [reward] = flow.requests([bad, good], 1)
    assert reward.targets == [good]  # a failed row is asked nothing more
    flow.take_scores("reward", reward.targets, [ScoreResult(value=(1.0, 0.0))])
    kind, row = flow.finish(bad)
    assert kind == "quarantine" and row["stage"] == "score:sts"
    assert row["error_class"] == "RuntimeError" and row["members"] == [
        {"name": "k0.json", "size": 9}
    ]
    assert row["rewrite_raw"] == CAPTION and row["task"] == "caption"
    assert flow.finish(good)[0] == "data"


def test_a_failed_rewrite_is_quarantined_at_the_rewrite_stage():
    flow = flow_with()
    result = RewriteResult("s/k0", None, None, None, None, "PromptTooLong", "too long")
    f = flow.begin("s", sample(), result)
    assert not flow.needs_scores(f)
    kind, row = flow.finish(f)
    assert (kind, row["stage"], row["error_class"]) == ("quarantine", "rewrite", "PromptTooLong")


def test_a_reason_instead_of_a_score():
    flow = flow_with()
    f = flow.begin("s", sample(images=0), rewrite(CAPTION))  # CLIP needs an image
    asked = score_all(flow, [f], {"sts": ScoreResult(reason="sts:too_long"), "reward": (1.0, 0.0)})
    assert asked == ["sts", "reward"]
    kind, row = flow.finish(f)
    assert row["reject_reasons"] == ["sts:too_long", "clip_paragraph:no_image"]
    assert row["sts"] is None and row["paragraphs"] is None and kind == "rejected"


@pytest.mark.parametrize("mode", ["cheap_first", "full"])
def test_refilter_redecides_stored_rows_as_the_run_did(mode):
    flow = flow_with(f"filters.scoring={mode}")
    texts = (CAPTION, "Red.\n\nBlue.", "a\n\nred\n\ncar")  # kept, too short, unchanged
    rows = [flow.begin("s", sample(), rewrite(text)) for text in texts]
    clip = lambda item: [30.0, 5.0, 20.0][: len(item["paragraphs"])]  # noqa: E731
    values = {"sts": 0.9, "clip_paragraph": clip, "reward": (2.0, 1.0)}
    score_all(flow, [f for f in rows if flow.needs_scores(f)], values)
    stored = [flow.finish(f)[1] for f in rows]
    assert [r["reject_reasons"][:1] for r in stored] == [
        [],
        ["length:too_short"],
        ["change:unchanged"],
    ]
    for row in stored:
        again, stale = flow.redecide(row)
        assert (again, stale) == (row, False)


def test_refilter_marks_unscored_and_stale_rows():
    stored_flow = flow_with()
    f = stored_flow.begin("s", sample(), rewrite(CAPTION))
    score_all(stored_flow, [f], {"sts": 0.9, "clip_paragraph": [30.0, 5.0, 20.0],
                                 "reward": (2.0, 1.0)})  # fmt: skip
    _, stored = stored_flow.finish(f)
    stricter = flow_with("filters.clip_paragraph.threshold=25")
    row, stale = stricter.redecide(stored)
    assert row["output"] == "A red car." and stale  # reward was computed on the old output
    nli_too = flow_with("filters.tasks.caption=[length, change, sts, nli]")
    row, _ = nli_too.redecide(stored)
    assert row["reject_reasons"] == ["nli:unscored"] and not row["kept"]


def test_a_scorers_reason_is_kept_for_its_filter_whatever_it_says():
    flow = flow_with()
    f = flow.begin("s", sample(), rewrite(CAPTION))
    values = {"sts": ScoreResult(reason="sts:new_reason"), "clip_paragraph": [30.0] * 3,
              "reward": (1.0, 0.0)}  # fmt: skip
    score_all(flow, [f], values)
    assert flow.finish(f)[1]["reject_reasons"] == ["sts:new_reason"]
