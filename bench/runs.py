"""A committed run directory built directly from synthetic rows with the project's own writer,
stats and commit code (no model, no Ray): what export benchmarks and fast tests read."""

import io
import random
import uuid
from pathlib import Path

from PIL import Image

from pf1m.pipeline.commit import now_iso
from pf1m.pipeline.manifest import package_versions, save_manifest
from pf1m.pipeline.shard_output import ShardOutput
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.config import config_hash, load_config
from pf1m.schemas.run import RunManifest, ShardState
from pf1m.schemas.sample import TASKS

ROOT = Path(__file__).resolve().parents[1]
CLIP = 17.0  # the paper's paragraph threshold, which the synthetic outputs follow
WORDS = "the a red blue small large cat dog bird sits stands near on under tree car road".split()


def _png(rng: random.Random, side: int) -> bytes:
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def synthetic_row(rng: random.Random, shard: str, index: int, run_id: str, side: int) -> dict:
    """A kept or rejected row shaped like the pipeline's: the scores each task's filters give."""
    task = TASKS[index % len(TASKS)]
    n_images = 0 if task == "text" else 2 if task == "change_caption" else 1
    key = f"s{index:07d}"
    paragraphs = None
    rewrite = _text(rng, rng.randint(6, 40))
    output = rewrite
    if task in ("caption", "region_caption"):
        texts = [_text(rng, rng.randint(5, 15)) for _ in range(rng.randint(1, 3))]
        rewrite = "\n\n".join(texts)
        paragraphs = [{"text": t, "clip_score": rng.uniform(10.0, 30.0)} for t in texts]
        kept = [p["text"] for p in paragraphs if p["clip_score"] >= CLIP or len(texts) < 2]
        output = "\n\n".join(kept or texts[:1])
        if len(texts) > 1 and not any(p["clip_score"] >= CLIP for p in paragraphs):
            paragraphs[0]["clip_score"] = 20.0
    vqa = task in ("vqa", "vqa_rationale", "classification")
    marker = "<image> " if n_images == 1 and index % 2 else ""
    row_kept = index % 5 != 0
    return {
        "uid": f"{shard}/{key}",
        "shard": shard,
        "key": key,
        "source": f"syn-{task.replace('_', '-')}",
        "task": task,
        "instruction": marker + _text(rng, 8) + "?",
        "original": _text(rng, 5),
        "rewrite_raw": rewrite,
        "output": output,
        "images": [{"bytes": _png(rng, side), "path": f"{key}.{i}.png"} for i in range(n_images)],
        "rouge_l": rng.random(),
        "sts": None if vqa or task == "text" else rng.random(),
        "nli_logits": [rng.gauss(0, 1) for _ in range(3)] if vqa else None,
        "nli_label": "entailment" if vqa else None,
        "paragraphs": paragraphs,
        "reward": rng.gauss(0, 1),
        "reward_original": rng.gauss(-2, 1),
        "finish_reason": "stop",
        "prompt_tokens": rng.randint(50, 200),
        "output_tokens": rng.randint(10, 300),
        "kept": row_kept,
        "reject_reasons": [] if row_kept else ["length:too_short"],
        "run_id": run_id,
    }


def build_run(out: str, samples: int, shards: int, seed: int = 0, side: int = 32) -> str:
    """OUT with `shards` committed shards of `samples` rows in all (one in five rejected)."""
    fs, root = url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    cfg = load_config(
        ROOT / "pf1m" / "configs" / "demo.yaml",
        [f"input={root}/in/*.tar", f"output={root}", f"filters.clip_paragraph.threshold={CLIP}"],
    )
    hashed = cfg.hashed_view({name: "synthetic" for name in cfg.models()})
    run_id = uuid.uuid4().hex[:12]
    names = [f"shard-{i:05d}" for i in range(shards)]
    manifest = RunManifest(
        run_id=run_id,
        config=cfg.model_dump(mode="json"),
        config_hash=config_hash(hashed),
        hashed=hashed,
        versions=package_versions(),
        started_at=now_iso(),
        updated_at=now_iso(),
        shards={n: ShardState(url=f"{root}/in/{n}.tar") for n in names},
    )
    rng = random.Random(seed)
    rg = cfg.writer.row_group_size
    for s, shard in enumerate(names):
        count = samples // shards + (s < samples % shards)
        with ShardOutput(fs, root, shard, rg) as output:
            for i in range(count):
                row = synthetic_row(rng, shard, i, run_id, side)
                output.add("data" if row["kept"] else "rejected", row)
            fingerprint = InputFingerprint(url=manifest.shards[shard].url, size=count)
            output.commit(
                run_id=run_id, fingerprint=fingerprint,
                config_hash=manifest.config_hash, samples_in=count,
            )  # fmt: skip
        manifest.shards[shard].status = "done"
        manifest.shards[shard].samples_in = count
    manifest.status = "succeeded"
    save_manifest(fs, root, manifest)
    return root
