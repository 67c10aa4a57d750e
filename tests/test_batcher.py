"""Micro-batching: items from concurrent calls share batches; a failure hits its culprit only."""

import asyncio

from pf1m.actors.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_batches():
    seen: list[int] = []

    def fn(items):
        seen.append(len(items))
        return [x * 2 for x in items]

    async def main():
        batcher = MicroBatcher(fn, batch_size=8, max_wait_s=0.05)
        return await asyncio.gather(*(batcher.submit(i) for i in range(20))), batcher

    results, batcher = run(main())
    assert results == [i * 2 for i in range(20)]
    assert seen == [8, 8, 4] and (batcher.batches, batcher.items) == (3, 20)


def test_failing_batch_is_retried_item_by_item():
    def fn(items):
        if 13 in items:
            raise ValueError("bad item 13")
        return [x + 1 for x in items]

    async def main():
        batcher = MicroBatcher(fn, batch_size=16, max_wait_s=0.05)
        return await asyncio.gather(*(batcher.submit(i) for i in range(16)), return_exceptions=True)

    results = run(main())
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [i + 1 for i in range(16) if i != 13]


def test_wrong_result_count_is_an_error():
    async def main():
        batcher = MicroBatcher(lambda items: [], batch_size=4, max_wait_s=0.0)
        return await asyncio.gather(batcher.submit(1), return_exceptions=True)

    assert isinstance(run(main())[0], RuntimeError)


def test_batcher_follows_a_new_event_loop():
    batcher = MicroBatcher(lambda items: items, batch_size=4, max_wait_s=0.0)
    assert run(batcher.submit(1)) == 1
    assert run(batcher.submit(2)) == 2
