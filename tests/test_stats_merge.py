"""Adding up shards' stats: the one merge behind the driver's run summary and `pf1m audit`'s
OUT/stats.json gives every count, reason, stage, token and finish reason summed over shards."""

from pf1m.pipeline.stats import StatsBuilder, merge_shard_stats
from pf1m.schemas.stats import Counts, ShardStats, Tokens


def row(source: str, task: str, kept: bool, reasons: list[str], finish: str, tokens: int) -> dict:
    return {
        "source": source, "task": task, "kept": kept, "reject_reasons": reasons,
        "finish_reason": finish, "prompt_tokens": 2 * tokens, "output_tokens": tokens,
        "rouge_l": None,
    }  # fmt: skip


def shard_a() -> ShardStats:
    b = StatsBuilder("a")
    b.add_row(row("coco", "vqa", True, [], "stop", 10))
    b.add_row(row("coco", "vqa", False, ["rouge_l", "nli"], "length", 7))
    b.add_quarantine("decode")
    return b.build(wall_s=1.0)


def shard_b() -> ShardStats:
    b = StatsBuilder("b")
    b.add_row(row("wiki", "text", True, [], "stop", 4))
    b.add_row(row("coco", "vqa", False, ["rouge_l"], "stop", 3))
    b.add_quarantine("read", source="wiki", task="text")
    return b.build(wall_s=2.0)


def test_every_figure_is_summed_over_the_shards():
    merged = merge_shard_stats([shard_a(), shard_b()])
    assert merged.totals == Counts(
        samples_in=6, kept=2, rejected=2, quarantined=2,
        reasons={"rouge_l": 2, "nli": 1}, quarantine_stages={"decode": 1, "read": 1},
    )  # fmt: skip
    assert merged.by_group == {
        "coco|vqa": Counts(samples_in=3, kept=1, rejected=2, reasons={"rouge_l": 2, "nli": 1}),
        "unknown|unknown": Counts(samples_in=1, quarantined=1, quarantine_stages={"decode": 1}),
        "wiki|text": Counts(samples_in=2, kept=1, quarantined=1, quarantine_stages={"read": 1}),
    }
    assert merged.tokens == Tokens(prompt=48, output=24, output_on_rejected=10)
    assert merged.finish_reasons == {"stop": 3, "length": 1}  # quarantined: no rewrite


def test_no_shards_merge_to_zero():
    merged = merge_shard_stats([])
    assert merged.totals == Counts() and merged.tokens == Tokens()
    assert merged.by_group == {} and merged.finish_reasons == {}


def test_merging_leaves_the_shards_stats_untouched():
    shards = [shard_a(), shard_b()]
    before = [s.model_dump() for s in shards]
    first = merge_shard_stats(shards)
    first.totals.reasons["rouge_l"] += 100  # a caller changing the result changes no input
    assert [s.model_dump() for s in shards] == before
    assert merge_shard_stats(shards).totals.reasons["rouge_l"] == 2


def test_run_summary_totals_come_from_the_same_merge(tmp_path):
    """The driver's end-of-run summary (also stored in run.json): keys and figures."""
    from pf1m.pipeline.driver import merge_stats
    from pf1m.pipeline.storage import url_to_fs

    (tmp_path / "stats").mkdir()
    for stats in (shard_a(), shard_b()):
        (tmp_path / "stats" / f"{stats.shard}.json").write_text(stats.model_dump_json())
    fs, root = url_to_fs(str(tmp_path))
    summary = merge_stats(fs, root, ["a", "b"])
    assert list(summary) == [
        "samples_in", "kept", "rejected", "quarantined", "reasons", "quarantine_stages",
        "output_tokens",
    ]  # fmt: skip
    assert summary == {
        "samples_in": 6, "kept": 2, "rejected": 2, "quarantined": 2,
        "reasons": {"rouge_l": 2, "nli": 1}, "quarantine_stages": {"decode": 1, "read": 1},
        "output_tokens": 24,
    }  # fmt: skip
