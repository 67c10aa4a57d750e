"""The rewrite job for `ray job submit`: `python -m jobs.rewrite --config CONFIG [--set ...]`.

Same job as `pf1m run`; inside a Ray job RAY_ADDRESS is set, so it joins that cluster.
"""

import argparse
import sys

from jobs.cli import _add_run_args, _overrides, execute
from schemas.config import ConfigError, load_config
from schemas.run import ExitCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.rewrite",
        description="Run the rewrite pipeline (for ray job submit).",
        epilog=(
            "example:\n  ray job submit --working-dir . -- "
            "python -m jobs.rewrite --config configs/demo.yaml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True)
    _add_run_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_CONFIG)
    return execute(cfg, args.max_shards, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
