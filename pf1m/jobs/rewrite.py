"""The rewrite job for `ray job submit`: `python -m pf1m.jobs.rewrite --config CONFIG [--set ...]`.

Same job as `pf1m run`; inside a Ray job RAY_ADDRESS is set, so it joins that cluster.
"""

import argparse
import json
import os
import sys

from pf1m.jobs.cli import _add_run_args, _overrides, execute
from pf1m.jobs.submit import CONFIG_ENV
from pf1m.schemas.config import ConfigError, apply_overrides, load_config, validate_config
from pf1m.schemas.run import ExitCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pf1m.jobs.rewrite",
        description="Run the rewrite pipeline (for ray job submit).",
        epilog=(
            "example:\n  ray job submit --working-dir . -- "
            "python -m pf1m.jobs.rewrite --config pf1m/configs/demo.yaml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config (see pf1m/configs/)")
    source.add_argument(
        "--config-from-env",
        action="store_true",
        help=f"the resolved config in ${CONFIG_ENV} (what `pf1m submit` sends)",
    )
    _add_run_args(parser)
    args = parser.parse_args(argv)
    try:
        if args.config_from_env:
            data = json.loads(os.environ[CONFIG_ENV])
            origins = apply_overrides(data, _overrides(args))
            cfg = validate_config(data, f"${CONFIG_ENV}", origins)
        else:
            cfg = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_CONFIG)
    return execute(cfg, args.max_shards, args.quiet, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
