"""The in-process channel layer keeps Channels' semantics while doing less work."""

import asyncio

import pytest
from redis.asyncio.client import PubSub

from chatsite.channel_layer import InMemoryChannelLayer, RedisPubSubChannelLayer, _Shard
from tests.redis_support import REDIS_SERVER, OwnRedis


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


# --- Redis pub/sub: publishes of one turn of the loop share a pipeline -----------------

needs_redis = pytest.mark.skipif(not REDIS_SERVER, reason="needs the redis-server program")


@pytest.fixture
def own_redis():
    server = OwnRedis().start()
    yield server
    server.kill()


def pipelines_sent(monkeypatch) -> list[int]:
    """The size of every pipeline the Redis layer sends."""
    sizes, original = [], _Shard._send

    async def counting(self, batch):
        sizes.append(len(batch))
        await original(self, batch)

    monkeypatch.setattr(_Shard, "_send", counting)
    return sizes


@needs_redis
async def test_publishes_made_together_share_one_pipeline_and_arrive_in_order(
    own_redis, monkeypatch
):
    sizes = pipelines_sent(monkeypatch)
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    channel = await layer.new_channel()
    await layer.group_add("deltas", channel)

    await asyncio.gather(*(layer.group_send("deltas", {"type": "d", "n": n}) for n in range(50)))
    assert sizes == [50]  # one write and one round trip, not fifty
    received = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(50)]
    assert received == list(range(50))

    await layer.group_send("deltas", {"type": "d", "n": 50})  # alone: a pipeline of one
    assert sizes == [50, 1]
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 50
    await layer.flush()


@needs_redis
async def test_every_publish_of_a_failed_pipeline_fails(own_redis):
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    await layer.group_send("deltas", {"type": "d"})  # connected
    own_redis.kill()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(layer.group_send("deltas", {"type": "d", "n": n}) for n in range(3)),
            return_exceptions=True,
        ),
        10,
    )
    assert all(isinstance(result, Exception) for result in results), results
    await layer.flush()


def commands_sent(monkeypatch, command: str) -> list[int]:
    """How many channels every SUBSCRIBE (or UNSUBSCRIBE) the Redis layer sends carries."""
    batches, original = [], getattr(PubSub, command)

    async def counting(self, *channels):
        batches.append(len(channels))
        await original(self, *channels)

    monkeypatch.setattr(PubSub, command, counting)
    return batches


def subscribes_sent(monkeypatch) -> list[int]:
    return commands_sent(monkeypatch, "subscribe")


@needs_redis
async def test_subscriptions_made_together_are_one_subscribe_and_all_receive(
    own_redis, monkeypatch
):
    batches = subscribes_sent(monkeypatch)
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(20)))
    await asyncio.gather(*(layer.group_add(f"room-{n % 5}", c) for n, c in enumerate(channels)))
    assert batches == [20, 5]  # twenty sockets' channels, then their five groups
    await layer.group_send("room-3", {"type": "d"})
    members = [c for n, c in enumerate(channels) if n % 5 == 3]
    for channel in members:
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "d"

    for channel in members:  # the group empties: unsubscribed; joined again: subscribed again
        await layer.group_discard("room-3", channel)
    await layer.group_add("room-3", members[0])
    await layer.group_send("room-3", {"type": "again"})
    assert (await asyncio.wait_for(layer.receive(members[0]), 5))["type"] == "again"
    await layer.flush()


@needs_redis
async def test_every_subscription_of_a_failed_subscribe_fails(own_redis, monkeypatch):
    """redis-py queues a SUBSCRIBE on a dropped connection and sends it on reconnecting;
    a SUBSCRIBE that does raise fails every socket that was waiting on it."""
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    await layer.new_channel()  # connected
    shard = layer._get_layer()._shards[0]

    async def refused(*channels):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(shard._pubsub, "subscribe", refused)
    results = await asyncio.wait_for(
        asyncio.gather(*(layer.new_channel() for _ in range(3)), return_exceptions=True), 5
    )
    assert [type(result) for result in results] == [ConnectionError] * 3
    monkeypatch.undo()
    assert await layer.new_channel()  # the next one goes through
    await layer.flush()


@needs_redis
async def test_subscriptions_asked_while_one_is_on_its_way_go_out_together_next(
    own_redis, monkeypatch
):
    batches = subscribes_sent(monkeypatch)
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    channel = await layer.new_channel()
    shard = layer._get_layer()._shards[0]
    batches.clear()
    async with shard._lock:  # a SUBSCRIBE on its way, slow to answer
        one = asyncio.ensure_future(layer.group_add("slow", channel))
        await asyncio.sleep(0.01)
        later = []
        for n in range(10):  # each in its own turn of the loop
            later.append(asyncio.ensure_future(layer.group_add(f"room-{n}", channel)))
            await asyncio.sleep(0.001)
    await asyncio.wait_for(asyncio.gather(one, *later), 5)
    assert batches == [1, 10]
    await layer.flush()


@needs_redis
async def test_channels_left_together_are_one_unsubscribe_and_a_join_is_not_held_behind_them(
    own_redis, monkeypatch
):
    left = commands_sent(monkeypatch, "unsubscribe")
    joined = subscribes_sent(monkeypatch)
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(30)))
    await asyncio.gather(*(layer.group_add(f"reply-{n}", c) for n, c in enumerate(channels)))
    joined.clear()
    # Thirty replies end at once while a socket opens: two commands, not thirty-one.
    leaving = [layer.group_discard(f"reply-{n}", c) for n, c in enumerate(channels)]
    opening = layer.group_add("conversation", channels[0])
    await asyncio.wait_for(asyncio.gather(*leaving, opening), 5)
    assert (left, joined) == ([30], [1])
    await layer.group_send("conversation", {"type": "d"})
    assert (await asyncio.wait_for(layer.receive(channels[0]), 5))["type"] == "d"
    await layer.flush()


@needs_redis
async def test_a_group_joined_again_while_its_unsubscribe_waits_stays_joined(own_redis):
    """A tab reloads: the old socket leaves the conversation's group as the new one
    joins it. The join must not be taken as done, then undone by the leave."""
    here, there = (RedisPubSubChannelLayer(hosts=[own_redis.url]) for _ in range(2))
    old, new = await here.new_channel(), await here.new_channel()
    await here.group_add("conversation", old)
    shard = here._get_layer()._shards[0]
    async with shard._lock:  # Redis slow to take the UNSUBSCRIBE
        leaving = asyncio.ensure_future(here.group_discard("conversation", old))
        await asyncio.sleep(0.01)
        joining = asyncio.ensure_future(here.group_add("conversation", new))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(leaving, joining), 5)
    await there.group_send("conversation", {"type": "from another process"})
    received = await asyncio.wait_for(here.receive(new), 5)
    assert received["type"] == "from another process"
    await here.flush()
    await there.flush()


@needs_redis
async def test_members_here_get_a_message_at_once_and_other_processes_get_it_once(own_redis):
    """Two layers stand for two processes: each member receives every message once."""
    here, there = (RedisPubSubChannelLayer(hosts=[own_redis.url]) for _ in range(2))
    local, remote = await here.new_channel(), await there.new_channel()
    await here.group_add("conversation", local)
    await there.group_add("conversation", remote)

    await here.group_send("conversation", {"type": "d", "n": 1})
    assert here._get_layer().channels[local].qsize() == 1  # delivered here, once
    await there.group_send("conversation", {"type": "d", "n": 2})
    for layer, channel in ((here, local), (there, remote)):
        received = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(2)]
        assert sorted(received) == [1, 2]
    await asyncio.sleep(0.2)  # any duplicate from Redis would have arrived by now
    assert here._get_layer().channels[local].qsize() == 0
    assert there._get_layer().channels[remote].qsize() == 0

    await here.send(remote, {"type": "direct"})  # a specific channel in another process
    assert (await asyncio.wait_for(there.receive(remote), 5))["type"] == "direct"
    await here.flush()
    await there.flush()
