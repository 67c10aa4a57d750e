"""`pf1m export` / `import-pf1m` on a run directory built from synthetic rows with the
project's writer and commit code (no model, no Ray): every format's files, the round trip,
a hand-made file in the released PF-1M layout, a tampered shard left out, refusals. ~15 s."""

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from bench.runs import build_run
from pf1m.export.importer import import_pf1m
from pf1m.export.job import export_run
from pf1m.jobs.cli import main
from pf1m.schemas.config import ConfigError
from pf1m.schemas.export import ExportManifest, Pf1mRecord, load_export_config
from pf1m.schemas.run import ExitCode
from tests.conftest import ROOT

SETTINGS = load_export_config(ROOT / "pf1m" / "configs" / "export.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "run"
    build_run(str(out), samples=120, shards=3, seed=1)
    return out


def rows_of(out: Path, kind: str = "data") -> dict[str, dict]:
    rows = {}
    for path in sorted((out / kind).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["uid"]] = row
    return rows


def kept_count(out: Path) -> int:
    return len(rows_of(out))


def test_pf1m_json_round_trip_gives_identical_rows_and_a_run_audit_accepts(run_dir, tmp_path):
    dest = tmp_path / "json"
    m = export_run(str(run_dir), "pf1m-json", str(dest), SETTINGS, shard_size=25)
    run = json.loads((run_dir / "run.json").read_text())
    assert (m.source_run_id, m.source_config_hash) == (run["run_id"], run["config_hash"])
    assert m.complete and m.samples == kept_count(run_dir) and len(m.files) > 1
    for f in m.files:
        for record in json.loads((dest / f.path).read_text()):
            Pf1mRecord.model_validate(record)
            task = record["pf1m"]["task"]
            assert set(record) - {"pf1m"} <= SETTINGS.published.allowed(task)
    back = tmp_path / "back"
    r = import_pf1m(str(dest), str(dest), str(back), SETTINGS)
    assert (r.rows, r.quarantined, r.released) == (m.samples, 0, False)
    before, after = rows_of(run_dir), rows_of(back)
    assert before.keys() == after.keys()
    for uid, row in before.items():
        a, b = dict(row), dict(after[uid])
        assert a.pop("run_id") != b.pop("run_id")
        assert a == b, uid
    manifest = json.loads((back / "run.json").read_text())
    assert manifest["config_hash"] == run["config_hash"]  # the same run to refilter
    assert main(["audit", str(back)]) == ExitCode.OK
    stats = json.loads((back / "stats.json").read_text())
    assert stats["totals"]["kept"] == m.samples and stats["problems"] == []
    assert main(["refilter", str(back), "--set", "filters.sts.threshold=0.9",
                 "--to", str(tmp_path / "re")]) == 0  # fmt: skip


def test_llava_records_refer_to_images_that_exist(run_dir, tmp_path):
    dest = tmp_path / "llava"
    m = export_run(str(run_dir), "llava", str(dest), SETTINGS)
    records = json.loads((dest / "llava.json").read_text())
    assert len(records) == m.records == m.samples == kept_count(run_dir)
    seen = 0
    for record in records:
        paths = [record["image"]] if "image" in record else record.get("images", [])
        human = record["conversations"][0]["value"]
        assert human.count("<image>") == len(paths)
        assert [t["from"] for t in record["conversations"]] == ["human", "gpt"]
        for path in paths:
            Image.open(dest / path).verify()
            seen += 1
    assert seen == m.images > 0


def test_hf_loads_with_datasets_and_decodes_images(run_dir, tmp_path):
    import datasets

    dest = tmp_path / "hf"
    m = export_run(str(run_dir), "hf", str(dest), SETTINGS, shard_size=40)
    ds = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == m.records == kept_count(run_dir)
    with_images = [row for row in ds if row["images"]]
    assert with_images and all(isinstance(im, Image.Image) for im in with_images[0]["images"])
    assert ds[0]["conversations"][1]["from"] == "gpt" and ds[0]["conversations"][1]["loss"]


def test_webdataset_shards_hold_every_sample_with_its_images(run_dir, tmp_path):
    dest = tmp_path / "wds"
    m = export_run(str(run_dir), "webdataset", str(dest), SETTINGS, shard_size=30)
    uids, images = [], 0
    for f in m.files:
        with tarfile.open(dest / f.path) as tar:
            for member in tar:
                payload = tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    conv = json.loads(payload)
                    uids += conv["uids"]
                    assert all(name.startswith(member.name[:-5] + ".") for name in conv["images"])
                else:
                    Image.open(io.BytesIO(payload)).verify()
                    images += 1
    assert sorted(uids) == sorted(rows_of(run_dir)) and images == m.images


def test_a_tampered_shard_is_left_out_and_named(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    victim = sorted((copy / "data").glob("*.parquet"))[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    dest = tmp_path / "out"
    code = main(["export", str(copy), "--format", "llava", "--to", str(dest)])
    assert code == ExitCode.PARTIAL
    m = ExportManifest.model_validate_json((dest / "export.json").read_text())
    assert m.skipped == [victim.stem] and not m.complete and "checksum" in m.problems[0]
    assert victim.stem not in {u.split("/")[0] for r in json.loads(
        (dest / "llava.json").read_text()) for u in r["pf1m"]["uids"]}  # fmt: skip


def test_refusals_before_any_work(run_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        export_run(str(run_dir), "llava", str(tmp_path / "full"), SETTINGS)
    assert main(["export", str(run_dir), "--format", "pf1m-json", "--to", str(tmp_path / "a"),
                 "--multi-turn", "3", "--tokenizer", "x", "--image-tokens", "4"]) == 2  # fmt: skip
    assert main(["export", str(run_dir), "--format", "llava", "--to", str(tmp_path / "b"),
                 "--multi-turn", "3"]) == 2  # fmt: skip
    assert main(["export", str(tmp_path), "--format", "hf", "--to", str(tmp_path / "c")]) == 2


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def test_a_released_pf1m_file_imports_with_derived_fields(tmp_path):
    """A hand-made file in the published layout: the authors' absolute image paths, no uid,
    source or task, no pf1m object; one image is missing."""
    images = tmp_path / "images"
    for rel in ("coco/train2014/1.jpg", "vqav2/val/2.jpg", "spot/3a.png", "spot/3b.png"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(_png("red"))
    tag = "<img_path>"
    released = [
        {"input": f"{tag}/cpfs/data/coco/train2014/1.jpg{tag}Describe the image in detail.",
         "output": "A red square.\n\nIt is small.", "original": "red square",
         "rouge_score": 0.4, "sts_similarity": 0.8, "reward": -0.5,
         "filtered_paragraphs": [[12.0, "A dog barks."]], "paragraph_clip_scores": [25.0, 19.0]},
        {"input": f"{tag}vqav2/val/2.jpg{tag}What colour is it?", "output": "It is red.",
         "original": "red", "rouge_score": 0.5, "nli_similarity": [-1.0, 2.0, 0.5],
         "reward": 0.1},
        {"input": f"{tag}spot/3a.png{tag}{tag}spot/3b.png{tag}What changed?",
         "output": "Nothing changed.", "original": "nothing", "sts_similarity": 0.6,
         "reward": 0.2},
        {"input": "Tell me a joke.", "output": "Why did the chicken...", "original": "joke",
         "reward": 1.5},
        {"input": f"{tag}coco/missing.jpg{tag}Describe.", "output": "x y z", "original": "x"},
    ]  # fmt: skip
    path = tmp_path / "PF-1M.json"
    path.write_text(json.dumps(released, indent=1))
    out = tmp_path / "run"
    assert main(["import-pf1m", str(path), "--images", str(images), "--to", str(out)]) == 0
    rows = sorted(rows_of(out).values(), key=lambda r: r["key"])
    assert [(r["source"], r["task"]) for r in rows] == [
        ("coco", "caption"), ("vqav2", "vqa"), ("spot", "change_caption"), (None, "text"),
    ]  # fmt: skip
    assert [r["uid"] for r in rows] == [f"PF-1M-00000/{i:09d}" for i in range(4)]
    caption = rows[0]
    assert caption["instruction"] == "<image>Describe the image in detail."
    assert caption["images"][0]["bytes"] == _png("red")
    assert [p["text"] for p in caption["paragraphs"]] == ["A red square.", "It is small.",
                                                         "A dog barks."]  # fmt: skip
    assert rows[1]["nli_label"] == "entailment" and rows[3]["images"] == []
    quarantine = pq.read_table(next((out / "quarantine").glob("*.parquet"))).to_pylist()
    assert [(q["stage"], q["error_class"]) for q in quarantine] == [("import", "MissingImage")]
    assert main(["audit", str(out)]) == ExitCode.OK
    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"] == {**stats["totals"], "samples_in": 5, "kept": 4, "quarantined": 1}
    # refilter re-decides the released rows under the paper's filters from the stored scores
    assert main(["refilter", str(out), "--set", "filters.sts.threshold=0.7",
                 "--to", str(tmp_path / "re")]) == 0  # fmt: skip
    moved = rows_of(tmp_path / "re", "rejected")
    assert [r["reject_reasons"] for r in moved.values()] == [["sts:below_threshold"]]
    assert next(iter(moved.values()))["task"] == "change_caption"  # its STS 0.6 < 0.7


def test_the_dataset_card_counts_equal_stats_json(run_dir, tmp_path):
    from pf1m.export.card import read_front_matter

    dest = tmp_path / "hf"
    export_run(str(run_dir), "hf", str(dest), SETTINGS)
    assert main(["audit", str(run_dir)]) == ExitCode.OK
    stats = json.loads((run_dir / "stats.json").read_text())
    meta = read_front_matter((dest / "README.md").read_text())
    p = meta["pf1m"]
    assert p["counts"]["totals"] == stats["totals"]
    assert p["counts"]["by_group"] == stats["by_group"]
    assert (p["source_run_id"], p["config_hash"]) == (stats["run_id"], stats["config_hash"])
    assert p["filters"]["clip_paragraph"]["threshold"] == 17.0
    assert set(p["models"]) >= {"rewriter", "sts", "nli", "clip_paragraph", "reward"}
    assert p["licences"]["rewriter"] and set(p["licences"]["sources"]) == set(p["sources"])
    assert meta["configs"][0]["data_files"][0]["path"] == "data/*.parquet"


def test_records_that_cannot_come_back_are_quarantined_by_uid(run_dir, tmp_path):
    dest = tmp_path / "json"
    export_run(str(run_dir), "pf1m-json", str(dest), SETTINGS)
    records = json.loads((dest / "pf1m.json").read_text())
    with_image = next(r for r in records if "<img_path>" in r["input"])
    (dest / with_image["input"].split("<img_path>")[1]).unlink()
    records[-1]["output"] = 5  # invalid field type
    (dest / "pf1m.json").write_text(json.dumps(records))
    back = tmp_path / "back"
    r = import_pf1m(str(dest), str(dest), str(back), SETTINGS)
    assert (r.rows, r.quarantined) == (len(records) - 2, 2)
    quarantine = {q["uid"]: q for q in rows_of(back, "quarantine").values()}
    assert quarantine[with_image["pf1m"]["uid"]]["error_class"] == "MissingImage"
    assert quarantine[records[-1]["pf1m"]["uid"]]["error_class"] == "InvalidRecord"
    assert quarantine[with_image["pf1m"]["uid"]]["task"] == with_image["pf1m"]["task"]
    assert main(["audit", str(back)]) == ExitCode.OK  # conservation holds with quarantine


def test_mix_reads_export_folders_by_id(run_dir, tmp_path):
    from pf1m.export.mixing import mix
    from pf1m.schemas.export import MixSettings

    dirs = {}
    for fmt in ("pf1m-json", "llava", "hf"):
        dirs[fmt] = str(tmp_path / fmt)
        export_run(str(run_dir), fmt, dirs[fmt], SETTINGS, shard_size=50)
    settings = MixSettings(
        tolerance=0.01, stages={"s": {"pf1m-json": 0.5, "llava": 1.0, "hf": 0.25}}
    )
    m = mix(dirs, str(tmp_path / "mix"), settings, seed=0)
    n = kept_count(run_dir)
    assert {k: v.available for k, v in m.inputs.items()} == {"pf1m-json": n, "llava": n, "hf": n}
    rows = [json.loads(x) for x in (tmp_path / "mix" / "s.jsonl").read_text().splitlines()]
    uids = set(rows_of(run_dir))
    assert all(r["id"] in uids for r in rows)  # pf1m uid, llava id, hf id: the sample's uid
    taken = {k: v.taken for k, v in m.stages["s"].inputs.items()}
    assert taken == {"pf1m-json": round(n * 0.5), "llava": n, "hf": round(n * 0.25)}
    with pytest.raises(ConfigError, match="webdataset"):
        export_run(str(run_dir), "webdataset", str(tmp_path / "w"), SETTINGS)
        mix({"pf1m-json": str(tmp_path / "w"), "llava": dirs["llava"], "hf": dirs["hf"]},
            str(tmp_path / "mix2"), settings, seed=0)  # fmt: skip
