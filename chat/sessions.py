"""Ending a user's live presence: close their sockets and stop their replies."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import generation, turns
from chat.db import db_async


async def end_live_sessions(user_id: int):
    for message_id in await db_async(turns.user_streaming_ids)(user_id):
        await generation.request_stop(message_id)
    await get_channel_layer().group_send(f"user.{user_id}", {"type": "user.disconnect"})


def end_live_sessions_sync(user_id: int):
    async_to_sync(end_live_sessions)(user_id)
