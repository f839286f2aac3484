"""chat.live.inbox: a chat socket's two sources, dispatched one message at a time."""

import asyncio

import pytest
from channels.exceptions import StopConsumer

from chat.live.inbox import dispatch_all


def source(items, pause=0.0):
    items = list(items)

    async def receive():
        if not items:
            await asyncio.Event().wait()  # nothing more: wait, as a quiet socket does
        await asyncio.sleep(pause)
        return items.pop(0)

    return receive


async def test_every_message_of_both_sources_is_dispatched_one_at_a_time():
    seen, running = [], 0

    async def dispatch(message):
        nonlocal running
        running += 1
        assert running == 1, "two handlers ran side by side"
        await asyncio.sleep(0.001)
        seen.append(message)
        running -= 1
        if len(seen) == 60:
            raise StopConsumer

    with pytest.raises(StopConsumer):
        await asyncio.wait_for(
            dispatch_all([source(range(30)), source(range(100, 130), 0.0005)], dispatch), 10
        )
    assert sorted(seen) == [*range(30), *range(100, 130)]
    assert [m for m in seen if m < 100] == list(range(30))  # each source keeps its order


async def test_a_failing_source_ends_the_loop_with_its_error_and_the_readers_stop():
    readers_left = []

    async def broken():
        raise ConnectionError("layer gone")

    async def quiet():
        readers_left.append(asyncio.current_task())
        await asyncio.Event().wait()

    async def dispatch(message):
        raise AssertionError("nothing to dispatch")

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(dispatch_all([quiet, broken], dispatch), 5)
    assert readers_left and all(task.done() for task in readers_left)
