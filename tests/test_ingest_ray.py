"""`pf1m ingest` with Ray workers, and its shards through a real pipeline run.

Uses the session's local Ray (`ray_local`): the ingest joins the Ray this process already
started. The pipeline run reuses the session's rewriter replica and scorer actor on the demo
models, in-process through `Driver`, like tests/test_pipeline.py."""

import json

import pytest

from pf1m.pipeline.driver import Driver
from pf1m.schemas.ingest import IngestManifest
from pf1m.schemas.run import ExitCode
from tests import ingestutil as u
from tests.conftest import demo_config

pytestmark = pytest.mark.slow


def manifest(out) -> IngestManifest:
    return IngestManifest.model_validate_json((out / "ingest.json").read_text())


def test_one_and_four_workers_write_identical_shards(ray_local, tmp_path):
    src = u.coco_generated(tmp_path / "src", n=36)
    (src["images"] / "000000000007.jpg").unlink()  # a skip, so the counts are compared too
    args = ["--src", str(src["captions"]), "--instances", str(src["instances"]),
            "--images", str(src["images"]), "--shard-size", "5"]  # fmt: skip
    one, four = tmp_path / "one", tmp_path / "four"
    u.ingest("coco-captions", one, *args, workers=1)
    outcome = u.ingest("coco-captions", four, *args, workers=4)
    assert int(outcome.exit_code) == 0
    assert ray_local.is_initialized()  # the session's Ray, joined and left running
    assert sorted(u.tar_bytes(one)) == [f"{i:05d}.tar" for i in range(8)]
    assert u.tar_bytes(four) == u.tar_bytes(one)
    a, b = manifest(one), manifest(four)
    assert (b.samples_written, b.skipped, b.examples, b.shards) == (
        a.samples_written, a.skipped, a.examples, a.shards,
    )  # fmt: skip
    assert a.samples_written == 35 and a.skipped == {"image_missing": 1}
    # the worker count is not part of what a re-run must repeat: all 8 shards are done
    again = u.ingest("coco-captions", four, *args, workers=1)
    assert (again.shards_done_before, again.shards_written) == (8, 0)


def _ingest_every_format(root, work) -> int:
    """Each format into root/NAME/; returns the samples written."""
    written = 0

    def run(name: str, fmt: str, *args: str) -> None:
        nonlocal written
        outcome = u.ingest(fmt, root / name, *args)
        assert int(outcome.exit_code) == 0
        written += outcome.manifest.samples_written

    c = u.coco(work / "coco")
    run("coco", "coco-captions", "--src", str(c["captions"]), "--instances",
        str(c["instances"]), "--images", str(c["images"]))  # fmt: skip
    r = u.refcoco(work / "refcoco")
    run("refcoco", "refcoco", "--src", str(r["refs"]), "--instances", str(r["instances"]),
        "--images", str(r["images"]))  # fmt: skip
    v = u.vqa_v2(work / "vqa", n=2)
    run("vqa", "vqa-v2", "--src", str(v["questions"]), "--answers", str(v["annotations"]),
        "--images", str(v["images"]))  # fmt: skip
    g = u.gqa(work / "gqa")
    run("gqa", "gqa", "--src", str(g["questions"]), "--images", str(g["images"]))
    a = u.aokvqa(work / "aokvqa")
    run("aokvqa", "aokvqa", "--src", str(a["src"]), "--images", str(a["images"]))
    folder = work / "folder"
    for i, cls in enumerate(["circle", "square"]):
        u.write_image(folder / cls / "x.jpg", i)
    run("folder", "image-folder", "--images", str(folder), "--per-class", "1")
    ll = u.llava(work / "llava")
    run("llava", "llava", "--src", str(ll["src"]), "--images", str(ll["images"]))
    imgs = work / "change"
    u.write_image(imgs / "before.jpg", 0)
    u.write_image(imgs / "after.jpg", 1)
    rows = work / "change.jsonl"
    rows.write_text(json.dumps({"q": "What is the difference between the two images?",
                                "a": "the colour changed", "b": "before.jpg",
                                "c": "after.jpg"}) + "\n")  # fmt: skip
    run("change", "jsonl", "--src", str(rows), "--images", str(imgs), "--task",
        "change_caption", "--column", "instruction=q", "--column", "response=a",
        "--column", "image=b", "--column", "image=c")  # fmt: skip
    return written


def test_ingested_shards_run_through_the_pipeline(
    ray_local, rewriter, scorers, demo_models, tmp_path
):
    shards = tmp_path / "shards"
    written = _ingest_every_format(shards, tmp_path / "sources")
    assert written == 15  # coco 2, refcoco 3, vqa 2, gqa 2, aokvqa 1, folder 2, llava 2, change 1
    out = tmp_path / "run"
    cfg = demo_config(shards, demo_models, out, f"input={shards}/*/*.tar")
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    assert result.exit_code == ExitCode.OK
    s = result.summary
    assert s["shards_done"] == 8 and s["samples_in"] == written
    assert s["quarantined"] == 0  # the reader, the prompt and the engine took every sample
    assert s["kept"] + s["rejected"] == written
