"""A full run on a real local Ray: layout, schema, conservation, resume skip."""

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from pf1m.pipeline.commit import KINDS, read_marker, relpath, verify
from pf1m.pipeline.driver import Driver
from pf1m.schemas.rows import OUTPUT_SCHEMA, QUARANTINE_SCHEMA
from pf1m.schemas.run import ExitCode, RunManifest
from tests.conftest import demo_config
from tests.tarutil import png, record, write_tar

pytestmark = pytest.mark.slow


def input_keys(path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted(m.name[: -len(".json")] for m in tar.getmembers() if m.name.endswith(".json"))


def rows(out, kind: str, shard: str) -> list[dict]:
    return pq.read_table(out / relpath(kind, shard)).to_pylist()


@pytest.fixture(scope="module")
def demo_run(ray_local, rewriter, scorers, demo_models, demo_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = demo_config(demo_shards, demo_models, out)
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    return out, result


def test_demo_run_succeeds_with_kept_and_rejected_rows(demo_run):
    out, result = demo_run
    assert result.exit_code == ExitCode.OK
    s = result.summary
    assert s["shards_done"] == 4 and s["samples_in"] == 84
    assert s["kept"] > 0 and s["rejected"] > 0  # the demo preset's promise
    assert s["kept"] + s["rejected"] + s["quarantined"] == 84
    assert sum(s["reasons"].values()) >= s["rejected"]
    manifest = RunManifest.model_validate_json((out / "run.json").read_text())
    assert manifest.status == "succeeded" and set(manifest.shards) == {f"{i:05d}" for i in range(4)}
    assert all(st.status == "done" for st in manifest.shards.values())
    assert manifest.versions["ray"] and manifest.config_hash


def test_layout_schema_and_conservation_per_shard(demo_run, demo_shards):
    from pf1m.pipeline.storage import url_to_fs

    out, _ = demo_run
    fs, _ = url_to_fs(str(out))
    assert not list(out.rglob("*.tmp-*"))
    for i in range(4):
        shard = f"{i:05d}"
        marker = read_marker(fs, str(out), shard)
        assert marker is not None and verify(fs, str(out), marker) == []
        for kind in KINDS:
            assert (out / relpath(kind, shard)).exists()
        for kind, schema in (
            ("data", OUTPUT_SCHEMA),
            ("rejected", OUTPUT_SCHEMA),
            ("quarantine", QUARANTINE_SCHEMA),
        ):
            written = pq.read_schema(out / relpath(kind, shard))
            assert written.remove_metadata().equals(schema.remove_metadata())
            assert {k: written.metadata[k] for k in schema.metadata} == schema.metadata
        data, rejected, quarantine = (
            rows(out, k, shard) for k in ("data", "rejected", "quarantine")
        )
        keys = input_keys(demo_shards / f"{shard}.tar")
        assert marker.samples_in == len(keys) == len(data) + len(rejected) + len(quarantine)
        uids = [r["uid"] for r in data + rejected + quarantine]
        assert sorted(uids) == sorted(f"{shard}/{k}" for k in keys)
        assert all(r["kept"] and r["reject_reasons"] == [] for r in data)
        assert all(not r["kept"] and r["reject_reasons"] for r in rejected)
        stats = json.loads((out / relpath("stats", shard)).read_text())
        assert stats["totals"]["kept"] == len(data) and stats["totals"]["rejected"] == len(rejected)
        for r in data + rejected:
            assert r["rouge_l"] is not None and r["finish_reason"] in {"stop", "length"}
            rule_rejected = any(
                c.split(":")[0] in {"length", "change"} for c in r["reject_reasons"]
            )
            scored = {n: r[n] is not None for n in ("sts", "nli_logits", "paragraphs", "reward")}
            if rule_rejected:  # cheap_first: never sent to the model scorers; null, not 0
                assert not any(scored.values())
                continue
            assert scored["reward"] and (r["reward_original"] is not None)
            assert scored["sts"] == (r["task"] in {"caption", "region_caption", "change_caption"})
            assert scored["nli_logits"] == (r["task"] in {"vqa", "vqa_rationale", "classification"})
            assert scored["paragraphs"] == (r["task"] in {"caption", "region_caption"})
            assert (len(r["images"]) == 0) == (r["task"] == "text")
            assert all(img["bytes"] for img in r["images"])


def test_datasets_reads_data_with_images(demo_run):
    import datasets
    from PIL import Image

    out, result = demo_run
    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert len(ds) == result.summary["kept"]
    with_images = ds.filter(lambda r: len(r["images"]) > 0)
    first = with_images[0]["images"][0]
    assert isinstance(first, Image.Image) and first.size == (96, 96)


def test_rerun_skips_committed_shards(demo_run, demo_shards, demo_models, rewriter, scorers):
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    cfg = demo_config(demo_shards, demo_models, out)
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    assert result.exit_code == ExitCode.OK and result.summary["shards_processed_now"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_different_config_is_refused_with_a_diff(
    demo_run, demo_shards, demo_models, rewriter, scorers
):
    out, _ = demo_run
    cfg = demo_config(demo_shards, demo_models, out, "filters.length.min_words=2")
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    assert result.exit_code == ExitCode.BAD_CONFIG


def test_stored_sts_matches_sentence_transformers(demo_run, demo_models):
    from sentence_transformers import SentenceTransformer

    out, _ = demo_run
    scored = [
        r
        for shard in range(4)
        for k in ("data", "rejected")
        for r in rows(out, k, f"{shard:05d}")
        if r["sts"] is not None
    ]
    assert scored
    model = SentenceTransformer(str(demo_models["sts"]), device="cpu")
    a = model.encode([r["original"] for r in scored])
    b = model.encode([r["rewrite_raw"] for r in scored])
    expected = model.similarity(a, b).diagonal().tolist()
    assert [r["sts"] for r in scored] == pytest.approx(expected, abs=1e-4)


def test_a_scorer_failing_on_one_sample_quarantines_it_alone(
    ray_local, rewriter, demo_models, tmp_path
):
    from pf1m.actors.scorer import ScorerActor
    from pf1m.pipeline.driver import absolutize

    shards = tmp_path / "in"
    shards.mkdir()
    captions = [f"a red circle number {i}" for i in range(6)]
    captions[2] = "a POISONED caption"
    write_tar(shards / "caps.tar", [m for i, c in enumerate(captions) for m in (
        (f"k{i}.json", record(task="caption", instruction="<image>\nDescribe.", response=c)),
        (f"k{i}.png", png()),
    )])  # fmt: skip
    cfg = absolutize(demo_config(shards, demo_models, tmp_path / "out", "filters.scoring=full"))
    faulty = (
        ray_local.remote(ScorerActor)
        .options(runtime_env={"env_vars": {"PF1M_FAULT_SCORE": "POISONED"}})
        .remote(cfg.filters, cfg.filters.model_filters(), cfg.scoring)
    )
    by_name = {name: [faulty] for name in cfg.filters.model_filters()}
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=by_name).run()
    ray_local.kill(faulty)
    assert result.exit_code == ExitCode.OK
    out = tmp_path / "out"
    quarantine = rows(out, "quarantine", "caps")
    assert [(r["key"], r["stage"], r["error_class"]) for r in quarantine] == [
        ("k2", "score:sts", "InjectedFault")
    ]
    assert quarantine[0]["rewrite_raw"] is not None
    others = rows(out, "data", "caps") + rows(out, "rejected", "caps")
    assert sorted(r["key"] for r in others) == ["k0", "k1", "k3", "k4", "k5"]
    assert all(r["sts"] is not None and r["paragraphs"] is not None for r in others)


def test_pf1m_resume_uses_the_recorded_config(demo_run, capsys):
    from pf1m.jobs.cli import main

    out, result = demo_run
    assert main(["resume", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "4/4 committed (0 processed now)" in printed
    assert f"samples in     {result.summary['samples_in']}" in printed
    assert main(["resume", str(out / "nowhere")]) == 2
