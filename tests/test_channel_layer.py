"""The in-process channel layer keeps Channels' semantics while doing less work."""

import asyncio

from chatsite.channel_layer import InMemoryChannelLayer


async def test_messages_arrive_in_order_as_copies_and_groups_fan_out():
    layer = InMemoryChannelLayer(capacity=10)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("conv", first)
    await layer.group_add("conv", second)
    event = {"type": "gen.delta", "seq": 1, "text": "a"}
    await layer.group_send("conv", event)
    await layer.group_send("conv", {"type": "gen.delta", "seq": 2, "text": "b"})
    event["text"] = "changed after sending"
    for channel in (first, second):
        assert [(await layer.receive(channel))["seq"] for _ in range(2)] == [1, 2]
    await layer.send(first, event)
    received = await layer.receive(first)
    assert received == event and received is not event


async def test_expired_messages_and_their_channels_are_still_swept():
    layer = InMemoryChannelLayer(expiry=60)
    gone, alive = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("conv", gone)
    await layer.send(gone, {"type": "x"})
    queue = layer.channels[gone]._queue
    queue[0] = (0, queue[0][1])  # a message nobody read for longer than the expiry
    await layer.send(alive, {"type": "y"})
    layer._swept_at = 0  # a second has passed since the last sweep
    assert (await layer.receive(alive))["type"] == "y"  # this receive sweeps
    assert gone not in layer.channels and gone not in layer.groups.get("conv", {})


async def test_a_full_member_misses_a_group_message_and_the_others_still_get_it():
    layer = InMemoryChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    for channel in (full, free):
        await layer.group_add("conv", channel)
    await layer.send(full, {"type": "x", "seq": 0})
    await layer.group_send("conv", {"type": "x", "seq": 1})
    assert (await layer.receive(free))["seq"] == 1
    assert (await layer.receive(full))["seq"] == 0
    layer._swept_at = 0  # a second has passed since the last sweep
    layer._clean_expired()
    assert full not in layer.channels  # nobody waits on its emptied queue: gone


async def test_the_sweep_keeps_the_queue_of_a_socket_that_is_waiting():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)  # it now waits on its queue
    layer._swept_at = 0
    layer._clean_expired()
    await layer.send(channel, {"type": "x"})
    assert (await asyncio.wait_for(waiting, 1))["type"] == "x"
