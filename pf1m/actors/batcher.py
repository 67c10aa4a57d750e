"""Micro-batching inside an async actor: items from many concurrent calls (many shards) are
gathered into one model batch, up to `batch_size` or until `max_wait_s` has passed.

The model runs in one worker thread so the event loop keeps accepting calls. A batch that
raises is retried item by item, so only the culprit gets an error.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    def __init__(self, fn: Callable[[list], list], batch_size: int, max_wait_s: float) -> None:
        self.fn = fn
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.executor = ThreadPoolExecutor(max_workers=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Any) -> Any:
        """The item's result, or the exception raised on it alone."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop: queue and worker with it
            self._loop, self.queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        future = loop.create_future()
        await self.queue.put((item, future))
        return await future

    def close(self) -> None:
        """Stop taking batches; a batch already running finishes in its thread."""
        if self._loop is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _collect(self) -> list:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout=left))
            except TimeoutError:
                break
        return batch

    def _call(self, items: list) -> list:
        try:
            out = self.fn(items)
            if len(out) != len(items):
                raise RuntimeError(f"scorer returned {len(out)} results for {len(items)} items")
            return out
        except Exception:
            if len(items) == 1:
                raise
        results = []
        for item in items:  # the batch failed: find the culprit(s)
            try:
                results.append(self.fn([item])[0])
            except Exception as exc:
                results.append(exc)
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self._call, items)
            except Exception as exc:
                results = [exc] * len(items)
            self.batches += 1
            self.items += len(items)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
