"""Generation jobs' control channel: stop and snapshot commands, from any process.

Every process listens on one group (chat.live.events.JOBS_GROUP) from its start
(chat.live.runtime). A command names its reply: the process running that reply
obeys it, the others ignore it. "stop" cancels the stream (closing the
upstream connection); "snapshot" asks for the reply as published so far, sent
back to the asking socket's channel. A socket in another process, or one that
joins mid-reply, reaches a job only this way.

Each reply used to join a group of its own. On Redis that was two
subscriptions when it started and two unsubscriptions when it ended, made just
when a hundred replies end and start together, and queued with the
subscriptions of the sockets opening then. Commands are rare (a user's stop, a
socket's resync), so sending each to every process costs far less.
"""

import asyncio
import logging

from channels.layers import get_channel_layer

from chat.live import events

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.5
# Joined again now and then: the in-memory layer forgets a member after its
# group_expiry (a day), and this membership lasts as long as the process.
REJOIN_SECONDS = 3600.0


async def listen_forever(running: dict):
    """Obey the commands for the replies of `running` (chat.live.jobs.JOBS) that run
    on this event loop, until cancelled."""
    layer, loop = get_channel_layer(), asyncio.get_running_loop()
    channel, joined_at = None, None
    while True:
        try:
            if joined_at is None or loop.time() - joined_at >= REJOIN_SECONDS:
                channel = channel or await layer.new_channel()
                await layer.group_add(events.JOBS_GROUP, channel)
                joined_at = loop.time()
            async with asyncio.timeout(REJOIN_SECONDS):
                message = await layer.receive(channel)
        except TimeoutError:
            continue
        except Exception:
            # The channel layer is restarting: keep trying, unless we are being
            # cancelled (a layer may turn the cancellation into its own error).
            if asyncio.current_task().cancelling():
                raise asyncio.CancelledError from None
            await asyncio.sleep(RETRY_SECONDS)
            continue
        job = running.get(events.commanded_reply(message))
        if job is not None and job.task is not None and job.task.get_loop() is loop:
            try:
                await _obey(job, message)
            except Exception:  # one reply's bad state must not deafen the process
                log.exception("command for reply %s failed", job.message_id)


async def _obey(job, message: dict):
    if events.is_stop(message):
        job.stop()
    elif events.is_snapshot_request(message):
        frames = job.snapshot_frames()
        await events.send_snapshot(message["reply_to"], job.message_id, job.seq, frames)
