"""`pf1m ingest coco-captions` against a plain loop a user would write, on a generated COCO
source (captions + instances with segmentation polygons, a few thousand small JPEGs).

- the baseline: `json.load` both files, group captions and boxes per image, copy each image's
  bytes into a tar, one process. It uses the same templates and tar layout, so it writes the
  same shards: the bench checks they are byte-identical before it reports anything.
- `pf1m ingest`, one worker in-process: streams the JSON (ijson), checks every image (full
  decode, bomb guard), commits shard by shard with markers.
- `pf1m ingest`, `--workers 2` on a local Ray (two cores here), timed after Ray is up.

Lines: samples/s (value: ingest, baseline: the plain loop); peak memory (maxrss of the process
that did the work, from wait4; value: ingest, baseline: the plain loop; MB); and the peak Python
heap (tracemalloc) of reading the two JSON files: ingest's streaming reader to the end against
`json.load`. The issue sets no target, so `target` is null. Each side runs in its own process,
interleaved, best of `--repeats`. Raw lines also go to bench/results/ingest_cpu.jsonl.

Run: `make bench` or `python -m bench.ingest [--images 3000 --shard-size 500 --repeats 2]`.
"""

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import emit, note

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ingest_cpu.jsonl"
POLYGON_POINTS = 100  # per object: makes the instances JSON weigh what COCO's does per box


def generate(work: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """`n` JPEGs (64x48), two captions each, three boxes each with a polygon."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images_dir = work / "train"
    images_dir.mkdir(parents=True)
    images, captions, boxes = [], [], []
    for i in range(n):
        img = Image.new("RGB", (64, 48), (rng.randrange(256), 200, 120))
        ImageDraw.Draw(img).ellipse(
            (rng.randrange(30), 5, 40, 40), fill=(20, 20, rng.randrange(256))
        )
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        name = f"{i:012d}.jpg"
        (images_dir / name).write_bytes(buf.getvalue())
        images.append({"license": 1, "file_name": name, "height": 48, "width": 64, "id": i})
        captions += [
            {"image_id": i, "id": 2 * i, "caption": f"A small picture number {i} with a disc."},
            {"image_id": i, "id": 2 * i + 1, "caption": "A coloured disc on a plain background."},
        ]
        for k in range(3):
            poly = [round(rng.uniform(0, 60), 2) for _ in range(POLYGON_POINTS)]
            bbox = [float(rng.randrange(30)), float(rng.randrange(20)), 20.0, 15.0]
            boxes.append({"segmentation": [poly], "area": 300.0, "iscrowd": 0, "image_id": i,
                          "bbox": bbox, "category_id": 1 + k, "id": 3 * i + k})  # fmt: skip
    cats = [{"supercategory": "shape", "id": k, "name": n} for k, n in
            enumerate(["disc", "square", "ring"], 1)]  # fmt: skip
    (work / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    instances = {"images": images, "annotations": boxes, "categories": cats}
    (work / "instances.json").write_text(json.dumps(instances))
    return {
        "captions": work / "captions.json",
        "instances": work / "instances.json",
        "images": images_dir,
    }


def baseline(captions: Path, instances: Path, images: Path, out: Path, shard_size: int) -> int:
    """The plain loop: load everything, then write the same shards in one process."""
    from pf1m.ingest.phrasing import (
        DEFAULT_PHRASING,
        box_lines,
        caption_response,
        choose,
        load_phrasing,
    )
    from pf1m.ingest.shards import _add

    ph, _ = load_phrasing(DEFAULT_PHRASING)
    caps = json.loads(captions.read_text())
    inst = json.loads(instances.read_text())
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    by_image: dict[int, list[str]] = {}
    for a in caps["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
    objs: dict[int, list] = {}
    for a in inst["annotations"]:
        objs.setdefault(a["image_id"], []).append((cats[a["category_id"]], *a["bbox"]))
    out.mkdir(parents=True)
    entries = caps["images"]
    for k in range(0, len(entries), shard_size):
        with tarfile.open(
            out / f"{k // shard_size:05d}.tar", "w", format=tarfile.GNU_FORMAT
        ) as tar:
            for im in entries[k : k + shard_size]:
                key = str(im["id"])
                lines = box_lines(ph.caption, objs.get(im["id"], []), im["width"], im["height"])
                record = {
                    "instruction": ph.image_prefix + choose(ph.caption.instructions, 0, key),
                    "response": caption_response(ph.caption, by_image[im["id"]], lines),
                    "task": "caption",
                    "source": "coco",
                    "meta": {
                        "image_id": im["id"],
                        "file_name": im["file_name"],
                        "boxes": len(lines),
                    },  # fmt: skip
                }
                payload = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
                _add(tar, f"{key}.json", payload)
                _add(tar, f"{key}.jpg", (images / im["file_name"]).read_bytes())
    return len(entries)


def _child(args: list[str]) -> None:
    """Runs one side in this (child) process; prints {"samples", "seconds"}."""
    side, captions, instances, images, out, shard_size = args
    import pf1m.ingest.phrasing  # noqa: F401  (imports are not the loop's time)
    import pf1m.ingest.shards  # noqa: F401

    if side == "baseline":
        start = time.perf_counter()
        n = baseline(Path(captions), Path(instances), Path(images), Path(out), int(shard_size))
        seconds = time.perf_counter() - start
    else:
        from pf1m.ingest.command import build_request
        from pf1m.ingest.run import run_ingest
        from pf1m.pipeline.local_ray import ensure_ray

        workers = 2 if side == "ingest-ray" else 1
        if workers > 1:
            ensure_ray(log_to_driver=True)  # Ray's start-up is not ingest time
        req = build_request(["coco-captions", "--src", captions, "--instances", instances,
                             "--images", images, "--out", out, "--shard-size", shard_size,
                             "--workers", str(workers)])  # fmt: skip
        start = time.perf_counter()
        n = run_ingest(req).manifest.samples_written
        seconds = time.perf_counter() - start
    print(json.dumps({"samples": n, "seconds": seconds}))


def measure(side: str, src: dict[str, Path], out: Path, shard_size: int) -> tuple[float, float]:
    """(samples/s, peak RSS in MB of the process that did the work)."""
    cmd = [sys.executable, "-m", "bench.ingest", "_child", side, str(src["captions"]),
           str(src["instances"]), str(src["images"]), str(out), str(shard_size)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{side} failed:\n{stderr.decode()[-3000:]}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    return result["samples"] / result["seconds"], usage.ru_maxrss / 1024


def reader_heap(src: dict[str, Path], work: Path) -> tuple[float, float]:
    """Peak Python heap (MB, tracemalloc) of the coco-captions reader run to the end, and of
    `json.load` of the same two files: what streaming saves, without the interpreter's floor."""
    import tracemalloc

    from pf1m.ingest.command import build_request
    from pf1m.ingest.formats import READERS
    from pf1m.ingest.phrasing import DEFAULT_PHRASING, load_phrasing

    req = build_request(["coco-captions", "--src", str(src["captions"]), "--instances",
                         str(src["instances"]), "--images", str(src["images"]),
                         "--out", str(work / "unused")])  # fmt: skip
    phrasing, _ = load_phrasing(DEFAULT_PHRASING)
    tracemalloc.start()
    records = sum(1 for _ in READERS["coco-captions"](req, phrasing))
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    loaded = [json.loads(src[k].read_text()) for k in ("captions", "instances")]
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert records == len(loaded[0]["images"])
    return streamed / 2**20, whole / 2**20


def tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf1m-bench-ingest-"))
    src = generate(work / "src", args.images)
    mb = sum(src[k].stat().st_size for k in ("captions", "instances")) / 2**20
    note(f"{args.images} images, {mb:.1f} MB of JSON, shard size {args.shard_size}")
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.repeats):
        for side in ("baseline", "ingest", "ingest-ray"):
            out = work / f"{side}-{r}"
            rate, rss = measure(side, src, out, args.shard_size)
            note(f"{side}: {rate:.1f} samples/s, peak RSS {rss:.0f} MB")
            prev = best.get(side)
            best[side] = (max(rate, prev[0]) if prev else rate, min(rss, prev[1]) if prev else rss)
            if side != "baseline":
                assert tars(out) == tars(work / f"baseline-{r}"), f"{side} wrote other shards"
    note("the three sides wrote byte-identical shards")
    streamed, whole = reader_heap(src, work)
    lines = [
        emit("ingest", "coco_captions_samples_per_s_1_worker_vs_plain_loop",
             best["ingest"][0], "samples/s", best["baseline"][0], None),
        emit("ingest", "coco_captions_samples_per_s_2_ray_workers_vs_plain_loop",
             best["ingest-ray"][0], "samples/s", best["baseline"][0], None),
        emit("ingest", "peak_rss_mb_1_worker_vs_plain_loop",
             best["ingest"][1], "MB", best["baseline"][1], None),
        emit("ingest", "source_json_peak_heap_mb_streamed_reader_vs_json_load",
             streamed, "MB", whole, None),
    ]  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
