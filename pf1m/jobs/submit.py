"""`pf1m submit|status|logs|stop`: the run as a Ray job, through the Job Submission API.

`submit` resolves the config here (presets, `--set`, relative paths made absolute), ships it
in the job's environment (`PF1M_CONFIG_JSON`) with this project as the working_dir (without
its environment and data: `job.excludes`), and starts `python -m pf1m.jobs.rewrite
--config-from-env` on the cluster. The address is `--address`, else RAY_API_SERVER_ADDRESS or
RAY_ADDRESS, as for `ray job`.
"""

import argparse
import asyncio
import functools
import json
import os
import sys
import uuid
from pathlib import Path

from pf1m.schemas.config import load_config
from pf1m.schemas.run import ExitCode

ROOT = Path(__file__).resolve().parents[2]
# A source checkout is shipped as the job's working_dir. An installed pf1m (a wheel: ROOT is
# site-packages) is not uploaded: every node runs this project's environment already (README,
# "Running on a cluster", step 1).
CHECKOUT = (ROOT / "pyproject.toml").is_file()
CONFIG_ENV = "PF1M_CONFIG_JSON"


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _job_api(command):
    """The Job API's failures (cluster unreachable, unknown job id, call refused) as one line
    and exit 1, not Ray's traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, *rest) -> int:
        try:
            return command(args, *rest)
        except (ConnectionError, RuntimeError) as exc:
            env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
            where = args.address or env or "no address (--address, RAY_ADDRESS)"
            print(f"error: Ray Job API at {where}: {exc}", file=sys.stderr)
            if isinstance(exc, ConnectionError):
                print(
                    "  is the head node up, and its dashboard port (8265 by default) reachable "
                    "from here? `--address http://HEAD:8265` names it",
                    file=sys.stderr,
                )
            return int(ExitCode.ERROR)

    return run


@_job_api
def cmd_submit(args: argparse.Namespace, overrides: list[str]) -> int:
    from pf1m.pipeline.driver import absolutize

    cfg = absolutize(load_config(args.config, overrides))
    env = dict(cfg.job.runtime_env)
    env_vars = {**env.pop("env_vars", {}), CONFIG_ENV: json.dumps(cfg.model_dump(mode="json"))}
    runtime_env = {**env, "env_vars": env_vars}
    if CHECKOUT:
        excludes = [*cfg.job.excludes, *env.pop("excludes", [])]
        runtime_env.update(working_dir=str(ROOT), excludes=excludes)
    entrypoint = "python -m pf1m.jobs.rewrite --config-from-env"
    if args.max_shards is not None:
        entrypoint += f" --max-shards {args.max_shards}"
    if args.quiet:
        entrypoint += " --quiet"
    if args.verbose:
        entrypoint += " --verbose"
    job_id = _client(args.address).submit_job(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        submission_id=args.job_id or f"pf1m-{uuid.uuid4().hex[:10]}",
        entrypoint_num_cpus=cfg.job.entrypoint_num_cpus,
        metadata={"pf1m_output": cfg.output},
    )
    where = f" --address {args.address}" if args.address else ""
    print(f"submitted {job_id} (output {cfg.output})")
    print(f"follow:  pf1m logs {job_id}{where} --follow")
    print(f"status:  pf1m status {job_id}{where}")
    print(f"stop:    pf1m stop {job_id}{where}   (resubmit the same config to continue)")
    return 0


@_job_api
def cmd_status(args: argparse.Namespace) -> int:
    from pf1m.pipeline.status import is_run_target, run_status
    from pf1m.schemas.config import ConfigError

    if is_run_target(args.job_id):
        if args.address:
            raise ConfigError(f"--address is for Ray job ids; {args.job_id} is a run directory")
        print("\n".join(run_status(args.job_id)))
        return 0
    info = _client(args.address).get_job_info(args.job_id)
    print(f"{args.job_id}: {info.status}")
    if info.message:
        print(info.message)
    if info.metadata.get("pf1m_output"):
        print(f"output: {info.metadata['pf1m_output']}")
    return 0


@_job_api
def cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args.address)
    if not args.follow:
        print(client.get_job_logs(args.job_id), end="")
        return 0

    async def follow() -> None:
        async for chunk in client.tail_job_logs(args.job_id):
            print(chunk, end="", flush=True)

    asyncio.run(follow())
    return 0


@_job_api
def cmd_stop(args: argparse.Namespace) -> int:
    stopped = _client(args.address).stop_job(args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
    return 0


def add_parsers(sub, fmt, run_args) -> None:
    """Register submit, status, logs and stop on the `pf1m` parser."""
    address = dict(
        default=None,
        help="Ray dashboard address, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS "
        "or RAY_ADDRESS)",
    )
    p = sub.add_parser(
        "submit",
        formatter_class=fmt,
        help="submit a config as a Ray job",
        epilog="example:\n  pf1m submit paper --address http://head:8265 "
        "--set input='s3://bucket/raw/{00000..00999}.tar' --set output=s3://bucket/pf1m",
    )
    p.add_argument("config")
    p.add_argument("--address", **address)
    p.add_argument("--job-id", default=None, help="submission id (default: pf1m-<random>)")
    run_args(p)
    p.set_defaults(func=None, submit=True)
    for name, func, text in (
        ("status", cmd_status, "a submitted job's status"),
        ("logs", cmd_logs, "a submitted job's logs"),
        ("stop", cmd_stop, "stop a submitted job (committed shards stay; resubmit to go on)"),
    ):
        p = sub.add_parser(
            name, formatter_class=fmt, help=text,
            epilog=f"example:\n  pf1m {name} pf1m-0123456789 --address http://head:8265",
        )  # fmt: skip
        if name == "status":
            p.epilog += "\n  pf1m status demo_out/run   # a run directory or URL: no Ray needed"
            p.add_argument(
                "job_id",
                metavar="RUN_OR_JOB",
                help="a run directory or URL (holds run.json), or a Ray job id",
            )
        else:
            p.add_argument("job_id")
        p.add_argument("--address", **address)
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream until the job ends")
        p.set_defaults(func=func)
