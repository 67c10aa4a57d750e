"""The progress line: shards done/total, samples/s, rewriter busy fraction, ETA (pure)."""

from dataclasses import dataclass

from pf1m.schemas.rewrite import BusyStats


def busy_fraction(
    stats: list[BusyStats], since: list[BusyStats] | None = None
) -> tuple[float | None, float | None]:
    """(share of wall time with >= 1 request inside, mean requests inside / max sequences) over
    all replicas, from `since` (a snapshot taken when the work started) or each one's first
    request, to its last completed request (or now while requests are inside): time after a
    replica's last request is not time it was starved of work.
    """
    wall = busy = occupancy = 0.0
    for i, s in enumerate(stats):
        base = since[i] if since else None
        start = base.now if base else s.first_request_at
        if start is None:
            continue
        end = s.now if s.running or s.last_done_at is None else s.last_done_at
        wall += max(end - start, 0.0)
        busy += s.busy_s - (base.busy_s if base else 0.0)
        running = s.running_integral - (base.running_integral if base else 0.0)
        occupancy += running / s.max_num_seqs
    if wall <= 0:
        return None, None
    return min(busy / wall, 1.0), occupancy / wall


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class Progress:
    total_shards: int
    done_shards: int = 0
    failed_shards: int = 0
    samples: int = 0

    def line(self, elapsed_s: float, todo_shards: int, busy: float | None) -> str:
        rate = self.samples / elapsed_s if elapsed_s > 0 else 0.0
        finished = self.done_shards + self.failed_shards
        left = self.total_shards - finished
        processed = todo_shards - left
        eta = "?" if processed <= 0 else _duration(elapsed_s / processed * left)
        parts = [
            f"shards {self.done_shards}/{self.total_shards}",
            f"failed {self.failed_shards}" if self.failed_shards else "",
            f"{rate:.1f} samples/s",
            f"rewriter busy {busy:.0%}" if busy is not None else "rewriter busy -",
            f"ETA {eta}",
        ]
        return " | ".join(p for p in parts if p)
