"""A filter named by import path in the config (`filters.plugins`) runs through the shards on
Ray workers and through refilter, like a built-in one; a bad plugin fails before any work."""

import pyarrow.parquet as pq
import pytest

from pf1m.pipeline.driver import Driver
from pf1m.pipeline.refilter import refilter
from pf1m.schemas.config import ConfigError, load_config
from pf1m.schemas.run import ExitCode
from tests.conftest import DEMO_CONFIG, demo_config
from tests.toy_filter import TOO_LONG

PLUGIN = "filters.plugins=[tests.toy_filter:ToyChars]"
MAX_CHARS = 65  # about the median length of the demo's 24-token rewrites


def with_toy(*extra: str) -> list[str]:
    """The toy filter first in every task's list, with its setting."""
    tasks = load_config(DEMO_CONFIG).filters.tasks
    lists = [f"filters.tasks.{t}=[toy_chars, {', '.join(names)}]" for t, names in tasks.items()]
    return [PLUGIN, f"filters.options={{toy_chars: {{max_chars: {MAX_CHARS}}}}}", *lists, *extra]


def rows_of(out) -> list[dict]:
    return [r for kind in ("data", "rejected") for p in sorted((out / kind).glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]  # fmt: skip


def test_an_unknown_or_broken_plugin_is_refused_with_its_name():
    with pytest.raises(ConfigError, match="no filter named nope"):
        load_config(DEMO_CONFIG, ["filters.tasks.text=[nope]"])
    with pytest.raises(ConfigError, match="tests.toy_filter:Missing: cannot import"):
        load_config(DEMO_CONFIG, ["filters.plugins=[tests.toy_filter:Missing]"])
    with pytest.raises(ConfigError, match="not a pf1m.filters.base.Filter"):
        load_config(DEMO_CONFIG, ["filters.plugins=[tests.toy_filter:Row]"])
    with pytest.raises(ConfigError, match="toy_filter:ToyScored: a plugin must be a rule filter"):
        load_config(DEMO_CONFIG, ["filters.plugins=[tests.toy_filter:ToyScored]"])
    with pytest.raises(ConfigError, match="the filter name tasks is a filters field"):
        load_config(DEMO_CONFIG, ["filters.plugins=[tests.toy_filter:ToyClash]"])
    with pytest.raises(ConfigError, match="options: no filter named toy_chars"):
        load_config(DEMO_CONFIG, ["filters.options={toy_chars: {max_chars: 1}}"])
    assert load_config(DEMO_CONFIG, with_toy()).filters.plugins == ["tests.toy_filter:ToyChars"]


@pytest.mark.slow
def test_a_plugin_filter_decides_in_the_shards_and_in_refilter(
    ray_local, rewriter, scorers, demo_models, demo_shards, tmp_path
):
    out = tmp_path / "out"
    # `full`: every row is scored, so lifting the toy rule later needs no score never computed
    cfg = demo_config(
        demo_shards, demo_models, out, *with_toy("limit_per_shard=6", "filters.scoring=full")
    )
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    assert result.exit_code == ExitCode.OK
    rows = rows_of(out)
    assert len(rows) == 24
    long = [r for r in rows if len(r["rewrite_raw"] or "") > MAX_CHARS]
    assert 0 < len(long) < len(rows)  # the toy setting splits the demo's rewrites
    for r in rows:
        assert (TOO_LONG in r["reject_reasons"]) == (r in long)
        assert not (r in long and r["kept"])
    assert result.summary["reasons"][TOO_LONG] == len(long)

    lenient = tmp_path / "lenient"
    refilter(str(out), ["filters.options.toy_chars.max_chars=100000"], str(lenient))
    again = {r["uid"]: r for r in rows_of(lenient)}
    assert again.keys() == {r["uid"] for r in rows}
    for r in rows:
        others = [x for x in r["reject_reasons"] if x != TOO_LONG]
        assert again[r["uid"]]["reject_reasons"] == others
        assert again[r["uid"]]["kept"] == (not others)


def test_refilter_refuses_changes_that_need_new_scores():
    """Each filter declares the settings that change its scores; refilter takes the rest."""
    from pf1m.pipeline.refilter import _check_changes

    decisions = (
        "filters.sts.threshold: 0.4 -> 0.5",
        "filters.tasks.vqa: [a] -> [b]",
        "filters.options.toy_chars.max_chars: 65 -> 9",
    )
    for line in decisions:
        _check_changes([line], ["tests.toy_filter:ToyChars"])
    scores = (
        "filters.sts.model: a -> b",
        "filters.nli.premise: a -> b",
        "filters.clip_paragraph.max_sentences: 10 -> 3",
        "rewriter.model: a -> b",
    )
    for line in scores:
        with pytest.raises(ConfigError, match="need new scores or rewrites"):
            _check_changes([line], [])
