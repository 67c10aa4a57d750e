"""The progress line: shards done/total, samples/s, rewriter busy fraction, ETA (pure)."""

from dataclasses import dataclass

from schemas.rewrite import BusyStats


def busy_fraction(stats: list[BusyStats]) -> tuple[float | None, float | None]:
    """(share of wall time with >= 1 running request, mean running / max sequences), summed
    over replicas, each measured from its first request."""
    wall = sum(s.now - s.first_request_at for s in stats if s.first_request_at is not None)
    if wall <= 0:
        return None, None
    busy = sum(s.busy_s for s in stats) / wall
    occupancy = sum(s.running_integral / s.max_num_seqs for s in stats) / wall
    return min(busy, 1.0), occupancy


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
