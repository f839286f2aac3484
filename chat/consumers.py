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

from chat import frames, generation, presence, recovery, turns
from chat.db import db_async
from chat.models import Message

log = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
SNAPSHOT_WAIT_SECONDS = 3.0
NO_MORE_DELTAS = float("inf")  # after a snapshot from the database: wait for the final message
MAX_JSON_DEPTH = 8  # commands are flat objects; anything deeper is not one of ours
MAX_SYNC_IDS = 50  # a page streams at most a few replies at once


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class BadCommand(Exception):
    """Not a command we understand; the notice says so, the socket stays open."""


def _refuse_constant(name):
    raise BadCommand(f"not a number: {name}")


def _depth(value, limit: int) -> int:
    """How deeply `value` nests, counted up to just past `limit`."""
    stack, deepest = [(value, 1)], 0
    while stack and deepest <= limit:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_command(text: str) -> dict:
    """A command object, or BadCommand: junk, NaN/Infinity, deep nesting, huge numbers."""
    try:
        content = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise BadCommand("not JSON") from None
    if not isinstance(content, dict) or _depth(content, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadCommand("not a command object")
    return content


def _sync_ids(content) -> tuple[int, list[int]]:
    """What a `sync` says the page shows: the newest id and the ids still streaming."""
    after, streaming = content.get("after") or 0, content.get("streaming") or []
    if not isinstance(streaming, list) or len(streaming) > MAX_SYNC_IDS:
        raise turns.Refused("That was not a valid command.")
    invalid = "That was not a valid command."
    return (turns.as_id(after, invalid) if after else 0), [
        turns.as_id(i, invalid) for i in streaming
    ]


@db_async
def _run(command, *args):
    """Run a turns command off the event loop."""
    return command(*args)


@db_async
def _as_user(user_id, command, *args):
    """Run a turns command as the account is now: a demotion counts from the next command."""
    user = turns.current_user(user_id)
    if user is None:
        raise turns.Refused("Your account was deactivated.")
    return command(user, *args)


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
            await self.close(code=presence.CLOSE_SIGNED_OUT)
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
        self.keeper = None
        await self.accept()
        if presence.count_for(user.pk) >= settings.MAX_SOCKETS_PER_USER:
            await self.send_frames(
                frames.notice(
                    f"You have {settings.MAX_SOCKETS_PER_USER} chat tabs open already; "
                    "close one and reload this page."
                )
            )
            await self.close(code=presence.CLOSE_TOO_MANY)
            self.conversation = None
            return
        key, auth_hash = await db_async(presence.session_identity)(self.scope["session"])
        presence.join(self.channel_name, presence.Presence(user.pk, key, auth_hash, self))
        await self.channel_layer.group_add(self.conversation.group, self.channel_name)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        self.keeper = asyncio.create_task(self._keep_membership())
        recovery.ensure_sweeper()
        for message_id in await _run(turns.streaming_ids, self.conversation.pk):
            await self.resync(message_id)

    async def disconnect(self, code):
        if self.conversation is None:
            return
        presence.leave(self.channel_name)
        for timer in [*self.timers.values(), self.keeper]:
            if timer is not None:
                timer.cancel()
        await self.channel_layer.group_discard(self.conversation.group, self.channel_name)
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)

    async def ended(self, reason: str):
        """The session or account behind this socket ended: say why, then close."""
        code, text = presence.REASONS[reason]
        await self.send_frames(frames.notice(text))
        await self.close(code=code)

    # --- commands from the browser ---------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > settings.MAX_MESSAGE_CHARS * 2 + 4096:
            await self.notice("That message is too large to send.")
            return
        try:
            content = parse_command(text_data)
        except BadCommand:
            await self.notice("That was not a valid command.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        command = content.get("command")
        handler = getattr(self, f"command_{command}", None) if isinstance(command, str) else None
        if handler is None:
            await self.notice("Unknown command.")
            return
        try:
            await handler(content)
        except turns.Refused as refusal:
            await self.notice(str(refusal))
        except Exception:
            log.exception("command %s failed", command)
            await self.notice("Something went wrong on the server; nothing was lost. Try again.")

    async def command_send(self, content):
        messages, plan = await _as_user(
            self.user.pk,
            turns.send,
            self.conversation.pk,
            content.get("content"),
            content.get("model"),
        )
        await self.begin(plan, append=messages)

    async def command_continue(self, content):
        await self.command_send({**content, "content": "Continue from where you stopped."})

    async def command_regenerate(self, content):
        removed, reply, plan = await _as_user(
            self.user.pk, turns.regenerate, self.conversation.pk, content.get("model")
        )
        await self.begin(plan, remove=removed, append=[reply])

    async def command_edit(self, content):
        removed, messages, plan = await _as_user(
            self.user.pk,
            turns.edit,
            self.conversation.pk,
            content.get("message_id"),
            content.get("content"),
        )
        # The edited question is re-rendered in place of its old self.
        await self.begin(plan, remove=[*removed, messages[0].pk], append=messages)

    async def command_sync(self, content):
        """The page says what it shows (sent on every connect); fill in what it missed."""
        after, streaming = _sync_ids(content)
        finished, newer, still = await _run(
            turns.sync_state, self.conversation.pk, after, streaming
        )
        for message in finished:
            await self.send_frames(await db_async(frames.message)(message))
        if newer:
            await self.send_frames(await db_async(frames.append)(newer))
        for message_id in still:
            if message_id not in self.waiting:
                await self.resync(message_id)

    async def command_stop(self, content):
        message_id = await _as_user(
            self.user.pk, turns.stoppable, self.conversation.pk, content.get("message_id")
        )
        await generation.request_stop(message_id)

    async def begin(self, plan, remove=(), append=()):
        """Show the change on every tab of this conversation, then start the job."""
        html = frames.remove(remove) + await db_async(frames.append)(list(append))
        await self.channel_layer.group_send(
            self.conversation.group, {"type": "thread.html", "frames": html}
        )
        generation.start(plan)

    async def notice(self, text: str):
        await self.send_frames(frames.notice(text))

    async def send_frames(self, html_frames: list[str]):
        for frame in html_frames:
            await self.send(text_data=frame)

    # --- events from the channel layer ------------------------------------------
    async def thread_html(self, event):
        await self.send_frames(event["frames"])

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
        await self.send_frames(frames.text(message_id, event["text"], replace=False))

    async def gen_snapshot(self, event):
        message_id = event["message_id"]
        if message_id not in self.waiting:
            return
        held = self.waiting.pop(message_id)
        self.timers.pop(message_id).cancel()
        self.seen[message_id] = event["seq"]
        await self.send_frames(frames.text(message_id, event["text"], replace=True))
        for delta in sorted(held, key=lambda d: d["seq"]):
            await self.gen_delta(delta)

    async def gen_done(self, event):
        message_id = event["message_id"]
        self.waiting.pop(message_id, None)
        timer = self.timers.pop(message_id, None)
        if timer:
            timer.cancel()
        self.seen.pop(message_id, None)
        await self.send_frames(event["frames"])

    async def user_disconnect(self, event):
        await self.ended("deactivated")

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
                    html = await db_async(frames.message)(message)
                    await self.gen_done({"message_id": message_id, "frames": html})

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
            await self.send_frames(frames.text(message_id, message.content, replace=True))
        else:
            await self.send_frames(await db_async(frames.message)(message))
