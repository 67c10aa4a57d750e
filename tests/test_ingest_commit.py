"""`pf1m ingest` as a job: skipped images counted (never a crash), paths that escape --images
refused, stable shard names, re-runs that skip committed shards, a different re-run refused
with the difference, an interrupted ingest (SIGKILLed at a commit step) resumed into the same
bytes, exit codes, and the phrasing file's validation. No Ray (one worker, in-process), except
the kill test's one `pf1m ingest` subprocess."""

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc

import pytest
from PIL import Image

from pf1m.ingest.formats import READERS
from pf1m.ingest.phrasing import DEFAULT_PHRASING, choose, load_phrasing
from pf1m.jobs.cli import main
from pf1m.pipeline.commit import TMP_TAG
from pf1m.schemas.config import ConfigError
from pf1m.schemas.ingest import IngestManifest
from tests import ingestutil as u
from tests.conftest import ROOT

JSONL_COLS = ["--column", "instruction=q", "--column", "response=a", "--column", "image=img"]


def manifest(out) -> IngestManifest:
    return IngestManifest.model_validate_json((out / "ingest.json").read_text())


def jsonl(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(img: str, q: str = "<image>\nWhat is it?", a: str = "a field") -> dict:
    return {"q": q, "a": a, "img": img}


def test_paths_escaping_images_are_refused_and_counted(tmp_path):
    root = tmp_path / "root"
    u.write_image(root / "ok.jpg", 0)
    outside = tmp_path / "secret.jpg"
    u.write_image(outside, 1)
    (root / "link.jpg").symlink_to(outside)
    (root / "sub").mkdir()
    src = jsonl(
        tmp_path / "rows.jsonl",
        [
            row("ok.jpg"),
            row("../secret.jpg"),
            row(str(outside)),
            row("link.jpg"),
            row("sub/../../secret.jpg"),
            row("sub/..\\..\\secret.jpg"),
        ],  # fmt: skip
    )
    out = tmp_path / "out"
    outcome = u.ingest("jsonl", out, "--src", str(src), "--images", str(root), *JSONL_COLS,
                       "--task", "vqa")  # fmt: skip
    assert int(outcome.exit_code) == 0
    got = u.samples(out)
    assert [s.key for s in got] == ["row00000000"]
    secret = outside.read_bytes()
    assert all(secret not in s.images for s in got)
    m = manifest(out)
    assert m.skipped == {"path_escape": 5}
    details = " ".join(e.detail for e in m.examples["path_escape"])
    assert "outside --images" in details and "'..'" in details


def test_missing_undecodable_and_bomb_images_are_skipped_and_counted(tmp_path, monkeypatch):
    root = tmp_path / "root"
    u.write_image(root / "ok.jpg", 0)
    u.write_image(root / "big.png", 1, "PNG", size=(100, 100))
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "truncated.jpg").write_bytes(u.image_bytes(2)[:200])
    (root / "folder.jpg").mkdir()
    src = jsonl(
        tmp_path / "rows.jsonl",
        [
            row("ok.jpg"),
            row("gone.jpg"),
            row("garbage.jpg"),
            row("truncated.jpg"),
            row("big.png"),
            row("folder.jpg"),
        ],  # fmt: skip
    )
    # PIL's guard stays on: lowered here so that a 100x100 image trips it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    out = tmp_path / "out"
    outcome = u.ingest("jsonl", out, "--src", str(src), "--images", str(root), *JSONL_COLS,
                       "--task", "vqa")  # fmt: skip
    assert int(outcome.exit_code) == 0
    assert [s.key for s in u.samples(out)] == ["row00000000"]
    assert manifest(out).skipped == {
        "image_missing": 2,
        "image_too_large": 1,
        "image_undecodable": 2,
    }


def test_skip_examples_are_capped_per_reason(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    src = jsonl(tmp_path / "rows.jsonl", [row(f"gone{i}.jpg") for i in range(9)])
    out = tmp_path / "out"
    u.ingest("jsonl", out, "--src", str(src), "--images", str(root), *JSONL_COLS,
             "--task", "vqa", "--shard-size", "4", "--examples-per-reason", "3")  # fmt: skip
    m = manifest(out)
    assert m.skipped == {"image_missing": 9} and m.samples_written == 0
    assert [e.key for e in m.examples["image_missing"]] == [f"row0000000{i}" for i in range(3)]
    assert list(out.glob("*.tar")) == []  # nothing to write, no empty shard
    assert sorted(m.shards) == ["00000", "00001", "00002"]


def test_duplicate_keys_in_a_shard_are_skipped(tmp_path):
    root = tmp_path / "root"
    u.write_image(root / "a.jpg", 0)
    rows = [{**row("a.jpg"), "id": k} for k in ("k.1", "k_1", "k2")]  # k.1 and k_1 collide
    src = jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    u.ingest("jsonl", out, "--src", str(src), "--images", str(root), *JSONL_COLS,
             "--column", "key=id", "--task", "vqa")  # fmt: skip
    assert [s.key for s in u.samples(out)] == ["k_1", "k2"]
    assert manifest(out).skipped == {"duplicate_key": 1}


def _vqa_args(src, *extra: str) -> list[str]:
    return ["--src", str(src["questions"]), "--answers", str(src["annotations"]),
            "--images", str(src["images"]), "--shard-size", "2", *extra]  # fmt: skip


def test_shard_names_and_bytes_are_stable_and_max_samples_caps_records(tmp_path):
    src = u.vqa_v2(tmp_path / "src", n=5)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    u.ingest("vqa-v2", a, *_vqa_args(src))
    u.ingest("vqa-v2", b, *_vqa_args(src))
    assert sorted(u.tar_bytes(a)) == ["00000.tar", "00001.tar", "00002.tar"]
    assert u.tar_bytes(a) == u.tar_bytes(b)
    for name, payload in u.tar_bytes(a).items():  # checksummed while written, not read back
        marker = json.loads((a / "_commits" / name.replace(".tar", ".json")).read_text())
        assert (marker["sha256"], marker["bytes"]) == (
            hashlib.sha256(payload).hexdigest(),
            len(payload),
        )
    u.ingest("vqa-v2", c, *_vqa_args(src, "--max-samples", "3"))
    assert [s.key for s in u.samples(c)] == ["100001", "101001", "102001"]
    assert u.tar_bytes(c)["00000.tar"] == u.tar_bytes(a)["00000.tar"]


def test_phrasing_is_chosen_by_seed_and_key():
    options = ["a", "b", "c", "d", "e", "f"]
    picks = [choose(options, 0, f"k{i}") for i in range(60)]
    assert picks == [choose(options, 0, f"k{i}") for i in range(60)]  # stable
    assert set(picks) == set(options)  # varied over samples
    assert picks != [choose(options, 1, f"k{i}") for i in range(60)]  # the seed matters


def test_rerun_skips_committed_shards_and_refuses_a_different_ingest(tmp_path):
    src = u.vqa_v2(tmp_path / "src", n=5)
    out = tmp_path / "out"
    first = u.ingest("vqa-v2", out, *_vqa_args(src))
    assert (first.shards_written, first.shards_done_before) == (3, 0)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = u.ingest("vqa-v2", out, *_vqa_args(src), workers=1)
    assert (again.shards_written, again.shards_done_before) == (0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes
    assert manifest(out).samples_written == 5 and manifest(out).status == "complete"

    with pytest.raises(ConfigError) as refused:
        u.ingest("vqa-v2", out, *_vqa_args(src, "--seed", "1"))
    assert "arguments.seed: 0 -> 1" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        u.ingest("vqa-v2", out, *_vqa_args(src, "--shard-size", "3"))
    assert "arguments.shard_size: 2 -> 3" in str(refused.value)
    answers = json.loads(src["annotations"].read_text())
    answers["annotations"][0]["multiple_choice_answer"] = "crimson"
    src["annotations"].write_text(json.dumps(answers))
    with pytest.raises(ConfigError) as refused:
        u.ingest("vqa-v2", out, *_vqa_args(src))
    assert f"sources.{src['annotations']}.sha256" in str(refused.value)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes  # untouched


def test_a_dir_with_other_shards_is_refused(tmp_path):
    src = u.gqa(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "00000.tar").write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="no ingest.json"):
        u.ingest("gqa", out, "--src", str(src["questions"]), "--images", str(src["images"]))


@pytest.mark.parametrize("step", ["before_commit", "inside_commit"])
def test_an_ingest_killed_at_a_commit_step_resumes_to_the_same_shards(tmp_path, step):
    src = u.vqa_v2(tmp_path / "src", n=6)
    clean, out = tmp_path / "clean", tmp_path / "out"
    u.ingest("vqa-v2", clean, *_vqa_args(src))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PF1M_FAULT_KILL"] = f"{step}:00001"
    cmd = [sys.executable, "-m", "pf1m.jobs.cli", "ingest", "vqa-v2", "--out", str(out),
           "--quiet", *_vqa_args(src)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, start_new_session=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert manifest(out).status == "running"
    assert (out / "_commits" / "00000.json").exists()
    assert not (out / "_commits" / "00001.json").exists()
    if step == "before_commit":
        assert list(out.glob(f"00001.tar{TMP_TAG}*"))  # the temporary left behind
    else:
        assert (out / "00001.tar").exists()  # renamed, but no marker: not done
    resumed = u.ingest("vqa-v2", out, *_vqa_args(src))
    assert (resumed.shards_done_before, resumed.shards_written) == (1, 2)
    assert u.tar_bytes(out) == u.tar_bytes(clean)
    assert not list(out.rglob(f"*{TMP_TAG}*"))
    assert manifest(out).samples_written == manifest(clean).samples_written == 6


def test_exit_codes(tmp_path, capsys):
    src = u.vqa_v2(tmp_path / "src", n=2)
    out = tmp_path / "out"
    # refused before work: a missing required file, a missing file, a bad phrasing file
    assert main(["ingest", "vqa-v2", "--src", str(src["questions"]), "--images",
                 str(src["images"]), "--out", str(out)]) == 2  # fmt: skip
    assert "--answers" in capsys.readouterr().err
    missing = ["--src", str(tmp_path / "nope.json"), "--answers", str(src["annotations"])]
    assert main(["ingest", "vqa-v2", *missing, "--images", str(src["images"]),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "nope.json: no such file" in capsys.readouterr().err
    bad = tmp_path / "phrasing.yaml"
    bad.write_text(DEFAULT_PHRASING.read_text().replace('"{question}"', '"Answer it."', 1))
    assert main(["ingest", "vqa-v2", "--out", str(out), *_vqa_args(src),
                 "--config", str(bad)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "vqa.instructions" in err and "{question}" in err
    assert not out.exists()  # nothing written by a refused ingest
    # skipped samples are not a failure: exit 0, and the summary says so
    src["images"].joinpath("COCO_train2014_000000000101.jpg").unlink()
    assert main(["ingest", "vqa-v2", "--out", str(out), "--quiet", *_vqa_args(src)]) == 0
    printed = capsys.readouterr().out
    assert "image_missing        1" in printed and "data hygiene" in printed


def test_a_source_that_breaks_midway_exits_1_keeping_committed_shards(tmp_path, capsys):
    src = u.llava(tmp_path)
    entries = json.loads(src["src"].read_text()) * 3
    for i, entry in enumerate(entries):
        entry["id"] = f"e{i}"
    text = json.dumps(entries)
    src["src"].write_text(text[: len(text) - 40])  # a truncated download
    out = tmp_path / "out"
    code = main(["ingest", "llava", "--src", str(src["src"]), "--images", str(src["images"]),
                 "--out", str(out), "--shard-size", "2", "--quiet"])  # fmt: skip
    assert code == 1
    assert "not valid JSON" in capsys.readouterr().out
    m = manifest(out)
    assert m.status == "failed" and "not valid JSON" in (m.error or "")
    assert sorted(m.shards) == ["00000", "00001"] and m.samples_written == 4


def test_the_shipped_phrasing_file_is_valid_and_quotes_the_paper():
    phrasing, sha = load_phrasing(DEFAULT_PHRASING)
    assert len(sha) == 64
    assert phrasing.region_caption.instructions == [
        "Describe the object inside this green bounding box."
    ]
    assert phrasing.classification.instructions == ["What is this?"]
    assert phrasing.classification.response == "a photo of a {class}"
    assert len(phrasing.caption.instructions) > 1
    assert set(READERS) >= {"coco-captions", "refcoco", "vqa-v2", "gqa", "aokvqa"}


def _peak_heap(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_vqa_answers_are_streamed_not_loaded(tmp_path):
    """VQAv2's two files are read side by side: the reader's peak Python heap does not grow
    with the files, and is a small fraction of what `json.load` of them takes (tracemalloc)."""
    phrasing, _ = load_phrasing(DEFAULT_PHRASING)
    peaks, counts = {}, {}
    for n in (1000, 3000):
        src = u.vqa_v2(tmp_path / str(n), n=n, with_images=False)
        req = u.build_request(["vqa-v2", "--out", str(tmp_path / "out"), *_vqa_args(src)])

        def read(req=req, n=n) -> None:
            counts[n] = sum(1 for _ in READERS["vqa-v2"](req, phrasing))

        peaks[n] = _peak_heap(read)
    whole = _peak_heap(lambda: [json.loads(src[k].read_text()) for k in src if k != "images"])
    assert counts == {1000: 1000, 3000: 3000}
    assert peaks[3000] < 1.2 * peaks[1000], peaks  # flat in the number of questions
    assert peaks[3000] < whole / 10, (peaks, whole)


def test_help_shows_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["ingest", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "pf1m ingest coco-captions --src" in text and "Exit codes: 0" in text
    assert "data hygiene" in text
