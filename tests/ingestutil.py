"""Tiny source datasets in each official format's real layout (key names as the releases have
them), with a few real images, for the `pf1m ingest` tests; and helpers to run an ingest and
read its shards back through the pipeline's own reader."""

import io
import json
from pathlib import Path

from PIL import Image

from pf1m.ingest.command import build_request  # noqa: F401  (re-exported for the tests)
from pf1m.ingest.run import IngestOutcome, run_ingest
from pf1m.pipeline.reader import Bad, Sample, read_samples

COLOURS = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (120, 60, 160)]


def image_bytes(index: int, fmt: str = "JPEG", size: tuple[int, int] = (100, 50)) -> bytes:
    img = Image.new("RGB", size, COLOURS[index % len(COLOURS)])
    for x in range(0, size[0], 7):  # some structure, so every image differs
        img.putpixel((x, (x * (index + 1)) % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_image(path: Path, index: int, fmt: str = "JPEG", size=(100, 50)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = image_bytes(index, fmt, size)
    path.write_bytes(payload)
    return payload


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ---- COCO: captions_*.json and instances_*.json ----

COCO_IMAGES = [(9, "000000000009.jpg"), (25, "000000000025.jpg"), (30, "000000000030.jpg")]


def coco(tmp: Path) -> dict[str, Path]:
    """Three images 100x50: 9 with two captions and two boxes (one crowd), 25 with one caption
    and no box, 30 with a caption but its file missing; plus an image with no caption."""
    images_dir = tmp / "train2017"
    image_entries = []
    for i, (image_id, name) in enumerate(COCO_IMAGES + [(42, "000000000042.jpg")]):
        if image_id != 30:
            write_image(images_dir / name, i)
        image_entries.append(
            {
                "license": 1,
                "file_name": name,
                "coco_url": f"http://images.cocodataset.org/train2017/{name}",
                "height": 50,
                "width": 100,
                "date_captured": "2013-11-14 16:28:13",
                "flickr_url": "http://farm1.staticflickr.com/x.jpg",
                "id": image_id,
            }
        )
    info = {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017}
    licenses = [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "x"}]
    captions = {
        "info": info,
        "licenses": licenses,
        "images": image_entries,
        "annotations": [
            {"image_id": 9, "id": 1, "caption": "A brown dog lying on the grass."},
            {"image_id": 25, "id": 2, "caption": "A giraffe eating leaves from a tree."},
            {"image_id": 9, "id": 3, "caption": "A dog resting outside. "},
            {"image_id": 30, "id": 4, "caption": "A vase of flowers."},
        ],
    }
    instances = {
        "info": info,
        "licenses": licenses,
        "images": image_entries,
        "annotations": [
            {
                "segmentation": [[10.0, 10.0, 50.0, 10.0, 50.0, 30.0]],
                "area": 800.0,
                "iscrowd": 0,
                "image_id": 9,
                "bbox": [10.0, 10.0, 40.0, 20.0],
                "category_id": 18,
                "id": 100,
            },
            {
                "segmentation": {"counts": [0, 5, 10], "size": [50, 100]},
                "area": 50.0,
                "iscrowd": 1,
                "image_id": 9,
                "bbox": [60.0, 5.0, 10.0, 5.0],
                "category_id": 1,
                "id": 101,
            },
            {
                "segmentation": [[0.0, 0.0, 20.0, 0.0, 20.0, 25.0]],
                "area": 500.0,
                "iscrowd": 0,
                "image_id": 9,
                "bbox": [0.0, 0.0, 20.0, 25.0],
                "category_id": 1,
                "id": 102,
            },
        ],
        "categories": [
            {"supercategory": "person", "id": 1, "name": "person"},
            {"supercategory": "animal", "id": 18, "name": "dog"},
        ],
    }
    return {
        "captions": dump(tmp / "annotations" / "captions_train2017.json", captions),
        "instances": dump(tmp / "annotations" / "instances_train2017.json", instances),
        "images": images_dir,
    }


def coco_generated(tmp: Path, n: int, size=(64, 48)) -> dict[str, Path]:
    """`n` images with two captions each and one box: for the worker-count and bench runs."""
    images_dir = tmp / "images"
    images, anns, boxes = [], [], []
    for i in range(n):
        name = f"{i:012d}.jpg"
        write_image(images_dir / name, i, size=size)
        images.append({"file_name": name, "height": size[1], "width": size[0], "id": i})
        anns += [
            {"image_id": i, "id": 2 * i, "caption": f"picture number {i} of a coloured field"},
            {"image_id": i, "id": 2 * i + 1, "caption": f"a plain image, index {i}"},
        ]
        bbox = [float(i % 10), 2.0, 20.0, 10.0]
        boxes.append({"image_id": i, "bbox": bbox, "category_id": 1, "id": i, "iscrowd": 0,
                      "area": 200.0, "segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]})  # fmt: skip
    cats = [{"supercategory": "thing", "id": 1, "name": "square"}]
    return {
        "captions": dump(tmp / "captions.json", {"images": images, "annotations": anns}),
        "instances": dump(
            tmp / "instances.json", {"images": images, "annotations": boxes, "categories": cats}
        ),
        "images": images_dir,
    }


# ---- RefCOCO(g): refs(umd).p as JSON, and instances.json ----


def refcoco(tmp: Path) -> dict[str, Path]:
    images_dir = tmp / "train2014"
    write_image(images_dir / "COCO_train2014_000000581857.jpg", 0, "PNG", (64, 64))
    write_image(images_dir / "COCO_train2014_000000000077.jpg", 1, "JPEG", (64, 64))
    refs = [
        {
            "sent_ids": [0, 1],
            "file_name": "COCO_train2014_000000581857_1719310.jpg",
            "ann_id": 1719310,
            "ref_id": 0,
            "image_id": 581857,
            "split": "train",
            "sentences": [
                {
                    "tokens": ["the", "lady"],
                    "raw": "The lady with the blue shirt",
                    "sent_id": 0,
                    "sent": "the lady with the blue shirt",
                },  # fmt: skip
                {
                    "tokens": ["woman"],
                    "raw": "woman in back",
                    "sent_id": 1,
                    "sent": "woman in back",
                },
            ],
            "category_id": 1,
        },
        {
            "sent_ids": [2],
            "file_name": "COCO_train2014_000000000077_5.jpg",
            "ann_id": 5,
            "ref_id": 1,
            "image_id": 77,
            "split": "train",
            "sentences": [{"tokens": ["cat"], "raw": "a cat", "sent_id": 2, "sent": "a cat"}],
            "category_id": 17,
        },
        {
            "sent_ids": [3],
            "file_name": "COCO_train2014_000000000077_5.jpg",
            "ann_id": 5,
            "ref_id": 2,
            "image_id": 77,
            "split": "val",
            "sentences": [{"tokens": ["kitty"], "raw": "kitty", "sent_id": 3, "sent": "kitty"}],
            "category_id": 17,
        },
    ]
    instances = {
        "info": {},
        "images": [
            {
                "license": 1,
                "file_name": "COCO_train2014_000000581857.jpg",
                "height": 64,
                "width": 64,
                "id": 581857,
            },  # fmt: skip
            {
                "license": 1,
                "file_name": "COCO_train2014_000000000077.jpg",
                "height": 64,
                "width": 64,
                "id": 77,
            },  # fmt: skip
        ],
        "licenses": [],
        "type": "instances",
        "annotations": [
            {
                "segmentation": [[]],
                "area": 160.0,
                "iscrowd": 0,
                "image_id": 581857,
                "bbox": [10.0, 12.0, 20.0, 16.0],
                "category_id": 1,
                "id": 1719310,
            },  # fmt: skip
            {
                "segmentation": [[]],
                "area": 400.0,
                "iscrowd": 0,
                "image_id": 77,
                "bbox": [20.0, 20.0, 20.0, 20.0],
                "category_id": 17,
                "id": 5,
            },  # fmt: skip
        ],
        "categories": [
            {"supercategory": "person", "id": 1, "name": "person"},
            {"supercategory": "animal", "id": 17, "name": "cat"},
        ],  # fmt: skip
    }
    return {
        "refs": dump(tmp / "refcocog" / "refs(umd).json", refs),
        "instances": dump(tmp / "refcocog" / "instances.json", instances),
        "images": images_dir,
    }


# ---- VQAv2: questions and annotations files ----


def vqa_v2(tmp: Path, n: int = 3, with_images: bool = True) -> dict[str, Path]:
    images_dir = tmp / "train2014"
    questions, annotations = [], []
    for i in range(n):
        image_id = 100 + i
        if with_images:
            write_image(images_dir / f"COCO_train2014_{image_id:012d}.jpg", i)
        qid = image_id * 1000 + 1
        questions.append({"image_id": image_id, "question": f"What colour is {i}?",
                          "question_id": qid})  # fmt: skip
        words = (
            ["red"] * 4 + ["dark red"] * 4 + ["maroon"] * 2
            if i == 0
            else ["blue"] * 7 + ["navy"] * 3
        )  # noqa: E501
        annotations.append(
            {
                "question_type": "what color",
                "multiple_choice_answer": "dark red" if i == 0 else "blue",
                "answers": [
                    {"answer": w, "answer_confidence": "yes", "answer_id": k + 1}
                    for k, w in enumerate(words)
                ],
                "image_id": image_id,
                "answer_type": "other",
                "question_id": qid,
            }
        )
    head = {"info": {"description": "VQA v2"}, "license": {"name": "CC BY 4.0"}}
    qfile = {**head, "task_type": "Open-Ended", "data_type": "mscoco",
             "data_subtype": "train2014", "questions": questions}  # fmt: skip
    afile = {**head, "data_subtype": "train2014", "annotations": annotations}
    return {
        "questions": dump(tmp / "v2_OpenEnded_mscoco_train2014_questions.json", qfile),
        "annotations": dump(tmp / "v2_mscoco_train2014_annotations.json", afile),
        "images": images_dir,
    }


# ---- GQA: {question id: question} ----


def gqa(tmp: Path) -> dict[str, Path]:
    images_dir = tmp / "images"
    write_image(images_dir / "2354786.jpg", 0)
    write_image(images_dir / "n161313.jpg", 1)
    questions = {
        "02930152": {
            "semantic": [{"operation": "select", "dependencies": [], "argument": "sky (2486325)"}],
            "entailed": ["02930160"],
            "equivalent": ["02930152"],
            "question": "Is the sky dark?",
            "imageId": "2354786",
            "isBalanced": True,
            "groups": {"global": None, "local": "06-sky_dark"},
            "answer": "yes",
            "semanticStr": "select: sky (2486325)->verify color: dark [0]",
            "annotations": {"answer": {}, "question": {"2": "2486325"}, "fullAnswer": {}},
            "types": {"detailed": "verifyAttr", "semantic": "attr", "structural": "verify"},
            "fullAnswer": "Yes, the sky is dark.",
        },
        "07333408": {
            "question": "What is on the white wall?",
            "imageId": "n161313",
            "isBalanced": True,
            "answer": "pipe",
            "fullAnswer": "The pipe is on the wall.",
        },
    }
    return {"questions": dump(tmp / "train_balanced_questions.json", questions),
            "images": images_dir}  # fmt: skip


# ---- A-OKVQA ----


def aokvqa(tmp: Path) -> dict[str, Path]:
    images_dir = tmp / "train2017"
    write_image(images_dir / "000000299207.jpg", 0)
    write_image(images_dir / "000000000123.jpg", 1)
    entries = [
        {
            "split": "train",
            "image_id": 299207,
            "question_id": "22MexNkBPpdZGX6sxbxVBH",
            "question": "What is the man by the bags awaiting?",
            "choices": ["skateboarder", "train", "delivery", "cab"],
            "correct_choice_idx": 3,
            "direct_answers": [
                "ride",
                "ride",
                "bus",
                "ride",
                "cab",
                "travel",
                "cab",
                "ride",
                "ride",
                "cab",
            ],  # fmt: skip
            "difficult_direct_answer": False,
            "rationales": [
                "A train would not be on the street.",
                "He has bags as if he is going someone.",
                "He looks to be waiting for a paid ride to pick him up.",
            ],
        },
        {  # the test split: no answer, no rationales
            "split": "test",
            "image_id": 123,
            "question_id": "2hLsbQkyKmRYNmdKjeKr8U",
            "question": "What is this?",
            "choices": ["a", "b", "c", "d"],
            "difficult_direct_answer": False,
        },
    ]
    return {"src": dump(tmp / "aokvqa_v1p0_train.json", entries), "images": images_dir}


# ---- LLaVA conversations ----


def llava(tmp: Path) -> dict[str, Path]:
    images_dir = tmp / "llava_images"
    write_image(images_dir / "coco" / "train2017" / "000000033471.jpg", 0)
    entries = [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat are the colors of the bus?"},
                {"from": "gpt", "value": "The bus in the image is white and red."},
                {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                {"from": "gpt", "value": "The back of the bus features an advertisement."},
            ],
        },
        {
            "id": "i6IyJda_0",
            "model": "",
            "conversations": [
                {"from": "human", "value": "Summarise the plot of Hamlet in one sentence."},
                {"from": "gpt", "value": "A prince avenges his father's murder and dies."},
            ],
        },
    ]
    return {"src": dump(tmp / "llava_v1_5_mix665k.json", entries), "images": images_dir}


# ---- running an ingest and reading its shards ----


def ingest(fmt: str, out: Path, *args: str, workers: int = 1) -> IngestOutcome:
    """Run `pf1m ingest FMT --out OUT ARGS` in this process (its argument parsing included)."""
    # Small logical CPUs: the session's Ray holds its replicas and scorers on two CPUs.
    cpus = ["--task-cpus", "0.05"] if workers > 1 else []
    req = build_request([fmt, "--out", str(out), "--workers", str(workers), *cpus, *args])
    return run_ingest(req)


def read_dir(out: Path) -> dict[str, list[Sample | Bad]]:
    """Every shard of OUT through the pipeline's reader: shard name -> items in order."""
    shards = {}
    for tar in sorted(out.glob("*.tar")):
        with tar.open("rb") as f:
            shards[tar.stem] = list(read_samples(f, max_images=4))
    return shards


def samples(out: Path) -> list[Sample]:
    items = [item for shard in read_dir(out).values() for item in shard]
    bad = [item for item in items if isinstance(item, Bad)]
    assert not bad, f"the pipeline's reader refused ingested samples: {bad}"
    return items  # type: ignore[return-value]


def tar_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}
