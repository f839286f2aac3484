"""The chat websocket: one per open conversation page.

Thin by design: authenticate, check that the conversation (and every message
id in a command) belongs to the user, dispatch on the `command` field, and
forward HTML fragments that htmx swaps into the page. Replies are produced by
generation jobs (chat.generation) and reach every socket through the
conversation's channel-layer group, so any tab, on any process, sees them.

Re-attach: a socket joins the group first, then asks each running job for a
snapshot (text so far and its sequence number); deltas that arrive meanwhile
wait, and those already covered by the snapshot are dropped. No gap, no
duplicate.
"""

import asyncio
import json
import logging

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from chat import generation, recovery, turns
from chat.db import db_async
from chat.models import Message

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_DEACTIVATED = 4403
SNAPSHOT_WAIT_SECONDS = 3.0
NO_MORE_DELTAS = float("inf")  # after a snapshot from the database: wait for the final message


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _render(template: str, **context) -> str:
    return render_to_string(f"chat/ws/{template}.html", context)


@db_async
def _run(command, *args):
    """Run a turns command and render what it changed, off the event loop."""
    return command(*args)


@db_async
def _render_messages(messages: list[Message]) -> str:
    last_id = messages[-1].pk if messages else None
    return _render("append", messages=messages, last_id=last_id)


@db_async
def _db_snapshot(message_id: int) -> Message | None:
    return Message.objects.filter(pk=message_id).first()


class ChatConsumer(AsyncJsonWebsocketConsumer):
    conversation = None

    async def dispatch(self, message):
        """Channels' dispatch, minus its stale-connection cleanup before every event.

        That cleanup is a hop to a worker thread: once per delta per socket, it was
        most of the relay's CPU. These handlers reach the database only through
        db_async, which does the same cleanup around each call.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.conversation = await _run(turns.owned_conversation, user, conversation_id)
        if self.conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user = user
        self.seen: dict[int, float] = {}  # message id -> last delta seq forwarded
        self.waiting: dict[int, list[dict]] = {}  # deltas held until a snapshot arrives
        self.timers: dict[int, asyncio.Task] = {}
        await self.channel_layer.group_add(self.conversation.group, self.channel_name)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()
        self.keeper = asyncio.create_task(self._keep_membership())
        recovery.ensure_sweeper()
        for message_id in await _run(turns.streaming_ids, self.conversation.pk):
            await self.resync(message_id)

    async def disconnect(self, code):
        if self.conversation is None:
            return
        for timer in [*self.timers.values(), self.keeper]:
            timer.cancel()
        await self.channel_layer.group_discard(self.conversation.group, self.channel_name)
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)

    # --- commands from the browser ---------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > settings.MAX_MESSAGE_CHARS * 2 + 4096:
            await self.notice("That message is too large to send.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.notice("That was not a valid command.")
            return
        if not isinstance(content, dict):
            await self.notice("That was not a valid command.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        handler = getattr(self, f"command_{content.get('command')}", None)
        if handler is None:
            await self.notice("Unknown command.")
            return
        try:
            await handler(content)
        except turns.Refused as refusal:
            await self.notice(str(refusal))

    async def command_send(self, content):
        messages, plan = await _run(
            turns.send,
            self.user,
            self.conversation.pk,
            content.get("content"),
            content.get("model"),
        )
        await self.begin(plan, append=messages)

    async def command_continue(self, content):
        await self.command_send({**content, "content": "Continue from where you stopped."})

    async def command_regenerate(self, content):
        removed, reply, plan = await _run(
            turns.regenerate, self.user, self.conversation.pk, content.get("model")
        )
        await self.begin(plan, remove=removed, append=[reply])

    async def command_edit(self, content):
        removed, messages, plan = await _run(
            turns.edit,
            self.user,
            self.conversation.pk,
            content.get("message_id"),
            content.get("content"),
        )
        # The edited question is re-rendered in place of its old self.
        await self.begin(plan, remove=[*removed, messages[0].pk], append=messages)

    async def command_sync(self, content):
        """The page says what it shows (sent on every connect); fill in what it missed."""
        finished, newer = await _run(
            turns.sync_state, self.conversation.pk, content.get("after"), content.get("streaming")
        )
        for message in finished:
            html = await db_async(_render)("replace_message", message=message)
            await self.send(text_data=html)
        if newer:
            await self.send(text_data=await _render_messages(newer))
        for message_id in [int(i) for i in content.get("streaming") or []] + [
            m.pk for m in newer if m.is_streaming
        ]:
            if message_id not in {m.pk for m in finished} and message_id not in self.waiting:
                if await _run(turns.is_streaming, self.conversation.pk, message_id):
                    await self.resync(message_id)

    async def command_stop(self, content):
        message_id = await _run(
            turns.stoppable, self.user, self.conversation.pk, content.get("message_id")
        )
        await generation.request_stop(message_id)

    async def begin(self, plan, remove=(), append=()):
        """Show the change on every tab of this conversation, then start the job."""
        html = _render("remove", ids=remove) if remove else ""
        html += await _render_messages(list(append))
        await self.channel_layer.group_send(
            self.conversation.group, {"type": "thread.html", "html": html}
        )
        generation.start(plan)

    async def notice(self, text: str):
        await self.send(text_data=_render("notice", text=text))

    # --- events from the channel layer ------------------------------------------
    async def thread_html(self, event):
        await self.send(text_data=event["html"])

    async def gen_delta(self, event):
        message_id, seq = event["message_id"], event["seq"]
        if message_id in self.waiting:
            self.waiting[message_id].append(event)
            return
        last = self.seen.get(message_id, 0)
        if seq <= last:
            return  # already covered by a snapshot
        if seq > last + 1:
            await self.resync(message_id)  # a gap: joined mid-reply or lost a frame
            self.waiting[message_id].append(event)
            return
        self.seen[message_id] = seq
        await self.send(text_data=_render("delta", message_id=message_id, text=event["text"]))

    async def gen_snapshot(self, event):
        message_id = event["message_id"]
        if message_id not in self.waiting:
            return
        held = self.waiting.pop(message_id)
        self.timers.pop(message_id).cancel()
        self.seen[message_id] = event["seq"]
        await self.send(text_data=_render("snapshot", message_id=message_id, text=event["text"]))
        for delta in sorted(held, key=lambda d: d["seq"]):
            await self.gen_delta(delta)

    async def gen_done(self, event):
        message_id = event["message_id"]
        self.waiting.pop(message_id, None)
        timer = self.timers.pop(message_id, None)
        if timer:
            timer.cancel()
        self.seen.pop(message_id, None)
        await self.send(text_data=event["html"])

    async def user_disconnect(self, event):
        await self.close(code=CLOSE_DEACTIVATED)

    async def _keep_membership(self):
        """Re-join the groups now and then, and catch up on replies that ended meanwhile.

        A Redis restart forgets group membership and drops events in flight; this
        brings the socket back within SOCKET_REJOIN_SECONDS, and the sequence
        numbers on deltas trigger a snapshot for anything missed.
        """
        while True:
            await asyncio.sleep(settings.SOCKET_REJOIN_SECONDS)
            try:
                await self.channel_layer.group_add(self.conversation.group, self.channel_name)
                await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
            except Exception:
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None
                log.warning("could not re-join groups; will retry")
                continue
            for message_id in [*self.seen, *self.waiting]:
                message = await _db_snapshot(message_id)
                if message is not None and not message.is_streaming:
                    html = await db_async(_render)("replace_message", message=message)
                    await self.gen_done({"message_id": message_id, "html": html})

    # --- re-attach --------------------------------------------------------------
    async def resync(self, message_id: int):
        if message_id in self.waiting:
            return
        self.waiting[message_id] = []
        self.timers[message_id] = asyncio.create_task(self._snapshot_from_db(message_id))
        await generation.request_snapshot(message_id, self.channel_name)

    async def _snapshot_from_db(self, message_id: int):
        """No job answered: it died or is out of reach. Show the saved text instead."""
        await asyncio.sleep(SNAPSHOT_WAIT_SECONDS)
        if self.waiting.pop(message_id, None) is None:
            return
        self.timers.pop(message_id, None)
        message = await _db_snapshot(message_id)
        if message is None:
            return
        if message.is_streaming:
            self.seen[message_id] = NO_MORE_DELTAS
            await self.send(
                text_data=_render("snapshot", message_id=message_id, text=message.content)
            )
        else:
            await self.send(text_data=await db_async(_render)("replace_message", message=message))
