"""The local Ray pf1m starts (a run without RAY_ADDRESS, ingest, the benches, this suite): its
workers run at the priority of the command that started it (Ray's default would put them 15
below every other process, and a busy machine would starve the run), and a start that Ray
itself gives up on (its raylet aborts when the node's agent is slow to come up, as on a loaded
machine) is tried again from nothing.

The retry is tested here with a stand-in for `ray.init` that leaves a real process behind and
fails with Ray's message. The real failure (an agent held 40 s by a sitecustomize, Ray's own
abort, then a working second start with one GCS and one raylet) costs ~40 s: it was checked by
hand, not in the suite."""

import os
import subprocess
import sys

import pytest

from pf1m.pipeline.local_ray import with_restarts

RAY_GAVE_UP = (
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)


@pytest.mark.slow
def test_local_ray_workers_run_at_the_drivers_priority(ray_local):
    @ray_local.remote(num_cpus=0.01)
    def niceness() -> int:
        return os.nice(0)

    assert ray_local.get(niceness.remote()) == os.nice(0)


def test_a_start_ray_gave_up_on_is_retried_after_killing_what_it_left(capsys):
    left: list[subprocess.Popen] = []

    def start() -> None:
        if not left:  # the first attempt: a process of the failed start, then Ray's error
            left.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]))
            raise Exception(RAY_GAVE_UP)

    with_restarts(start, attempts=3)
    left[0].wait(timeout=60)  # it sleeps an hour: gone within the bound = killed (and reaped)
    assert "starting it again (2 of 3)" in capsys.readouterr().err


def test_other_errors_are_not_retried_and_the_last_timeout_is_raised():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bad argument")

    with pytest.raises(ValueError):
        with_restarts(broken, attempts=3)
    assert len(calls) == 1

    def never_up() -> None:
        calls.append(1)
        raise Exception(RAY_GAVE_UP)

    calls.clear()
    with pytest.raises(Exception, match="timed out during startup"):
        with_restarts(never_up, attempts=3)
    assert len(calls) == 3
