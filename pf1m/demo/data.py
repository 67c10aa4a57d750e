"""Deterministic demo shards: structured PIL scenes with known objects, colours, positions, counts.

Every task type is covered, with raw annotations shaped like PAPER.md's sources: several captions
plus box text for captioning, short answers for VQA, rationales for vqa_rationale, two images for
change captions, and text-only samples.
"""

import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from pf1m.schemas.sample import TASKS

IMAGE_SIZE = 96
GRID = 3
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 20),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = [
    ["top left", "top", "top right"],
    ["left", "centre", "right"],
    ["bottom left", "bottom", "bottom right"],
]
KNOWLEDGE = {
    "circle": "A circle is a round shape whose points are all the same distance from its centre.",
    "square": "A square has four equal sides and four right angles.",
    "triangle": "A triangle is a polygon with three edges and three corners.",
}
BOX_INTRO = (
    "The objects in the image are listed below as label: [x1, y1, x2, y2], "
    "with coordinates between 0 and 1."
)
SOURCES = {task: f"demo-{task.replace('_', '-')}" for task in TASKS}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    row: int
    col: int

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.row][self.col]

    def box(self) -> tuple[int, int, int, int]:
        cell = IMAGE_SIZE // GRID
        pad = cell // 6
        x0, y0 = self.col * cell + pad, self.row * cell + pad
        return x0, y0, x0 + cell - 2 * pad, y0 + cell - 2 * pad

    def norm_box(self) -> list[float]:
        return [round(v / IMAGE_SIZE, 3) for v in self.box()]


def random_scene(rng: random.Random, min_objs: int = 1, max_objs: int = 4) -> list[Obj]:
    cells = rng.sample(
        [(r, c) for r in range(GRID) for c in range(GRID)], rng.randint(min_objs, max_objs)
    )
    return [Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), r, c) for r, c in cells]


def draw(objs: list[Obj], highlight: Obj | None = None) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (250, 250, 250))
    pen = ImageDraw.Draw(img)
    for obj in objs:
        x0, y0, x1, y1 = obj.box()
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            pen.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            pen.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            pen.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    if highlight is not None:
        x0, y0, x1, y1 = highlight.box()
        pen.rectangle((x0 - 3, y0 - 3, x1 + 3, y1 + 3), outline=(0, 200, 0), width=2)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG" if fmt == "png" else "JPEG", quality=90)
    return buf.getvalue()


def _listing(objs: list[Obj]) -> str:
    names = [f"a {o.label}" for o in objs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _caption(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    captions = [
        f"{_listing(objs)} on a white background",
        f"there are {len(objs)} shapes in the picture",
        "; ".join(f"a {o.label} at the {o.position}" for o in objs),
    ]
    boxes = [f"{o.label}: {o.norm_box()}" for o in objs]
    raw = "\n".join(captions + [BOX_INTRO] + boxes)
    return "<image>\nDescribe this image in detail.", raw, [draw(objs)]


def _region(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    target = rng.choice(objs)
    instruction = "<image>\nDescribe the object inside this green bounding box."
    return instruction, f"a {target.label}", [draw(objs, highlight=target)]


def _classification(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    obj = Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), 1, 1)
    raw = f"a photo of a {obj.shape}\n{KNOWLEDGE[obj.shape]}"
    return "<image>\nWhat is this?", raw, [draw([obj])]


def _change(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    removed = rng.choice(objs)
    after = [o for o in objs if o is not removed]
    raw = f"the {removed.label} at the {removed.position} is gone"
    # Half the samples carry no markers: DESIGN.md says the images then come first.
    instruction = (
        "What is the difference between the two images?"
        if rng.random() < 0.5
        else "Image 1: <image>\nImage 2: <image>\nWhat is the difference between the two images?"
    )
    return instruction, raw, [draw(objs), draw(after)]


def _vqa_qa(rng: random.Random, objs: list[Obj]) -> tuple[str, str, str]:
    kind = rng.choice(["count", "colour", "exists"])
    if kind == "count":
        shape = rng.choice(SHAPES)
        n = sum(o.shape == shape for o in objs)
        reason = f"I can see {NUMBER_WORDS[n]} {shape}{'s' if n != 1 else ''} in the picture."
        return f"How many {shape}s are there?", str(n), reason
    if kind == "colour":
        obj = rng.choice(objs)
        reason = f"The {obj.shape} at the {obj.position} is painted {obj.colour}."
        return f"What colour is the {obj.shape} at the {obj.position}?", obj.colour, reason
    colour = rng.choice(list(COLOURS))
    present = any(o.colour == colour for o in objs)
    reason = f"There {'is' if present else 'is no'} {colour} shape among {_listing(objs)}."
    return f"Is there anything {colour} in the image?", "yes" if present else "no", reason


def _vqa(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    question, answer, _ = _vqa_qa(rng, objs)
    return f"<image>\n{question}", answer, [draw(objs)]


def _vqa_rationale(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    question, answer, reason = _vqa_qa(rng, objs)
    return f"<image>\n{question}", f"{answer}. {reason}", [draw(objs)]


def _text(rng: random.Random, objs: list[Obj]) -> tuple[str, str, list[Image.Image]]:
    shape = rng.choice(SHAPES)
    terse = {"circle": "round, no corners", "square": "4 equal sides", "triangle": "3 sides"}
    return f"What is a {shape}?", terse[shape], []


BUILDERS = {
    "caption": _caption,
    "region_caption": _region,
    "classification": _classification,
    "change_caption": _change,
    "vqa": _vqa,
    "vqa_rationale": _vqa_rationale,
    "text": _text,
}


def make_sample(index: int, seed: int) -> tuple[str, dict, list[bytes], str]:
    """One sample: (key, json record, encoded images, image extension)."""
    rng = random.Random(f"{seed}:{index}")
    task = TASKS[index % len(TASKS)]
    objs = random_scene(rng, min_objs=2 if task == "change_caption" else 1)
    instruction, raw, images = BUILDERS[task](rng, objs)
    fmt = "jpg" if index % 3 == 0 else "png"
    record = {
        "instruction": instruction,
        "response": raw,
        "task": task,
        "source": SOURCES[task],
        "meta": {"objects": [o.__dict__ for o in objs], "index": index},
    }
    return f"sample{index:06d}", record, [encode(im, fmt) for im in images], fmt


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def write_shards(out: str | Path, samples: int, shards: int, seed: int) -> list[Path]:
    """Write `shards` WebDataset tars (samples dealt round-robin); byte-identical for a seed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{k:05d}.tar" for k in range(shards)]
    tars = [tarfile.open(p, "w", format=tarfile.USTAR_FORMAT) for p in paths]
    try:
        for index in range(samples):
            key, record, images, fmt = make_sample(index, seed)
            tar = tars[index % shards]
            _add(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode())
            if len(images) == 1:
                _add(tar, f"{key}.{fmt}", images[0])
            else:
                for j, payload in enumerate(images):
                    _add(tar, f"{key}.{j}.{fmt}", payload)
    finally:
        for tar in tars:
            tar.close()
    return paths


def corpus(n: int = 700, seed: int = 0) -> list[str]:
    """Text of the demo domain, to train the tiny rewriter's tokenizer."""
    texts = []
    for index in range(n):
        _, record, _, _ = make_sample(index, seed)
        texts += [record["instruction"], record["response"]]
    return texts


def train_bpe(vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus()`: the tiny demo models'
    tokenizers start from it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return tok
