"""A generation job's control channel: stop and snapshot commands, from any process.

Each job joins its own group (chat.live.events.job_group). A socket in another
process, or one that joins mid-reply, reaches the job only through it: "stop"
cancels the stream (closing the upstream connection), "snapshot" asks for the
reply as published so far, sent back to the asking socket's channel.
"""

import asyncio
from contextlib import suppress

from channels.layers import get_channel_layer

from chat.live import events

RETRY_SECONDS = 0.5


async def listen(job):
    """Until the reply ends. The job runs meanwhile: joining the group may wait (on
    Redis, behind everyone else's subscriptions), the upstream request must not."""
    layer, group = get_channel_layer(), events.job_group(job.message_id)
    channel, joined = None, False
    try:
        while not job.done:
            try:
                if not joined:
                    channel = channel or await layer.new_channel()
                    await layer.group_add(group, channel)
                    joined = True
                message = await layer.receive(channel)
            except Exception:
                # The channel layer is restarting: keep trying, unless we are being
                # cancelled (a layer may turn the cancellation into its own error).
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(RETRY_SECONDS)
                continue
            await _obey(job, message)
    finally:
        if joined:
            with suppress(Exception):
                await layer.group_discard(group, channel)


async def _obey(job, message: dict):
    if events.is_stop(message):
        job.stop()
    elif events.is_snapshot_request(message):
        frames = job.snapshot_frames()
        await events.send_snapshot(message["reply_to"], job.message_id, job.seq, frames)
