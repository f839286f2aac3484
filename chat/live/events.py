"""The one owner of live events: who gets them, what they say, what the page receives.

Zulip's rule, here too: actions write to the database, then call a function
below to tell whoever is listening. This module alone knows
- the channel-layer group names (a conversation, a user, a running reply);
- the event dicts that travel between jobs and sockets, in any process;
- the HTML fragments the page receives (partials of templates/chat/live.html,
  and the streaming text's two fragments below),
  each under settings.WS_FRAME_BYTES: daphne refuses to send a websocket
  message over 1 MiB, so long text goes out in parts (the first replaces, the
  rest append) and a finished message too big for one frame goes out as its
  article with an empty body, then its Markdown block by block.

Fragment functions return a list of frames to send in order.
"""

import logging
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html

from chat.markdown.whole import markdown_parts
from chat.models import Message

log = logging.getLogger(__name__)
TEMPLATE = "chat/live.html"

# --- who listens ----------------------------------------------------------------------------


def conversation_group(conversation_id) -> str:
    """Every socket open on the conversation, in every process."""
    return f"conv.{uuid.UUID(str(conversation_id)).hex}"


def user_group(user_id: int) -> str:
    """Every socket of one person."""
    return f"user.{user_id}"


def job_group(message_id: int) -> str:
    """The job writing one reply, wherever it runs."""
    return f"job.{message_id}"


# --- what the page receives ---------------------------------------------------------------


def _render(partial: str, **context) -> str:
    return render_to_string(f"{TEMPLATE}#{partial}", context)


def _fits(html: str) -> bool:
    return len(html.encode()) <= settings.WS_FRAME_BYTES


def _pieces(text: str) -> list[str]:
    # Escaping makes one character at most six bytes (&quot;); leave room for the markup.
    size = max(1, (settings.WS_FRAME_BYTES - 256) // 6)
    return [text[i : i + size] for i in range(0, len(text), size)]


# The two fragments sent many times a second are built without the template
# engine, which cost more than everything else a delta does on our side.
DELTA = '<span id="body-{}" hx-swap-oob="beforeend">{}</span>'
SNAPSHOT = '<div id="body-{}" hx-swap-oob="innerHTML">{}</div>'


def text_frames(message_id: int, text: str, *, replace: bool) -> list[str]:
    """Streaming text: `replace` shows it instead of what the page has (a snapshot)."""
    pieces = _pieces(text) or [""]
    return [
        format_html(SNAPSHOT if replace and index == 0 else DELTA, int(message_id), piece)
        for index, piece in enumerate(pieces)
    ]


def _body_parts(message: Message, plain: bool) -> tuple[str, list]:
    """Where a deferred body goes on the page, and what goes there, piece by piece."""
    if plain and not message.is_streaming and message.role == Message.Role.ASSISTANT:
        return f"md-{message.pk}", _pieces(message.content)
    if message.role == Message.Role.USER:
        return f"user-{message.pk}", _pieces(message.content)
    if message.is_streaming:
        return f"body-{message.pk}", _pieces(message.content)
    return f"md-{message.pk}", markdown_parts(message.content, settings.WS_FRAME_BYTES - 256)


def _whole(message: Message, partial: str, **context) -> list[str]:
    html = _render(partial, message=message, messages=[message], **context)
    if _fits(html):
        return [html]
    shell = _render(partial, message=message, messages=[message], deferred=True, **context)
    target, parts = _body_parts(message, context.get("plain", False))
    return [shell, *(_render("append-body", target=target, html=part) for part in parts)]


def message_frames(message: Message, plain: bool = False) -> list[str]:
    """A message as it is now, in place of what the page shows for it (`plain`: its
    text without Markdown, the fallback when rendering fails)."""
    return _whole(message, "replace", plain=plain)


def append_frames(messages: list[Message]) -> list[str]:
    """Messages added at the end of the thread, in as few frames as fit."""
    frames, batch, size = [], [], 0
    for item in messages:
        html = _render("append", messages=[item])
        if not _fits(html):
            frames += [_render("append", messages=batch)] if batch else []
            batch, size = [], 0
            frames += _whole(item, "append")
            continue
        if batch and size + len(html.encode()) > settings.WS_FRAME_BYTES:
            frames.append(_render("append", messages=batch))
            batch, size = [], 0
        batch.append(item)
        size += len(html.encode())
    if batch:
        frames.append(_render("append", messages=batch))
    return frames


def remove_frames(ids) -> list[str]:
    return [_render("remove", ids=ids)] if ids else []


def notice_frames(text: str, kind: str = "error") -> list[str]:
    """An error stays until dismissed; `info` fades on its own."""
    return [_render("notice", text=text, kind=kind)]


def title_frames(conversation) -> list[str]:
    return [_render("title", item=conversation, conversation=conversation)]


# --- telling them --------------------------------------------------------------------------


async def _group_send(group: str, event: dict):
    """Publish; a channel-layer hiccup must not lose a reply (sockets resync on rejoin)."""
    try:
        await get_channel_layer().group_send(group, event)
    except Exception:
        log.warning("could not publish %s to %s", event["type"], group)


async def publish_thread(conversation_id, frames: list[str]):
    """Page HTML for every tab on the conversation: new or removed messages, a title."""
    event = {"type": "thread.html", "frames": frames}
    await _group_send(conversation_group(conversation_id), event)


async def publish_delta(conversation_id, message_id: int, seq: int, text: str):
    """The next piece of a streaming reply; `seq` lets a socket see a gap or a repeat.

    It carries its page HTML, rendered once here rather than once per socket."""
    frames = text_frames(message_id, text, replace=False)
    event = {"type": "gen.delta", "message_id": message_id, "seq": seq, "text": text,
             "frames": frames}  # fmt: skip
    await _group_send(conversation_group(conversation_id), event)


async def publish_done(conversation_id, message_id: int, status: str, frames: list[str]):
    """A reply ended (complete, stopped, failed or interrupted): its final HTML."""
    event = {"type": "gen.done", "message_id": message_id, "status": status, "frames": frames}
    await _group_send(conversation_group(conversation_id), event)


async def stop_job(message_id: int):
    await _group_send(job_group(message_id), {"type": "job.stop"})


async def ask_snapshot(message_id: int, reply_to: str):
    """Ask the job for its text so far, to be sent to one socket's channel."""
    await _group_send(job_group(message_id), {"type": "job.snapshot", "reply_to": reply_to})


async def send_snapshot(reply_to: str, message_id: int, seq: int, text: str):
    event = {"type": "gen.snapshot", "message_id": message_id, "seq": seq, "text": text}
    try:
        await get_channel_layer().send(reply_to, event)
    except Exception:
        log.warning("could not send a snapshot of %s", message_id)


async def disconnect_user(user_id: int):
    """Close every socket of this person, in every process on the shared layer."""
    await _group_send(user_group(user_id), {"type": "user.disconnect"})


def is_stop(event: dict) -> bool:
    return event.get("type") == "job.stop"


def is_snapshot_request(event: dict) -> bool:
    return event.get("type") == "job.snapshot"
