"""The chat websocket: one per open conversation page.

The Channels tutorial's shape: connect, commands, events. Thin by design:
authenticate, check that the conversation (and every id in a command) belongs
to the user as the account is now, run the command (chat.turns), and forward
the fragments chat.live.events renders. Replies come from generation jobs
(chat.live.jobs) through the conversation's group, so every tab, in every
process, sees them; chat.live.follower decides what to do with each delta and
snapshot so that a socket joining mid-reply shows it with no gap and no repeat.
"""

import asyncio
import functools
import logging

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from chat import branches, ownership, turns
from chat.db import db_async
from chat.live import commands, events, inbox, jobs, presence
from chat.live import socket_work as work
from chat.live.follower import FORWARD, RESYNC, ReplyFollower

log = logging.getLogger(__name__)
CLOSE_NOT_FOUND = 4404
SNAPSHOT_WAIT_SECONDS = 3.0


class ChatConsumer(AsyncJsonWebsocketConsumer):
    conversation = None

    async def __call__(self, scope, receive, send):
        """Channels' AsyncConsumer.__call__, reading through chat.live.inbox."""
        self.scope, self.base_send = scope, send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        try:
            await inbox.dispatch_all([receive, self.channel_receive], self.dispatch)
        except StopConsumer:
            pass

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

    # --- connect and disconnect ---------------------------------------------------------
    async def connect(self):
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        opened = await work.opening(self.scope, conversation_id)
        user, self.conversation, session, streaming = opened
        if user is None:
            await self.close(code=presence.CLOSE_SIGNED_OUT)
            return
        if self.conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user, self.follower, self.timers, self.keeper = user, ReplyFollower(), {}, None
        await self.accept()
        if presence.count_for(user.pk) >= settings.MAX_SOCKETS_PER_USER:
            limit = settings.MAX_SOCKETS_PER_USER
            await self.notice(f"You have {limit} chat tabs open already; close one and reload.")
            await self.close(code=presence.CLOSE_TOO_MANY)
            self.conversation = None
            return
        presence.join(self.channel_name, presence.Presence(user.pk, *session, self))
        await self._join_groups()
        self.keeper = asyncio.create_task(self._keep_membership())
        for message_id in streaming:  # replies running when the page was drawn
            await self.resync(message_id)

    async def websocket_disconnect(self, message):
        """Channels' own, minus its closing of stale database connections on a worker
        thread (a hop per closing socket, for a thread this consumer never queries on:
        it reaches the database only through chat.db, which manages its connections)."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code):
        if self.conversation is None:
            return
        presence.leave(self.channel_name)
        for timer in [*self.timers.values(), self.keeper]:
            if timer is not None:
                timer.cancel()
        await self.channel_layer.group_discard(self._group(), self.channel_name)
        await self.channel_layer.group_discard(events.user_group(self.user.pk), self.channel_name)

    async def ended(self, reason: str):
        """The session or account behind this socket ended: say why, then close."""
        code, text = presence.REASONS[reason]
        await self.notice(text)
        await self.close(code=code)

    def _group(self) -> str:
        return events.conversation_group(self.conversation.pk)

    async def _join_groups(self):
        """Both at once: on Redis they go out in one SUBSCRIBE (chatsite.channel_layer)."""
        await asyncio.gather(
            self.channel_layer.group_add(self._group(), self.channel_name),
            self.channel_layer.group_add(events.user_group(self.user.pk), self.channel_name),
        )

    # --- commands from the browser ------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > settings.MAX_MESSAGE_CHARS * 2 + 4096:
            await self.notice("That message is too large to send.")
            return
        try:
            content = commands.parse(text_data)
        except commands.BadCommand:
            await self.notice(commands.INVALID)
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
        messages, plan = await work.as_user(
            self.user.pk, turns.send, self.conversation.pk, content.get("content"),
            content.get("model"),
        )  # fmt: skip
        job = jobs.start(plan, shown=False)  # the upstream request goes out now
        try:
            frames = events.append_frames(messages)  # here, not on the database thread
            await events.publish_thread(self.conversation.pk, frames)  # on every tab
        finally:
            job.shown.set()  # its deltas follow the turns, never come before them

    async def command_continue(self, content):
        """Extend a reply that stopped short, in place (chat.turns.continue_reply)."""
        reply, plan = await work.as_user(
            self.user.pk, turns.continue_reply, self.conversation.pk, content.get("message_id")
        )
        frames = await db_async(events.message_frames)(reply)
        await events.publish_thread(self.conversation.pk, frames)
        jobs.start(plan)

    async def command_regenerate(self, content):
        reply, plan = await work.as_user(
            self.user.pk, turns.regenerate, self.conversation.pk, content.get("message_id"),
            content.get("model"),
        )  # fmt: skip
        await self.redraw(showing=reply.pk, new_reply=reply.pk)
        jobs.start(plan)

    async def command_edit(self, content):
        messages, plan = await work.as_user(
            self.user.pk, turns.edit, self.conversation.pk, content.get("message_id"),
            content.get("content"),
        )  # fmt: skip
        question, reply = messages
        await self.redraw(showing=question.pk, new_reply=reply.pk)
        jobs.start(plan)

    async def command_switch(self, content):
        """Show another version: saved, so every tab and every reload shows it too."""
        shown = await work.as_user(
            self.user.pk, branches.switch, self.conversation.pk, content.get("message_id")
        )
        await self.redraw(showing=shown)

    async def command_delete(self, content):
        """First ask (how many messages go, hidden branches included), then delete."""
        confirmed = commands.count(content.get("confirm"))
        doomed, deleted = await work.as_user(
            self.user.pk, branches.delete, self.conversation.pk, content.get("message_id"),
            confirmed,
        )  # fmt: skip
        if not deleted:
            await self.send_frames(events.confirm_delete_frames(doomed))
            return
        await self.redraw()
        await self.send_frames(events.notice_frames(f"Deleted {doomed.describe()}.", "info"))

    async def command_sync(self, content):
        """The page says what it shows (sent on every connect); fill in what it missed."""
        after, streaming = commands.sync_ids(content)
        catchup = await work.run(work.catch_up, self.conversation.pk, after, streaming)
        if catchup.redraw:  # it shows a branch no longer chosen: draw the chosen one
            frames, resync = await work.run(work.redraw, self.conversation.pk, None, None)
            await self.thread_redraw({"frames": frames, "resync": resync})
            return
        for message in catchup.finished:
            await self.send_frames(await db_async(events.message_frames)(message))
        if catchup.newer:
            await self.send_frames(await db_async(events.append_frames)(catchup.newer))
        for message_id in catchup.streaming:
            await self.resync(message_id)

    async def command_stop(self, content):
        message_id = await work.as_user(
            self.user.pk, ownership.stoppable, self.conversation.pk, content.get("message_id")
        )
        await jobs.stop(message_id)

    async def redraw(self, showing=None, new_reply=None):
        """Draw the thread again on every tab: another branch is shown."""
        frames, resync = await work.run(work.redraw, self.conversation.pk, showing, new_reply)
        await events.publish_redraw(self.conversation.pk, frames, resync)

    async def notice(self, text: str):
        await self.send_frames(events.notice_frames(text))

    async def send_frames(self, frames: list[str]):
        for frame in frames:
            await self.send(text_data=frame)

    # --- events from the channel layer ---------------------------------------------------
    async def thread_html(self, event):
        await self.send_frames(event["frames"])

    async def thread_redraw(self, event):
        """Another branch drawn: its replies still streaming are fetched afresh, as on a
        reload, so they show live with no gap and no repeat."""
        await self.send_frames(event["frames"])
        for message_id in event["resync"]:
            self.follower.done(message_id)
            await self.resync(message_id)

    async def gen_delta(self, event):
        message_id = event["message_id"]
        step = self.follower.delta(message_id, event["seq"], event["frames"])
        if step.action == RESYNC:
            await self._ask_snapshot(message_id)  # a gap: joined mid-reply or lost a frame
        elif step.action == FORWARD:
            await self.send_frames(event["frames"])  # rendered once for every socket

    async def gen_snapshot(self, event):
        message_id = event["message_id"]
        step = self.follower.snapshot(message_id, event["seq"], event["frames"])
        if step.action != FORWARD:
            return
        self._cancel_timer(message_id)
        for frames in step.payloads:  # the snapshot, then the deltas held meanwhile
            await self.send_frames(frames)
        if step.resync:
            await self._ask_snapshot(message_id)

    async def gen_done(self, event):
        self.follower.done(event["message_id"])
        self._cancel_timer(event["message_id"])
        await self.send_frames(event["frames"])

    async def user_disconnect(self, event):
        await self.ended("deactivated")

    # --- re-attach ------------------------------------------------------------------------
    async def resync(self, message_id: int):
        if self.follower.start_resync(message_id):
            await self._ask_snapshot(message_id)

    async def _ask_snapshot(self, message_id: int):
        self._cancel_timer(message_id)
        self.timers[message_id] = asyncio.create_task(self._saved_text_later(message_id))
        await events.ask_snapshot(message_id, self.channel_name)

    def _cancel_timer(self, message_id: int):
        timer = self.timers.pop(message_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _saved_text_later(self, message_id: int):
        """No job answered in time: it died or is out of reach. Show the saved text."""
        await asyncio.sleep(SNAPSHOT_WAIT_SECONDS)
        self.timers.pop(message_id, None)
        message, frames = await work.saved(message_id)
        if message is None:
            self.follower.done(message_id)
            return
        step = self.follower.saved_text(message_id, frames, message.is_streaming)
        if step.action == FORWARD:
            await self.send_frames(frames)

    async def _keep_membership(self):
        """Re-join the groups now and then, and catch up on replies that ended meanwhile.

        A Redis restart forgets group membership and drops events in flight; this
        brings the socket back within SOCKET_REJOIN_SECONDS, and the sequence
        numbers on deltas trigger a snapshot for anything missed.
        """
        while True:
            await asyncio.sleep(settings.SOCKET_REJOIN_SECONDS)
            try:
                await self._join_groups()
            except Exception:
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None
                log.warning("could not re-join groups; will retry")
                continue
            following = self.follower.following()
            for message_id in await work.ended(following) if following else ():
                message, frames = await work.saved(message_id)
                if message is not None and not message.is_streaming:
                    await self.gen_done({"message_id": message_id, "frames": frames})
