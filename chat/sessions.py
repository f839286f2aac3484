"""Ending a user's live presence: close their sockets and stop their replies."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import generation, turns


async def end_live_sessions(user_id: int):
    for message_id in await _streaming(user_id):
        await generation.request_stop(message_id)
    await get_channel_layer().group_send(f"user.{user_id}", {"type": "user.disconnect"})


async def _streaming(user_id):
    from chat.db import db_async

    return await db_async(turns.mark_user_streams)(user_id)


def end_live_sessions_sync(user_id: int):
    async_to_sync(end_live_sessions)(user_id)
