"""The local Ray pf1m starts (a run without RAY_ADDRESS, ingest, the benches, this suite) runs
its workers at the priority of the command that started it: Ray's default would put them 15
below every other process, and a busy machine would starve the run."""

import os

import pytest

pytestmark = pytest.mark.slow


def test_local_ray_workers_run_at_the_drivers_priority(ray_local):
    @ray_local.remote(num_cpus=0.01)
    def niceness() -> int:
        return os.nice(0)

    assert ray_local.get(niceness.remote()) == os.nice(0)
