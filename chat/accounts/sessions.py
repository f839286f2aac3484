"""Ending a person's live presence: stop their replies and close their sockets,
in every process on the shared channel layer."""

from asgiref.sync import async_to_sync

from chat import ownership
from chat.db import db_async
from chat.live import events


async def end_live_sessions(user_id: int):
    for message_id in await db_async(ownership.user_streaming_ids)(user_id):
        await events.stop_job(message_id)
    await events.disconnect_user(user_id)


def end_live_sessions_sync(user_id: int):
    async_to_sync(end_live_sessions)(user_id)
