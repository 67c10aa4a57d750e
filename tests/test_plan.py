"""Shard planning: brace patterns, globs, names relative to the fixed root, duplicates."""

import pytest

from pf1m.pipeline.plan import PlanError, expand_braces, plan_shards
from pf1m.schemas.config import InputEntry


def test_brace_ranges_keep_zero_padding():
    assert expand_braces("s/{00008..00010}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar"]
    assert expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]


def test_names_are_relative_to_the_patterns_fixed_root(tmp_path):
    for sub in ("coco", "vqa"):
        (tmp_path / sub).mkdir()
        for i in range(2):
            (tmp_path / sub / f"{i:05d}.tar").write_bytes(b"")
    jobs = plan_shards([InputEntry(pattern=f"{tmp_path}/*/*.tar", source="s")])
    assert [j.shard for j in jobs] == ["coco/00000", "coco/00001", "vqa/00000", "vqa/00001"]
    assert all(j.url.startswith("file://") and j.source == "s" for j in jobs)
    braces = plan_shards([InputEntry(pattern=f"{tmp_path}/coco/{{00000..00001}}.tar")])
    assert [j.shard for j in braces] == ["00000", "00001"]


def test_duplicate_names_and_empty_globs_fail(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "0.tar").write_bytes(b"")
    (tmp_path / "b" / "0.tar").write_bytes(b"")
    entries = [InputEntry(pattern=f"{tmp_path}/a/*.tar"), InputEntry(pattern=f"{tmp_path}/b/*.tar")]
    with pytest.raises(PlanError, match="duplicate shard name '0'"):
        plan_shards(entries)
    with pytest.raises(PlanError, match="matches no file"):
        plan_shards([InputEntry(pattern=f"{tmp_path}/none/*.tar")])


def test_missing_storage_package_is_named():
    from pf1m.pipeline.storage import node_local_warning, url_to_fs
    from pf1m.schemas.config import ConfigError

    with pytest.raises(ConfigError, match=r"gs://bucket/out: needs the package gcsfs"):
        url_to_fs("gs://bucket/out")
    assert "local path on a 2-node cluster" in node_local_warning("/data/out", 2)
    assert node_local_warning("/data/out", 1) is None
    assert node_local_warning("s3://bucket/out", 2) is None
