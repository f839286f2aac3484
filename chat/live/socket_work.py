"""The database work of a chat socket (chat.live.consumer), run off the event loop.

On SQLite all of it queues on one thread with every other socket's, so each
command makes one trip, and what can be drawn without the database (a send's
new turns) is drawn on the event loop instead, where time is less scarce.
"""

from types import SimpleNamespace

from django.contrib import auth

from chat import ownership, thread, turns
from chat.db import db_async, db_background
from chat.live import events, presence
from chat.models import Conversation, Message


@db_async
def run(command, *args):
    """Run a turns command off the event loop."""
    return command(*args)


@db_async
def as_user(user_id, command, *args):
    """Run a turns command as the account is now: a demotion counts from the next command."""
    user = ownership.current_user(user_id)
    if user is None:
        raise turns.Refused("Your account was deactivated.")
    return command(user, *args)


@db_async
def opening(scope, conversation_id):
    """Who the socket's session belongs to (read as Django reads it for a request: None
    if signed out), their conversation if it is theirs, the session's (key, auth hash),
    and the replies on the shown branch still streaming. One trip for what was four:
    the first message typed waits behind them (a hundred tabs opening at once queued
    two hundred trips on SQLite's one thread)."""
    user = auth.get_user(SimpleNamespace(session=scope["session"]))
    if not user.is_authenticated:
        return None, None, ("", ""), []
    conversation = ownership.owned_conversation(user, conversation_id)
    if conversation is None:
        return user, None, ("", ""), []
    identity = presence.session_identity(scope["session"])
    return user, conversation, identity, thread.streaming_on_path(conversation)


def catch_up(conversation_id, after: int, streaming: list[int]) -> thread.Catchup:
    return thread.catch_up(Conversation.objects.get(pk=conversation_id), after, streaming)


def redraw(conversation_id, showing, new_reply) -> tuple[list[str], list[int]]:
    """The thread's frames, and the replies in it still streaming that sockets must
    fetch afresh (not `new_reply`, which every socket follows from its first delta)."""
    conversation = Conversation.objects.get(pk=conversation_id)
    window = thread.window(conversation, showing)
    resync = [m.pk for m in window.messages if m.is_streaming and m.pk != new_reply]
    return events.thread_frames(conversation, window, showing), resync


@db_background
def ended(message_ids) -> list[int]:
    """Which of these replies are no longer streaming: one query, nothing drawn.
    Nobody waits on it: a periodic check, behind every command."""
    return list(
        Message.objects.filter(pk__in=list(message_ids))
        .exclude(status=Message.Status.STREAMING)
        .values_list("pk", flat=True)
    )


@db_async
def saved(message_id: int) -> tuple[Message | None, list[str]]:
    """The message as saved, and its frames: final if it has finished, else a snapshot."""
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None, []
    if message.is_streaming:
        return message, events.saved_snapshot_frames(message)
    return message, events.message_frames(message)
