"""`pf1m ingest`, format by format: tiny sources in each release's real JSON layout go in, the
shards come out, and the pipeline's own reader (`pf1m/pipeline/reader.py`) reads them back: schema,
task, source, images in order and as stored, the paper's templates. No Ray, no model."""

import csv
import io
import json

import pytest
from PIL import Image

from pf1m.ingest.formats.vqa import most_frequent
from pf1m.schemas.ingest import IngestManifest
from pf1m.schemas.sample import InputSample
from tests import ingestutil as u

BOX_INTRO = (
    "The objects in the image are listed below as label: [x1, y1, x2, y2], "
    "with coordinates between 0 and 1."
)


def manifest(out) -> IngestManifest:
    return IngestManifest.model_validate_json((out / "ingest.json").read_text())


def by_key(out) -> dict:
    return {s.key: s for s in u.samples(out)}


def test_coco_captions_with_boxes(tmp_path):
    src = u.coco(tmp_path)
    out = tmp_path / "out"
    args = ["--src", str(src["captions"]), "--instances", str(src["instances"])]
    outcome = u.ingest("coco-captions", out, *args, "--images", str(src["images"]))
    assert int(outcome.exit_code) == 0
    got = by_key(out)
    assert set(got) == {"9", "25"}
    dog = got["9"]
    assert dog.record.task == "caption" and dog.source == "coco"
    assert dog.record.instruction.startswith("<image>\n")
    # all captions of the image joined by newlines, then the box sentence and the box lines
    # (normalised by the 100x50 image; the crowd box left out)
    assert dog.record.response == "\n".join(
        [
            "A brown dog lying on the grass.",
            "A dog resting outside.",
            BOX_INTRO,
            "dog: [0.1, 0.2, 0.5, 0.6]",
            "person: [0.0, 0.0, 0.2, 0.5]",
        ]
    )
    assert got["25"].record.response == "A giraffe eating leaves from a tree."  # no boxes
    # the image bytes are the file's, copied as stored
    assert dog.images == [(src["images"] / "000000000009.jpg").read_bytes()]
    assert dog.image_names == ["9.jpg"]
    m = manifest(out)
    assert m.samples_written == 2 and m.records == 4
    assert m.skipped == {"image_missing": 1, "no_annotation": 1}
    assert m.examples["image_missing"][0].key == "30"


def test_coco_captions_without_instances_has_no_box_block(tmp_path):
    src = u.coco(tmp_path)
    out = tmp_path / "out"
    u.ingest("coco-captions", out, "--src", str(src["captions"]), "--images", str(src["images"]))
    assert by_key(out)["9"].record.response == (
        "A brown dog lying on the grass.\nA dog resting outside."
    )


def _pixels(payload: bytes) -> Image.Image:
    return Image.open(io.BytesIO(payload)).convert("RGB")


def test_refcoco_draws_a_green_box_on_a_copy(tmp_path):
    src = u.refcoco(tmp_path)
    out = tmp_path / "out"
    args = ["--src", str(src["refs"]), "--instances", str(src["instances"]), "--split", "train"]
    u.ingest("refcoco", out, *args, "--images", str(src["images"]))
    got = by_key(out)
    assert set(got) == {"0", "1"}  # ref 2 is in the val split
    lady = got["0"]
    assert lady.record.task == "region_caption" and lady.source == "refcoco"
    assert lady.record.instruction == (
        "<image>\nDescribe the object inside this green bounding box."
    )
    assert lady.record.response == "The lady with the blue shirt\nwoman in back"
    assert lady.record.meta["bbox_xywh"] == [10.0, 12.0, 20.0, 16.0]
    original = src["images"] / "COCO_train2014_000000581857.jpg"  # a PNG under a .jpg name
    assert lady.image_names == ["0.png"]
    drawn, before = _pixels(lady.images[0]), _pixels(original.read_bytes())
    assert drawn.size == before.size
    # box x 10..29, y 12..27: the 3-pixel line lies just outside it, the region is untouched
    for xy in [(8, 20), (31, 20), (20, 10), (20, 29), (7, 9)]:
        assert drawn.getpixel(xy) == (0, 255, 0), xy
    for xy in [(10, 12), (29, 27), (20, 20), (40, 40), (5, 20)]:
        assert drawn.getpixel(xy) == before.getpixel(xy), xy
    assert original.read_bytes() == u.image_bytes(0, "PNG", (64, 64))  # the source unchanged
    # a JPEG source keeps its type: green within JPEG's error
    cat = _pixels(got["1"].images[0])
    assert got["1"].image_names == ["1.jpg"]
    r, g, b = cat.getpixel((18, 30))
    assert g > 200 and r < 60 and b < 60


def test_vqa_v2_most_frequent_answer(tmp_path):
    src = u.vqa_v2(tmp_path, n=3)
    out = tmp_path / "out"
    args = ["--src", str(src["questions"]), "--answers", str(src["annotations"])]
    u.ingest("vqa-v2", out, *args, "--images", str(src["images"]))
    got = by_key(out)
    assert set(got) == {"100001", "101001", "102001"}
    first = got["100001"]
    assert first.record.task == "vqa" and first.source == "vqav2"
    assert first.record.instruction == "<image>\nWhat colour is 0?"
    assert first.record.response == "dark red"  # 4-4 tie, VQA's multiple_choice_answer wins
    assert got["101001"].record.response == "blue"
    assert first.images == [(src["images"] / "COCO_train2014_000000000100.jpg").read_bytes()]


def test_most_frequent_answer_rules():
    assert most_frequent(["a", "b", "b", "a", "b"]) == "b"
    assert most_frequent(["a", "b", "b", "a"], preferred="b") == "b"
    assert most_frequent(["a", "b", "b", "a"], preferred="zzz") == "a"  # first seen
    assert most_frequent([], preferred="x") == "x"


def test_gqa(tmp_path):
    src = u.gqa(tmp_path)
    out = tmp_path / "out"
    u.ingest("gqa", out, "--src", str(src["questions"]), "--images", str(src["images"]))
    got = by_key(out)
    assert got["02930152"].record.response == "yes"
    assert got["02930152"].record.instruction == "<image>\nIs the sky dark?"
    assert got["07333408"].images == [(src["images"] / "n161313.jpg").read_bytes()]
    assert {s.record.task for s in got.values()} == {"vqa"}


def test_aokvqa_answer_and_rationales(tmp_path):
    src = u.aokvqa(tmp_path)
    out = tmp_path / "out"
    u.ingest("aokvqa", out, "--src", str(src["src"]), "--images", str(src["images"]))
    got = by_key(out)
    assert set(got) == {"22MexNkBPpdZGX6sxbxVBH"}
    s = got["22MexNkBPpdZGX6sxbxVBH"]
    assert s.record.task == "vqa_rationale"
    assert s.record.response == (
        "cab. A train would not be on the street. He has bags as if he is going someone. "
        "He looks to be waiting for a paid ride to pick him up."
    )
    assert manifest(out).skipped == {"no_annotation": 1}  # the test-split question


def test_image_folder_per_class_cap_and_knowledge(tmp_path):
    root = tmp_path / "food"
    for i in range(5):
        u.write_image(root / "apple_pie" / f"img{i}.jpg", i)
    u.write_image(root / "sushi" / "a.png", 1, "PNG")
    u.write_image(root / "sushi" / "b.gif", 2, "GIF")  # not a contract type: re-encoded to PNG
    (root / "sushi" / "README.txt").write_text("not an image")
    knowledge = u.dump(tmp_path / "k.json", {"apple_pie": "A pie with an apple filling."})
    out = tmp_path / "out"
    args = ["--images", str(root), "--per-class", "3", "--knowledge", str(knowledge)]
    u.ingest("image-folder", out, *args)
    got = by_key(out)
    pies = [s for s in got.values() if s.record.meta["class"] == "apple pie"]
    assert len(pies) == 3  # the cap
    assert pies[0].record.instruction == "<image>\nWhat is this?"
    assert pies[0].record.response == "a photo of a apple pie\nA pie with an apple filling."
    assert got["sushi_a"].record.response == "a photo of a sushi"
    assert got["sushi_b"].image_names == ["sushi_b.png"]
    assert Image.open(io.BytesIO(got["sushi_b"].images[0])).format == "PNG"
    assert got["sushi_a"].images == [(root / "sushi" / "a.png").read_bytes()]
    m = manifest(out)
    assert m.skipped == {"per_class_cap": 2} and m.samples_written == 5
    assert m.source == "food"
    # the same seed picks the same images
    again = tmp_path / "again"
    u.ingest("image-folder", again, *args)
    assert u.tar_bytes(again) == u.tar_bytes(out)


def test_llava_first_turn_and_every_turn(tmp_path):
    src = u.llava(tmp_path)
    first, every = tmp_path / "first", tmp_path / "every"
    base = ["--src", str(src["src"]), "--images", str(src["images"])]
    u.ingest("llava", first, *base)
    u.ingest("llava", every, *base, "--turns", "all")
    got = by_key(first)
    assert set(got) == {"000000033471", "i6IyJda_0"}
    bus = got["000000033471"]
    assert bus.record.instruction == "<image>\nWhat are the colors of the bus?"
    assert bus.record.response == "The bus in the image is white and red."
    assert bus.record.task == "vqa" and len(bus.images) == 1
    assert got["i6IyJda_0"].record.task == "text" and got["i6IyJda_0"].images == []
    turns = by_key(every)
    assert set(turns) == {"000000033471_0", "000000033471_1", "i6IyJda_0_0"}
    second = turns["000000033471_1"]
    assert second.record.instruction == "What feature can be seen on the back of the bus?"
    assert len(second.images) == 1  # no marker: the image comes first


def test_jsonl_mapping_and_bad_lines(tmp_path):
    images = tmp_path / "imgs"
    u.write_image(images / "a.jpg", 0)
    u.write_image(images / "b.webp", 1, "WEBP")
    rows = [
        {"id": "x.1", "q": "<image>\nWhat is red?", "a": "the ball", "kind": "vqa", "img": "a.jpg"},
        {"id": "x/2", "q": "Describe it.", "a": "a blue field", "kind": "caption", "img": "b.webp"},
        {"id": "x3", "q": "Describe it.", "a": "", "kind": "caption", "img": "a.jpg"},
        {"id": "x4", "q": "Describe it.", "a": "text", "kind": "no-such-task", "img": "a.jpg"},
    ]
    src = tmp_path / "mine.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    out = tmp_path / "out"
    cols = ["--column", "instruction=q", "--column", "response=a", "--column", "task=kind"]
    cols += ["--column", "key=id", "--column", "image=img"]
    u.ingest("jsonl", out, "--src", str(src), "--images", str(images), *cols)
    got = by_key(out)
    assert set(got) == {"x_1", "x_2"}  # keys sanitised to [A-Za-z0-9_-]
    assert got["x_2"].image_names == ["x_2.webp"]  # webp kept as stored
    assert got["x_2"].images == [(images / "b.webp").read_bytes()]
    assert got["x_1"].source == "mine"
    m = manifest(out)
    assert m.skipped == {"bad_record": 3}  # empty response, unknown task, invalid JSON line


def test_csv_change_captions_keep_image_order(tmp_path):
    images = tmp_path / "imgs"
    for i, name in enumerate(["b1.png", "a1.png", "b2.jpg", "a2.jpg"]):
        u.write_image(images / name, i, "PNG" if name.endswith("png") else "JPEG")
    src = tmp_path / "edits.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request", "caption", "before", "after"])
        w.writerow(["What changed?", "the car is gone", "b1.png", "a1.png"])
        w.writerow(["Image 1: <image>\nImage 2: <image>\nWhat changed?", "a tree", "b2.jpg",
                    "a2.jpg"])  # fmt: skip
    out = tmp_path / "out"
    cols = ["--column", "instruction=request", "--column", "response=caption"]
    cols += ["--column", "image=before", "--column", "image=after", "--task", "change_caption"]
    u.ingest("csv", out, "--src", str(src), "--images", str(images), *cols, "--source", "edits")
    got = by_key(out)
    assert set(got) == {"row00000000", "row00000001"}
    first = got["row00000000"]
    assert first.record.task == "change_caption" and first.source == "edits"
    assert first.image_names == ["row00000000.0.png", "row00000000.1.png"]
    assert first.images == [(images / "b1.png").read_bytes(), (images / "a1.png").read_bytes()]
    assert got["row00000001"].images[1] == (images / "a2.jpg").read_bytes()


def test_every_written_json_is_an_input_sample(tmp_path):
    """The JSON members validate as the contract's model, with `source` set (not via reader)."""
    import tarfile

    src = u.vqa_v2(tmp_path, n=2)
    out = tmp_path / "out"
    args = ["--src", str(src["questions"]), "--answers", str(src["annotations"])]
    u.ingest("vqa-v2", out, *args, "--images", str(src["images"]), "--source", "my-vqa")
    with tarfile.open(out / "00000.tar") as tar:
        members = tar.getmembers()
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            if m.name.endswith(".json"):
                data = json.loads(tar.extractfile(m).read())
                assert InputSample.model_validate(data).source == "my-vqa"
    assert [m.name for m in members] == [
        "100001.json", "100001.jpg", "101001.json", "101001.jpg",
    ]  # fmt: skip


@pytest.mark.parametrize("reencode", [False, True])
def test_reencode_only_when_asked(tmp_path, reencode):
    src = u.gqa(tmp_path)
    out = tmp_path / "out"
    extra = ["--reencode"] if reencode else []
    u.ingest("gqa", out, "--src", str(src["questions"]), "--images", str(src["images"]), *extra)
    s = by_key(out)["02930152"]
    stored = (src["images"] / "2354786.jpg").read_bytes()
    if reencode:
        assert s.image_names == ["02930152.png"] and s.images != [stored]
    else:
        assert s.image_names == ["02930152.jpg"] and s.images == [stored]


def test_refcoco_box_off_the_image_is_a_bad_record(tmp_path):
    src = u.refcoco(tmp_path)
    instances = json.loads(src["instances"].read_text())
    instances["annotations"][1]["bbox"] = [100.0, 100.0, 5.0, 5.0]  # the 64x64 cat image
    src["instances"].write_text(json.dumps(instances))
    out = tmp_path / "out"
    args = ["--src", str(src["refs"]), "--instances", str(src["instances"])]
    u.ingest("refcoco", out, *args, "--images", str(src["images"]))
    assert set(by_key(out)) == {"0"}
    m = manifest(out)
    assert m.skipped == {"bad_record": 2}  # refs 1 and 2 point at that box
    assert "off the image" in m.examples["bad_record"][0].detail
