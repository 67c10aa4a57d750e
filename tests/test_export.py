"""Export on a real run (demo shards, the session's vLLM rewriter and scorer actors, every row
scored): the released layout per task, LLaVA images on disk, the hf folder through
`datasets.load_dataset`, the card against stats.json, export then import giving the same rows,
and multi-turn packing counted with the demo rewriter's own tokenizer (llava, hf, webdataset).
One run of 24 samples with every row scored, on the session's engine and scorers: the module
alone took 80 s, 76 of them in that fixture (engine start-up included); each test < 1 s."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pf1m.export.card import read_front_matter
from pf1m.export.importer import import_pf1m
from pf1m.export.job import MultiTurnRequest, export_run
from pf1m.export.packing import TokenCounter, load_tokenizer
from pf1m.jobs.cli import main
from pf1m.pipeline.driver import Driver
from pf1m.schemas.export import Pf1mRecord, load_export_config
from pf1m.schemas.run import ExitCode
from tests.conftest import ROOT, demo_config

pytestmark = pytest.mark.slow
SETTINGS = load_export_config(ROOT / "pf1m" / "configs" / "export.yaml")


@pytest.fixture(scope="module")
def run_dir(ray_local, rewriter, scorers, demo_models, demo_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export-run")
    cfg = demo_config(demo_shards, demo_models, out, "limit_per_shard=6", "filters.scoring=full")
    assert Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run().exit_code == 0
    assert main(["audit", str(out)]) == ExitCode.OK
    return out


def kept(out: Path) -> dict[str, dict]:
    return {
        r["uid"]: r
        for p in sorted((out / "data").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    }


def test_pf1m_json_fields_per_task_and_round_trip(run_dir, tmp_path):
    rows = kept(run_dir)
    assert len({r["task"] for r in rows.values()}) >= 4  # several tasks kept
    dest = tmp_path / "json"
    m = export_run(str(run_dir), "pf1m-json", str(dest), SETTINGS)
    records = json.loads((dest / "pf1m.json").read_text())
    assert len(records) == m.samples == len(rows)
    for record in records:
        Pf1mRecord.model_validate(record)
        row = rows[record["pf1m"]["uid"]]
        fields = set(record) - {"pf1m"}
        assert fields <= SETTINGS.published.allowed(row["task"]), (row["task"], fields)
        assert None not in record.values()
        if row["task"] in ("caption", "region_caption"):  # scored by STS and CLIP (full)
            assert {"sts_similarity", "paragraph_clip_scores", "filtered_paragraphs"} <= fields
        if row["task"] in ("vqa", "vqa_rationale"):
            assert "nli_similarity" in fields and "sts_similarity" not in fields
        for path in record["input"].split("<img_path>")[1::2]:
            Image.open(dest / path).verify()
    back = tmp_path / "back"
    import_pf1m(str(dest), str(dest), str(back), SETTINGS)
    again = kept(back)
    assert again.keys() == rows.keys()
    for uid, row in rows.items():
        a, b = dict(row), dict(again[uid])
        a.pop("run_id"), b.pop("run_id")
        assert a == b, uid
    assert main(["audit", str(back)]) == ExitCode.OK


def test_llava_and_hf_formats_load(run_dir, tmp_path):
    import datasets

    llava = tmp_path / "llava"
    m = export_run(str(run_dir), "llava", str(llava), SETTINGS)
    for record in json.loads((llava / "llava.json").read_text()):
        for path in [record["image"]] if "image" in record else record.get("images", []):
            assert (llava / path).is_file()
    hf = tmp_path / "hf"
    export_run(str(run_dir), "hf", str(hf), SETTINGS)
    ds = datasets.load_dataset(str(hf), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == m.samples
    decoded = [im for row in ds for im in row["images"]]
    assert decoded and all(isinstance(im, Image.Image) for im in decoded)
    stats = json.loads((run_dir / "stats.json").read_text())
    card = read_front_matter((hf / "README.md").read_text())["pf1m"]
    assert card["counts"] == {"totals": stats["totals"], "by_group": stats["by_group"]}
    assert card["config_hash"] == stats["config_hash"]


def test_multi_turn_packing_with_a_real_tokenizer(run_dir, demo_models, tmp_path):
    tokenizer_path = str(demo_models["rewriter"])
    budget, k, image_tokens = 300, 3, 16
    dest = tmp_path / "packed"
    request = MultiTurnRequest(k, tokenizer_path, image_tokens, max_tokens=budget, seed=5)
    m = export_run(str(run_dir), "llava", str(dest), SETTINGS, multi_turn=request)
    records = json.loads((dest / "llava.json").read_text())
    uids = [u for r in records for u in r["pf1m"]["uids"]]
    assert sorted(uids) == sorted(kept(run_dir))  # every kept sample exactly once
    assert m.multi_turn.conversations == len(records) < len(uids)  # it packed
    tokenizer = load_tokenizer(tokenizer_path)
    count = TokenCounter(tokenizer, image_tokens, "<image>")
    for r in records:
        p = r["pf1m"]
        n_images = 1 if "image" in r else len(r.get("images", []))
        assert 1 <= len(p["uids"]) <= k
        assert p["text"].count("<image>") == n_images
        assert p["tokens"] == count(p["text"], n_images)
        assert p["tokens"] <= budget or (p["over_budget"] and len(p["uids"]) == 1)
        answers = [t["value"] for t in r["conversations"] if t["from"] == "gpt"]
        assert [p["text"][s:e] for s, e in p["assistant_spans"]] == answers
        # the tokens a trainer masks in (offsets overlapping a span) decode to the answers
        enc = tokenizer(p["text"], add_special_tokens=False, return_offsets_mapping=True)
        for (s, e), answer in zip(p["assistant_spans"], answers, strict=True):
            pairs = zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            ids = [i for i, (a, b) in pairs if a < e and b > s]
            assert answer.strip() in tokenizer.decode(ids)
    again = tmp_path / "again"
    export_run(str(run_dir), "llava", str(again), SETTINGS, multi_turn=request)
    assert (again / "llava.json").read_text() == (dest / "llava.json").read_text()  # seeded


def test_multi_turn_in_hf_and_webdataset(run_dir, demo_models, tmp_path):
    import tarfile

    import datasets

    request = MultiTurnRequest(3, str(demo_models["rewriter"]), 16, max_tokens=300, seed=1)
    uids = sorted(kept(run_dir))
    hf = tmp_path / "hf"
    export_run(str(run_dir), "hf", str(hf), SETTINGS, multi_turn=request)
    ds = datasets.load_dataset(str(hf), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(u for row in ds for u in row["uids"]) == uids
    for row in ds:
        assert row["tokens"] <= 300 or row["over_budget"]
        assert len(row["images"]) == row["text"].count("<image>")
        loss = [t["loss"] for t in row["conversations"]]
        assert loss == [False, True] * len(row["uids"])
    wds = tmp_path / "wds"
    m = export_run(str(run_dir), "webdataset", str(wds), SETTINGS, multi_turn=request)
    seen = []
    for f in m.files:
        with tarfile.open(wds / f.path) as tar:
            names = tar.getnames()
            for name in names:
                if name.endswith(".json"):
                    conv = json.loads(tar.extractfile(name).read())
                    seen += conv["uids"]
                    assert all(image in names for image in conv["images"])
    assert sorted(seen) == uids
