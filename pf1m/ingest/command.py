"""The `pf1m ingest` command line: its arguments, their check into an `IngestRequest`, the run
and the summary. `pf1m/jobs/cli.py` adds this sub-command with `add_parser`."""

import argparse
from pathlib import Path

from pydantic import ValidationError

from pf1m.ingest.phrasing import DEFAULT_PHRASING
from pf1m.pipeline.storage import is_local
from pf1m.schemas.config import ConfigError
from pf1m.schemas.ingest import FORMATS, IngestRequest
from pf1m.schemas.sample import TASKS

EPILOG = """examples:
  pf1m ingest coco-captions --src annotations/captions_train2017.json \\
      --instances annotations/instances_train2017.json --images train2017 --out shards/coco
  pf1m ingest refcoco --src 'refcocog/refs(umd).json' --instances refcocog/instances.json \\
      --images train2014 --split train --out shards/refcocog
  pf1m ingest vqa-v2 --src v2_OpenEnded_mscoco_train2014_questions.json \\
      --answers v2_mscoco_train2014_annotations.json --images train2014 --out shards/vqav2
  pf1m ingest image-folder --images elevater/food101/train --per-class 32 \\
      --knowledge food101_knowledge.json --out shards/food101
  pf1m ingest csv --src edits.csv --column instruction=request --column response=caption \\
      --column image=before --column image=after --task change_caption \\
      --images imgs --out shards/edits

Exit codes: 0 every shard committed (skipped samples included: they are data hygiene, counted
with examples in OUT/ingest.json, not a failure); 2 refused before any work (bad arguments, a
missing file, a bad phrasing file, OUT written by a different ingest); 3 some shards failed
(run the same command again to retry them); 1 the ingest broke (e.g. a source file that is not
valid JSON half-way through). Shards already committed in OUT are skipped on a re-run."""

FLAGS = {  # IngestRequest field -> the option that sets it, for error messages
    "src": "--src",
    "images": "--images",
    "out": "--out",
    "shard_size": "--shard-size",
    "max_samples": "--max-samples",
    "per_class": "--per-class",
    "image_pattern": "--image-pattern",
    "columns": "--column",
    "examples_per_reason": "--examples-per-reason",
}


def add_parser(sub, fmt) -> None:
    p = sub.add_parser(
        "ingest",
        formatter_class=fmt,
        help="raw datasets (COCO, RefCOCO, VQAv2, GQA, A-OKVQA, folders, LLaVA, JSONL/CSV) -> "
        "input shards",
        epilog=EPILOG,
    )
    p.add_argument("format", choices=FORMATS)
    p.add_argument(
        "--src", action="append", default=[], help="the source file (all formats but image-folder)"
    )
    p.add_argument("--images", required=True, help="image root; data paths never leave it")
    p.add_argument("--out", required=True, help="output DIR: NNNNN.tar shards and ingest.json")
    p.add_argument("--instances", help="coco-captions: boxes; refcoco: regions (instances.json)")
    p.add_argument("--answers", help="vqa-v2: the annotations file")
    p.add_argument("--knowledge", help="image-folder: JSON {class: knowledge text}")
    p.add_argument("--shard-size", type=int, default=1000, help="source records per shard")
    p.add_argument("--max-samples", type=int, help="read at most N source records")
    p.add_argument("--seed", type=int, default=0, help="picks phrasings and per-class images")
    p.add_argument("--source", help="the samples' `source` (default: from the format)")
    p.add_argument("--workers", type=int, default=1, help="shards written in parallel (Ray)")
    p.add_argument(
        "--task-cpus", type=float, default=1.0, help="Ray's logical CPUs per shard task (workers)"
    )
    p.add_argument("--config", default=str(DEFAULT_PHRASING), help="phrasing YAML")
    p.add_argument("--per-class", type=int, help="image-folder: at most N images per class")
    p.add_argument("--turns", choices=["first", "all"], default="first", help="llava turns")
    p.add_argument("--task", choices=TASKS, help="llava/jsonl/csv: task when no column gives it")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="jsonl/csv: instruction, response, task, key; image once per image, in order",
    )
    p.add_argument("--image-pattern", help="vqa-v2/gqa/aokvqa, e.g. '{image_id:012d}.jpg'")
    p.add_argument("--split", help="refcoco: keep the refs of this split")
    p.add_argument("--reencode", action="store_true", help="re-encode every image to PNG")
    p.add_argument("--examples-per-reason", type=int, default=5, help="in ingest.json")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ingest)


def _abs(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def request_from_args(args: argparse.Namespace) -> IngestRequest:
    columns: dict[str, str] = {}
    image_columns: list[str] = []
    for item in args.column:
        field, eq, column = item.partition("=")
        if not eq or not field.strip() or not column.strip():
            raise ConfigError(f"--column {item!r}: expected FIELD=COLUMN")
        if field.strip() == "image":
            image_columns.append(column.strip())
        else:
            columns[field.strip()] = column.strip()
    try:
        return IngestRequest(
            format=args.format,
            src=[str(_abs(s)) for s in args.src],
            images=str(_abs(args.images)),
            out=str(_abs(args.out)) if is_local(args.out) else args.out,
            instances=_abs(args.instances),
            answers=_abs(args.answers),
            knowledge=_abs(args.knowledge),
            shard_size=args.shard_size,
            max_samples=args.max_samples,
            seed=args.seed,
            source=args.source,
            workers=args.workers,
            task_cpus=args.task_cpus,
            config=str(_abs(args.config)),
            per_class=args.per_class,
            turns=args.turns,
            task=args.task,
            columns=columns,
            image_columns=image_columns,
            image_pattern=args.image_pattern,
            split=args.split,
            reencode=args.reencode,
            examples_per_reason=args.examples_per_reason,
        )
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = FLAGS.get(field, f"--{field.replace('_', '-')}" if field else "arguments")
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("invalid ingest arguments:\n" + "\n".join(lines)) from None


def cmd_ingest(args: argparse.Namespace) -> int:
    from pf1m.ingest.run import format_summary, log_stderr, run_ingest

    req = request_from_args(args)
    outcome = run_ingest(req, log=None if args.quiet else log_stderr)
    print(format_summary(outcome, req.out))
    return int(outcome.exit_code)


def build_request(argv: list[str]) -> IngestRequest:
    """`pf1m ingest ARGV` parsed and checked, without running it (for scripts and tests)."""
    parser = argparse.ArgumentParser(prog="pf1m")
    add_parser(parser.add_subparsers(), argparse.RawDescriptionHelpFormatter)
    return request_from_args(parser.parse_args(["ingest", *argv]))
