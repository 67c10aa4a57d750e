"""Named fault points for fault-injection tests: inactive unless an environment variable asks.

`PF1M_FAULT_SCORE=TEXT` makes a scorer batch raise `InjectedFault` when any of its items
contains TEXT, which exercises the batch -> per-item retry and the quarantine of the culprit.
"""

import os


class InjectedFault(RuntimeError):
    """Raised only by a fault point that a test switched on."""


def check(point: str, items: list) -> None:
    needle = os.environ.get(f"PF1M_FAULT_{point.upper()}")
    if needle and any(needle in repr(item) for item in items):
        raise InjectedFault(f"fault point {point!r} triggered by {needle!r}")
