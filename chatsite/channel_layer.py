"""The channel layers: in-process by default, Redis pub/sub when scaling out.

Channels' InMemoryChannelLayer sweeps every channel and group for expired
entries on every receive, deep-copies every message it sends, makes a task per
group member on every group send and a queue it throws away on every receive.
With a hundred streaming sockets that was most of the relay's CPU time. Here
the sweep runs at most once a second, messages are copied shallowly (ours are
flat dicts of strings and numbers that nobody mutates after sending), and
group sends go straight into the members' queues.

On Redis, the pub/sub layer (channels_redis.pubsub): one PUBLISH per event, and
each process subscribes once per group it has members in, fanning out locally.
The core Redis layer stores each message in a sorted set per process and pops
them one round trip at a time; under a hundred streams its reads timed out and
sockets closed with 1011. Pub/sub delivers at most once, which the deltas'
sequence numbers and snapshots already make safe (chat.live.follower).
"""

import asyncio
import time
import uuid

import channels_redis.pubsub
import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from django.conf import settings

SWEEP_SECONDS = 1.0
ORIGIN_BYTES = 16  # the mark on each message a shard publishes to Redis


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    _swept_at = 0.0

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self._put(channel, message)

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.channels.get(channel)
        if queue is None:
            self.require_valid_channel_name(channel)
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    def _put(self, channel: str, message: dict):
        queue = self._queue(channel)
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel):
        """Channels' receive, without building a new queue for every message."""
        self._clean_expired()
        _, message = await self._queue(channel).get()
        return message

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_SECONDS:
            self._swept_at = now
            super()._clean_expired()
            # A closed socket's channel leaves nothing behind. (Channels drops a queue
            # whenever a receive empties it, and so builds a new one per message.)
            for channel, queue in list(self.channels.items()):
                if queue.empty() and not queue._getters:  # nobody is waiting on it
                    del self.channels[channel]

    async def group_send(self, group, message):
        """Straight into each member's queue: no task per member, as Channels makes."""
        assert isinstance(message, dict), "message is not a dict"
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                self._put(channel, message)
            except ChannelFull:
                pass  # as Channels does: a full socket misses it, and resyncs on the gap


class _Shard(channels_redis.pubsub.RedisSingleShardConnection):
    """One Redis server: a bounded pool, publishes and subscriptions sent together.

    The stock shard publishes one message at a time under a lock, each waiting for
    its reply: once the event loop ran late, that capped how many deltas a second
    the whole process could publish. Here every publish made in one turn of the
    event loop goes out in one pipeline (one write, one round trip), and
    pipelines share a pool of at most REDIS_POOL_SIZE connections. Each publish
    still waits for its own reply, and fails if its pipeline fails.

    A message for channels or groups with members in this process reaches them
    at once, without the round trip through Redis; its copy from Redis, marked
    with this shard's origin, is then dropped here and delivered everywhere else.
    A reply and the sockets of the tab that asked for it are usually in the same
    process, so most deltas no longer wait on Redis at all.
    """

    _pending: list | None = None  # publishes of this turn of the loop
    _sending: set | None = None  # pipelines in flight (a task nobody holds may vanish)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._changes: list = []  # (channel, join, future): to send, in the order asked
        self._last: dict = {}  # channel: (join, future) of the latest change asked for it
        self._writer = None  # the task sending them
        self._origin = uuid.uuid4().bytes  # marks what this shard published

    def _receive_message(self, message):
        """From Redis: deliver what another process published; ours is delivered already."""
        if message is None:
            return
        data = message["data"]
        if data[:ORIGIN_BYTES] == self._origin:
            return
        super()._receive_message({**message, "data": data[ORIGIN_BYTES:]})

    def _ensure_redis(self):
        if self._redis is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.host["address"], max_connections=settings.REDIS_POOL_SIZE, timeout=5
            )
            self._redis = aioredis.Redis(connection_pool=pool)
            self._pubsub = self._redis.pubsub()

    async def publish(self, channel, message):
        self._ensure_redis()
        super()._receive_message({"channel": channel, "data": message})  # members here
        message = self._origin + message
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = []
            loop.call_soon(self._send_pending)  # after this turn's other publishes
        sent = loop.create_future()
        self._pending.append((channel, message, sent))
        await sent

    def _send_pending(self):
        batch, self._pending = self._pending, None
        if self._sending is None:
            self._sending = set()
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list):
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, message, _ in batch:
                    pipe.publish(channel, message)
                await pipe.execute()
        except Exception as error:  # every publish in it fails, as it would alone
            for *_, sent in batch:
                if not sent.done():
                    sent.set_exception(error)
            return
        for *_, sent in batch:
            if not sent.done():
                sent.set_result(None)

    async def subscribe(self, channel):
        await self._change(channel, True)

    async def unsubscribe(self, channel):
        await self._change(channel, False)

    async def _change(self, channel: str, join: bool):
        """Join or leave a channel on Redis: changes go out in the order asked, and the
        changes asked while the one before was on its way go out in one command.

        A socket makes three subscriptions and a reply two, each undone at the end.
        UNSUBSCRIBEs went one at a time under the stock shard's lock, each a turn of
        the loop, and joins queued behind them when many replies ended together: at
        200 clients on one process, joins took p99 247-258 ms (max 409), now 185-217
        (max 263); leaves p99 232-244 ms, now 125-150. And a channel joined again
        while its UNSUBSCRIBE waited was taken for joined, then left: that socket
        missed other processes' messages until it re-joined.
        """
        wanted, pending = self._last.get(channel, (channel in self._subscribed_to, None))
        if wanted == join:
            if pending is not None:  # asked already: done when that change is
                await asyncio.shield(pending)
            return
        self._ensure_redis()
        self._ensure_receiver()
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a waiter that left must not log its error
        self._last[channel] = (join, done)
        self._changes.append((channel, join, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_changes())
        await asyncio.shield(done)  # one waiter leaving fails no other

    async def _write_changes(self):
        await asyncio.sleep(0)  # the rest of this turn's asks go in the first command
        while self._changes:
            join, changes = self._changes[0][1], self._changes
            count = next((i for i, c in enumerate(changes) if c[1] != join), len(changes))
            batch, self._changes = self._changes[:count], self._changes[count:]
            channels = [channel for channel, _, _ in batch]
            error = None
            try:
                async with self._lock:
                    if join:
                        await self._pubsub.subscribe(*channels)
                        self._subscribed_to.update(channels)
                    else:
                        await self._pubsub.unsubscribe(*channels)
                        self._subscribed_to.difference_update(channels)
            except Exception as failure:  # every socket waiting on it fails, as alone
                error = failure
            for channel, _, done in batch:
                if self._last.get(channel, (None, None))[1] is done:  # nothing newer asked
                    del self._last[channel]  # Redis's state stands
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

    async def flush(self):
        if self._writer is not None:
            self._writer.cancel()
        for *_, done in self._changes:
            done.cancel()
        self._changes, self._last = [], {}
        await super().flush()


def _retrieved(done: asyncio.Future):
    if not done.cancelled():
        done.exception()


class _LoopLayer(channels_redis.pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shards = [_Shard(shard.host, self) for shard in self._shards]


class RedisPubSubChannelLayer(channels_redis.pubsub.RedisPubSubChannelLayer):
    def _get_layer(self):
        """As channels_redis does it, with our shards (one layer per event loop)."""
        loop = asyncio.get_running_loop()
        if loop not in self._layers:
            self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            channels_redis.pubsub._wrap_close(self, loop)  # closes it with its loop
        return self._layers[loop]
