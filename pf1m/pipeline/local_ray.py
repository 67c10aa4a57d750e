"""The one way pf1m starts a Ray of its own on this machine (a run, ingest, the benches, the
tests): a new local instance (never a `ray start` cluster the machine happens to run), bound
to loopback, without the dashboard, its workers at the priority of the command that started
it, and started again when Ray gives up on its own start-up."""

import os
import sys
from collections.abc import Callable

import psutil
import ray

# Ray 2.60 aborts its raylet when the node's Python agent has not written its port file within
# a fixed 20 s, and then ray.init fails ("The current node timed out during startup"). On a
# loaded machine the agent's imports alone can take that long; the next start usually finds
# them in the page cache. Each attempt starts from nothing (the last one's processes killed).
START_ATTEMPTS = 3
START_TIMED_OUT = "timed out during startup"


def start_local_ray(
    *, log_to_driver: bool = False, runtime_env: dict | None = None, worker_niceness: int = 0
) -> None:
    """Ray lowers its workers' CPU priority by 15 unless told otherwise: below every other
    process on the machine, so any busy neighbour (a build, another job, a browser) starves the
    run, whose work is all in workers (rewriters, scorers, shard tasks). 0 keeps them at the
    driver's priority: `nice pf1m run` lowers the whole run, as a user expects (a run's
    `resources.worker_niceness`)."""

    def start() -> None:
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=log_to_driver,
            runtime_env=runtime_env,
            _system_config={"worker_niceness": worker_niceness},
        )

    with_restarts(start, START_ATTEMPTS)


def ensure_ray(
    *, log_to_driver: bool, runtime_env: dict | None = None, worker_niceness: int = 0
) -> bool:
    """Use the Ray this process already joined, else RAY_ADDRESS's, else start a local one
    (`start_local_ray`). True when this call started it (the caller then shuts it down)."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return False
    start_local_ray(
        log_to_driver=log_to_driver, runtime_env=runtime_env, worker_niceness=worker_niceness
    )
    return True


def with_restarts(start: Callable[[], None], attempts: int) -> None:
    """Run `start`; when it fails with Ray's start-up timeout, kill the processes it left behind
    (this process's children that were not there before) and start again, up to `attempts`."""
    for attempt in range(1, attempts + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            start()
            return
        except Exception as exc:
            if START_TIMED_OUT not in str(exc) or attempt == attempts:
                raise
            kill_new_children(before)
            print(
                f"warning: the local Ray did not come up in time (a busy machine?); "
                f"starting it again ({attempt + 1} of {attempts})",
                file=sys.stderr,
                flush=True,
            )


def kill_new_children(before: set[int]) -> None:
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for proc in new:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(new, timeout=10)
