"""`pf1m`: the command line. Every sub-command has --help with an example."""

import argparse
import json
import sys
from pathlib import Path

from pf1m.schemas.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_config,
    preset_dir,
    validate_config,
)
from pf1m.schemas.run import ExitCode

CONFIGS = preset_dir()  # package data: found in a wheel install too


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set resources.rewriter_replicas=4",
    )
    p.add_argument("--max-shards", type=int, default=None, help="process only the first N shards")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="read at most N samples per shard (sets limit_per_shard; part of the config hash)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"limit_per_shard={args.limit}"] if args.limit is not None else []
    return list(args.overrides) + extra


VERBOSE_HELP = "show Ray worker and engine logs live (default: in OUT/logs/)"


def execute(
    cfg: RunConfig, max_shards: int | None, quiet: bool, demo: bool = False, verbose: bool = False
) -> int:
    """Run a validated config and print the summary; returns the exit code."""
    from pf1m.pipeline.driver import Driver
    from pf1m.pipeline.summary import DEMO_NOTE, format_summary

    result = Driver(cfg, max_shards=max_shards, quiet=quiet, verbose=verbose).run()
    if result.summary:
        print(format_summary(result.summary, int(result.exit_code)))
    if demo:
        print(DEMO_NOTE)
    return int(result.exit_code)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args))
    return execute(cfg, args.max_shards, args.quiet, verbose=args.verbose)


def cmd_resume(args: argparse.Namespace) -> int:
    from pf1m.pipeline.manifest import load_manifest
    from pf1m.pipeline.storage import url_to_fs

    fs, root = url_to_fs(args.out)
    manifest = load_manifest(fs, root)
    if manifest is None:
        raise ConfigError(
            f"{args.out}: no run.json here, nothing to resume (a run killed during start-up "
            "records nothing: run the same `pf1m run` command again)"
        )
    data = manifest.config
    origins = apply_overrides(data, args.overrides)  # resources may change; the rest is checked
    cfg = validate_config(data, f"{args.out}/run.json", origins)
    return execute(cfg, None, args.quiet, verbose=args.verbose)


def _write_report(fs, root: str, stats, out: str, per_reason: int = 5) -> str:
    """OUT/report/index.html for a run whose stats were just merged; returns its path."""
    from pf1m.pipeline.audit import committed
    from pf1m.pipeline.report import write_report

    run = committed(fs, root)
    cfg = validate_config(run.manifest.config, f"{out}/run.json")
    return write_report(fs, root, run, stats, cfg, per_reason)


def cmd_audit(args: argparse.Namespace) -> int:
    from pf1m.pipeline.audit import audit, format_table, what_if
    from pf1m.pipeline.storage import url_to_fs

    fs, root = url_to_fs(args.out)
    if args.what_if:
        for spec in args.what_if:
            key = spec.partition("=")[0]
            print(f"{key:<32} {'kept':>8} {'unscored':>9}")
            for value, kept, unscored in what_if(fs, root, spec):
                print(f"  = {value:<28} {kept:>8} {unscored:>9}")
        return 0
    stats = audit(fs, root)
    print(format_table(stats))
    path = _write_report(fs, root, stats, args.out, args.samples_per_reason)
    print(f"\nstats: {args.out}/stats.json\nreport: {path}")
    if stats.problems:
        return int(ExitCode.ERROR)
    return int(ExitCode.OK if stats.complete else ExitCode.PARTIAL)


def cmd_refilter(args: argparse.Namespace) -> int:
    from pf1m.pipeline.refilter import refilter
    from pf1m.pipeline.storage import url_to_fs

    r = refilter(args.out, args.overrides, args.to)
    print(
        f"refiltered {r.shards} shards into {r.out}: kept {r.kept}, rejected {r.rejected}, "
        f"quarantined {r.quarantined}\n"
        f"moved to data/ {r.to_data}, moved to rejected/ {r.to_rejected}\n"
        f"unscored (a new decision needs a score never computed) {r.unscored}\n"
        f"reward computed on an output the new CLIP threshold rebuilt {r.reward_stale}"
    )
    fs, root = url_to_fs(args.to)
    print(f"report: {_write_report(fs, root, r.stats, args.to)}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from pf1m.demo.data import write_shards

    paths = write_shards(args.out, args.samples, args.shards, args.seed)
    print(f"wrote {len(paths)} shards, {args.samples} samples, to {args.out}")
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from pf1m.pipeline.prompt_view import find_sample, view_prompt

    cfg = load_config(args.config, args.overrides)
    print(view_prompt(cfg, find_sample(cfg, args.sample)).format(cfg.rewriter.max_model_len))
    return 0


def cmd_demo_models(args: argparse.Namespace) -> int:
    from pf1m.demo.models import build_all

    for name, path in build_all(args.out, args.seed).items():
        print(f"{name:<9} {path}")
    return 0


def cmd_flamingo_merge(args: argparse.Namespace) -> int:
    """Load the config's Polite Flamingo files once and write one merged safetensors folder."""
    import torch

    from pf1m.models.flamingo import FlamingoLoadError
    from pf1m.models.flamingo.merge import merge

    rewriter = load_config(args.config, args.overrides).rewriter
    if rewriter.backend != "flamingo":
        raise ConfigError(f"rewriter.backend is {rewriter.backend}: flamingo-merge needs flamingo")
    try:
        out = merge(rewriter.model, rewriter.flamingo, Path(args.to), getattr(torch, args.dtype),
                    args.device)  # fmt: skip
    except FlamingoLoadError as exc:
        raise ConfigError(str(exc)) from None
    print(f"merged Polite Flamingo written to {out}; use it with --set rewriter.model={out} "
          "--set rewriter.flamingo.checkpoints=[] --set rewriter.flamingo.lora=null")  # fmt: skip
    return 0


def demo_model_overrides(models: Path, flamingo: bool = False) -> list[str]:
    """Point the demo preset (or, with `flamingo`, demo-flamingo.yaml) at the models
    `pf1m demo-models DIR` wrote."""
    if flamingo:
        from pf1m.models.flamingo.tiny import tiny_rewriter_fields

        fields = tiny_rewriter_fields(models / "flamingo")
        rewriter = [f"rewriter.model={fields['model']}"]
        block = fields["flamingo"].items()
        rewriter += [f"rewriter.flamingo.{k}={json.dumps(v)}" for k, v in block]
    else:
        rewriter = [f"rewriter.model={models / 'rewriter'}"]
    return [
        *rewriter,
        f"filters.sts.model={models / 'sts'}",
        f"filters.nli.model={models / 'nli'}",
        f"filters.clip_paragraph.model=local-dir:{models / 'clip'}",
        f"filters.reward.model={models / 'reward'}",
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    from pf1m.demo.data import write_shards
    from pf1m.demo.models import build_all

    out = Path(args.out)
    data, models = out / "data", out / "models"
    if not (data / ".complete").exists():
        write_shards(data, args.samples, args.shards, seed=0)
        (data / ".complete").write_text("")
    if not (models / ".complete").exists():
        if not args.verbose:  # transformers' "Writing model shards" bars
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        build_all(models)
        (models / ".complete").write_text("")
    print(f"demo data in {data}, demo models in {models}")
    overrides = [f"input={data}/*.tar", f"output={out / 'run'}", *demo_model_overrides(models)]
    overrides += args.overrides
    cfg = load_config("demo", overrides)
    return execute(cfg, None, args.quiet, demo=True, verbose=args.verbose)


def _export_settings(path: str | None):
    from pf1m.schemas.export import load_export_config

    return load_export_config(path or CONFIGS / "export.yaml")


def cmd_export(args: argparse.Namespace) -> int:
    from pf1m.export.job import MultiTurnRequest, export_run

    request = None
    if args.multi_turn is not None:
        if not args.tokenizer or args.image_tokens is None:
            raise ConfigError("--multi-turn needs --tokenizer and --image-tokens to count tokens")
        request = MultiTurnRequest(
            args.multi_turn, args.tokenizer, args.image_tokens, args.max_tokens, args.seed
        )
    settings = _export_settings(args.config)
    m = export_run(args.out, args.format, args.to, settings, args.shard_size, request)
    print(
        f"exported {m.samples} samples as {m.records} {m.format} records, {m.images} images, "
        f"{len(m.files)} files, from run {m.source_run_id} (config {m.source_config_hash}) "
        f"to {args.to}"
    )
    if m.multi_turn is not None:
        print(f"conversations {m.multi_turn.conversations}, over budget {m.multi_turn.over_budget}")
    for problem in m.problems:
        print(f"PROBLEM (shard left out): {problem}")
    if not m.complete:
        print(f"NOTE: {len(m.shards)} shards exported; the run is incomplete or had problems")
    return int(ExitCode.OK if m.complete else ExitCode.PARTIAL)


def cmd_import_pf1m(args: argparse.Namespace) -> int:
    from pf1m.export.importer import import_pf1m

    r = import_pf1m(args.json, args.images, args.to, _export_settings(args.config), args.shard_size)
    kind = "released PF-1M records" if r.released else "pf1m-json export"
    print(
        f"imported {r.rows} rows ({kind}) in {r.shards} committed shards into {r.out}; "
        f"quarantined {r.quarantined}\nnext: pf1m audit {r.out}"
    )
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    from pf1m.export.mixing import mix

    inputs = {}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--input {item!r}: expected NAME=PATH")
        inputs[name] = path
    m = mix(inputs, args.to, _export_settings(args.config).mix, args.seed)
    for name, stage in m.stages.items():
        parts = ", ".join(
            f"{n} {t.taken}/{m.inputs[n].available} ({t.share:.1%} of rows)"
            for n, t in stage.inputs.items()
        )
        print(f"{name}: {stage.rows} rows in {args.to}/{stage.file}: {parts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pf1m", description="Polite Flamingo rewriting pipeline on Ray + vLLM."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        formatter_class=fmt,
        help="run a config",
        epilog="example:\n  pf1m run paper "
        "--set input='/data/coco/{00000..00099}.tar' --set output=/data/out "
        "--max-shards 2 --limit 50\n\n"
        "CONFIG is a YAML file or a shipped preset's name (demo, paper, demo-flamingo, ...).",
    )
    p.add_argument("config", help="YAML file or preset name (paper, demo, ...)")
    _add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "resume",
        formatter_class=fmt,
        help="continue the run in OUT",
        epilog="example:\n  pf1m resume /data/out --set resources.rewriter_replicas=16\n\n"
        "Skips committed shards, removes temporaries, redoes the rest (failed shards too).\n"
        "--set may change resources; a change to anything hashed is refused with a diff.",
    )
    p.add_argument("out", help="the run's output directory (holds run.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=cmd_resume)

    from pf1m.jobs.submit import add_parsers

    add_parsers(sub, fmt, _add_run_args)

    from pf1m.ingest.command import add_parser as add_ingest_parser

    add_ingest_parser(sub, fmt)  # pf1m ingest FORMAT ...: raw datasets -> input shards

    p = sub.add_parser(
        "audit",
        formatter_class=fmt,
        help="verify a run, write stats.json and report/index.html, print the table",
        epilog="examples:\n  pf1m audit /data/out\n"
        "  pf1m audit /data/out --what-if filters.sts.threshold=0.3,0.4,0.5\n\n"
        "Works on a run in progress (committed shards only). Exit 0 clean and complete,\n"
        "3 clean but incomplete, 1 when verification found a problem.",
    )
    p.add_argument("out", help="the run's output directory")
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="kept and unscored counts for each value, from stored scores (no model)",
    )
    p.add_argument("--samples-per-reason", type=int, default=5, help="rows shown per reason")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "refilter",
        formatter_class=fmt,
        help="re-decide every row from stored scores into a new run directory",
        epilog="example:\n  pf1m refilter /data/out --set filters.sts.threshold=0.5 "
        "--to /data/out-sts05",
    )
    p.add_argument("out", help="the run to re-decide (never modified)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--to", required=True, help="the new run directory")
    p.set_defaults(func=cmd_refilter)

    p = sub.add_parser(
        "export",
        formatter_class=fmt,
        help="export a run's kept rows for a trainer (pf1m-json, llava, hf, webdataset)",
        epilog="examples:\n  pf1m export /data/out --format hf --to /data/pf1m-hf\n"
        "  pf1m export /data/out --format llava --to /data/pf1m-llava --multi-turn 4 \\\n"
        "      --tokenizer lmsys/vicuna-7b-v1.5 --image-tokens 576\n\n"
        "Only committed shards that pass the audit's verification are exported; DEST/export.json\n"
        "(written last) names the source run and config hash. Exit 3 when shards were left out.",
    )
    p.add_argument("out", help="the run's output directory (never modified)")
    p.add_argument("--format", required=True, choices=["pf1m-json", "llava", "hf", "webdataset"])
    p.add_argument("--to", required=True, help="the export folder (new or empty)")
    p.add_argument("--shard-size", type=int, default=None, help="records per output file")
    p.add_argument(
        "--multi-turn",
        type=int,
        default=None,
        metavar="K",
        help="pack up to K random samples into one conversation under a token budget",
    )
    p.add_argument("--tokenizer", default=None, help="hub id or path that counts tokens")
    p.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        metavar="N",
        help="tokens each image costs in the trainer's context",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="token budget of a conversation (default: pf1m/configs/export.yaml)",
    )
    p.add_argument("--seed", type=int, default=None, help="packing seed (default: config)")
    p.add_argument("--config", default=None, help="export settings (default: the export preset)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import-pf1m",
        formatter_class=fmt,
        help="released PF-1M JSON (or a pf1m-json export) into a committed run directory",
        epilog="examples:\n  pf1m import-pf1m PF-1M.json --images /data/pf1m-images "
        "--to /data/pf1m-run\n"
        "  pf1m import-pf1m /data/pf1m-json-export --images /data/pf1m-json-export "
        "--to /data/back\n\nThen `pf1m audit` and `pf1m refilter` work on it. See the README for\n"
        "how uid, source and task of released records are derived.",
    )
    p.add_argument("json", help="a JSON array or JSON lines file, or a pf1m-json export folder")
    p.add_argument("--images", required=True, help="root the <img_path> paths resolve under")
    p.add_argument("--to", required=True, help="the new run directory")
    p.add_argument("--shard-size", type=int, default=None, help="records per committed shard")
    p.add_argument("--config", default=None, help="export settings (default: the export preset)")
    p.set_defaults(func=cmd_import_pf1m)

    p = sub.add_parser(
        "mix",
        formatter_class=fmt,
        help="stage manifests for the U-shaped schedule (text + LLaVA + 10%% PF-1M; all PF-1M)",
        epilog="example:\n  pf1m mix --input pf1m=/data/pf1m-llava --input llava=llava_v1_5.json "
        "\\\n      --input text=ultrachat.jsonl --seed 0 --to /data/mix\n\n"
        "Writes STAGE.jsonl ({input, file, index, id} per row) and mix.json; stages and\n"
        "fractions come from pf1m/configs/export.yaml (mix).",
    )
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a named input: JSON array, JSON lines, or an export folder",
    )
    p.add_argument("--to", required=True, help="folder for the stage files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="export settings (default: the export preset)")
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="demo data + tiny models + a local run",
        epilog="example:\n  pf1m demo --out demo_out",
    )
    p.add_argument("--out", default="demo_out")
    p.add_argument("--samples", type=int, default=140)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "demo-data",
        formatter_class=fmt,
        help="write deterministic demo shards",
        epilog="example:\n  pf1m demo-data demo_out/data --samples 140 --shards 4 --seed 0",
    )
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=140)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser(
        "prompt",
        formatter_class=fmt,
        help="print the exact prompt and image placement for one sample (processor only)",
        epilog="example:\n  pf1m prompt pf1m/configs/zero-shot-qwen2.5-vl.yaml "
        "--sample /data/shards/00000.tar:sample000003\n"
        "  (SHARD is a tar path or URL, or the name of an input shard of the config)",
    )
    p.add_argument("config", help="YAML config (see pf1m/configs/)")
    p.add_argument("--sample", required=True, metavar="SHARD:KEY")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_prompt)

    p = sub.add_parser(
        "demo-models",
        formatter_class=fmt,
        help="build tiny random-weight models",
        epilog="example:\n  pf1m demo-models demo_out/models",
    )
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_models)

    p = sub.add_parser(
        "flamingo-merge",
        formatter_class=fmt,
        help="merge a Polite Flamingo's files and LoRA into one safetensors folder",
        epilog="example:\n  pf1m flamingo-merge paper --to /models/polite-flamingo-gen2-merged\n"
        "  pf1m run paper --set rewriter.model=/models/polite-flamingo-gen2-merged "
        "--set rewriter.flamingo.checkpoints=[] --set rewriter.flamingo.lora=null ...\n\n"
        "Reads rewriter.model and rewriter.flamingo of CONFIG (a YAML file or preset name).",
    )
    p.add_argument("config", help="YAML file or preset name whose rewriter is a flamingo")
    p.add_argument("--to", required=True, help="new (or empty) folder for the merged model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="dtype of the written weights (the LoRA is merged in float32)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="where to merge, e.g. cuda (float32 9B: ~40 GB)")
    p.set_defaults(func=cmd_flamingo_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "submit", False):
            from pf1m.jobs.submit import cmd_submit

            return cmd_submit(args, _overrides(args))
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
