"""The one way pf1m starts a Ray of its own on this machine (a run, ingest, the benches, the
tests): a new local instance (never a `ray start` cluster the machine happens to run), bound
to loopback, without the dashboard, its workers at the priority of the command that started
it."""

import ray


def start_local_ray(
    *, log_to_driver: bool = False, runtime_env: dict | None = None, worker_niceness: int = 0
) -> None:
    """Ray lowers its workers' CPU priority by 15 unless told otherwise: below every other
    process on the machine, so any busy neighbour (a build, another job, a browser) starves the
    run, whose work is all in workers (rewriters, scorers, shard tasks). 0 keeps them at the
    driver's priority: `nice pf1m run` lowers the whole run, as a user expects (a run's
    `resources.worker_niceness`)."""
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=log_to_driver,
        runtime_env=runtime_env,
        _system_config={"worker_niceness": worker_niceness},
    )
