"""The one owner of live events: who gets them, what they say, what the page receives.

Zulip's rule, here too: actions write to the database, then call a function
below to tell whoever is listening. This module alone knows
- the channel-layer group names (a conversation, a user, the job control listeners);
- the event dicts that travel between jobs and sockets, in any process;
- the HTML fragments the page receives (partials of templates/chat/live.html,
  and a streaming reply's parts, built below),
  each under settings.WS_FRAME_BYTES: daphne refuses to send a websocket
  message over 1 MiB, so long text goes out in parts (the first replaces, the
  rest append) and a finished message too big for one frame goes out as its
  article with an empty body, then its Markdown block by block.

Fragment functions return a list of frames to send in order.
"""

import functools
import logging
import uuid
from dataclasses import dataclass, field
from html import escape as escape_html

from channels.layers import get_channel_layer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

from chat.markdown.live import LiveMarkdown
from chat.markdown.whole import markdown_parts
from chat.models import Message
from chat.tree import annotate_one

log = logging.getLogger(__name__)
TEMPLATE = "chat/live.html"

# --- who listens ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def conversation_group(conversation_id) -> str:
    """Every socket open on the conversation, in every process. Remembered: every
    delta of every reply asks, and parsing the UUID was 3% of a busy process's CPU."""
    return f"conv.{uuid.UUID(str(conversation_id)).hex}"


def user_group(user_id: int) -> str:
    """Every socket of one person."""
    return f"user.{user_id}"


JOBS_GROUP = "jobs"  # every process's job control listener (chat.live.control)


# --- what the page receives ---------------------------------------------------------------


def _render(partial: str, **context) -> str:
    return render_to_string(f"{TEMPLATE}#{partial}", context)


def _fits(html: str) -> bool:
    return len(html.encode()) <= settings.WS_FRAME_BYTES


def _pieces(text: str) -> list[str]:
    # Escaping makes one character at most six bytes (&quot;); leave room for the markup.
    size = max(1, (settings.WS_FRAME_BYTES - 256) // 6)
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class LiveChange:
    """What a streaming reply's next frames show (see live_frames)."""

    reasoning: str = ""  # thinking to add (or, on a reset, all of it)
    frozen: list = field(default_factory=list)  # answer HTML blocks just frozen
    tail: SafeString | None = None  # the answer's tail, when it changed
    tail_text: str = ""  # the tail's text, shown plain if its HTML is too big for a frame
    tail_added: str | None = None  # or only the text added to its one plain paragraph
    tail_into: str = "p"  # (or to its open code fence's "code")
    label: str = ""  # the thinking block's new label


# The fragments sent many times a second are built without the template engine,
# which cost more than everything else a delta does on our side. A streaming
# reply's page parts (templates/chat/_message.html): its thinking text and label,
# the answer's frozen blocks (only ever appended to) and its tail (replaced).
PART = '<div id="{}-{}" hx-swap-oob="{}">{}</div>'
LABEL = '<span id="think-label-{}" hx-swap-oob="innerHTML">{}</span>'
# Text added to a tail that is one plain paragraph or one open code fence: appended
# to that paragraph or code element.
ADD_TO_TAIL = '<div hx-swap-oob="beforeend:#tail-{} {}">{}</div>'


def _part(name: str, message_id: int, swap: str, markup) -> str:
    return format_html(PART, name, int(message_id), swap, markup)


def _add_to_tail(message_id: int, into: str, text: str) -> str:
    """The commonest frame by far: a few words added to the tail. Escaped as format_html
    would (the same html.escape), without its lazy-string machinery, which was 4% of a
    busy process's CPU."""
    return ADD_TO_TAIL.format(int(message_id), escape_html(into), escape_html(text))


def _text_parts(name: str, message_id: int, text: str, replace: bool) -> list[str]:
    """Plain text into a part, in frame-sized pieces (the first replaces, if asked)."""
    pieces = _pieces(text) or ([""] if replace else [])
    return [
        _part(name, message_id, "innerHTML" if replace and i == 0 else "beforeend", piece)
        for i, piece in enumerate(pieces)
    ]


def _pack(parts: list[str]) -> list[str]:
    """As few frames as the parts fit in, in order (each part fits on its own)."""
    frames, current = [], ""
    for part in parts:
        if current and len(current.encode()) + len(part.encode()) > settings.WS_FRAME_BYTES:
            frames.append(current)
            current = ""
        current += part
    return [*frames, current] if current else frames


def live_frames(message_id: int, live, *, reset: bool = False) -> list[str]:
    """What changed in a streaming reply since the last frames (`reset`: all of it).

    Rendered once per delta, for every socket on the conversation."""
    if live.tail_added is not None and not (reset or live.reasoning or live.frozen or live.label):
        return [_add_to_tail(message_id, live.tail_into, live.tail_added)]
    parts = _text_parts("think-text", message_id, live.reasoning, replace=reset)
    if reset:
        parts.append(_part("frozen", message_id, "innerHTML", ""))
    parts += [_part("frozen", message_id, "beforeend", html) for html in live.frozen]
    if live.tail_added is not None and not reset:
        parts.append(_add_to_tail(message_id, live.tail_into, live.tail_added))
    elif live.tail is not None:
        parts += _tail_parts(message_id, live.tail, live.tail_text)
    if live.label:
        parts.append(format_html(LABEL, int(message_id), live.label))
    return _pack(parts)


def saved_snapshot_frames(message: Message) -> list[str]:
    """A streaming reply as last saved, for a socket whose job did not answer."""
    live = LiveMarkdown(settings.WS_FRAME_BYTES - 512)
    live.update(message.content)
    frozen, tail = live.snapshot()
    label = "Thinking…" if message.reasoning and not message.content else ""
    change = LiveChange(message.reasoning, frozen, tail, live.tail_text(), label)
    return live_frames(message.pk, change, reset=True)


def _tail_parts(message_id: int, html, text: str) -> list[str]:
    part = _part("tail", message_id, "innerHTML", html)
    if _fits(part):
        return [part]
    # A tail too big for one frame (a huge open block): shown plain until it freezes.
    first, *rest = _text_parts("tail", message_id, text, replace=True)
    return [first, *rest]


def _deferred_parts(message: Message, plain: bool) -> list[tuple[str, list]]:
    """Where a deferred body goes on the page, and what goes there, piece by piece."""
    pk = message.pk
    if message.role == Message.Role.USER:
        return [(f"user-{pk}", _pieces(message.content))]
    thinking = [(f"think-text-{pk}", _pieces(message.reasoning))] if message.reasoning else []
    if message.is_streaming:
        return [*thinking, (f"tail-{pk}", _pieces(message.content))]
    if plain:
        return [*thinking, (f"md-{pk}", _pieces(message.content))]
    body = markdown_parts(message.content, settings.WS_FRAME_BYTES - 256)
    return [*thinking, (f"md-{pk}", body)]


def _whole(message: Message, partial: str, **context) -> list[str]:
    if not hasattr(message, "versions"):
        annotate_one(message)  # its "‹ 2 / 3 ›" controls
    html = _render(partial, message=message, messages=[message], **context)
    if _fits(html):
        return [html]
    shell = _render(partial, message=message, messages=[message], deferred=True, **context)
    return [
        shell,
        *(
            _render("append-body", target=target, html=part)
            for target, parts in _deferred_parts(message, context.get("plain", False))
            for part in parts
        ),
    ]


def message_frames(message: Message, plain: bool = False, rendered=None) -> list[str]:
    """A message as it is now, in place of what the page shows for it (`plain`: its
    text without Markdown, the fallback when rendering fails; `rendered`: its HTML,
    already made by the job that streamed it)."""
    return _whole(message, "replace", plain=plain, rendered=rendered)


def append_frames(messages: list[Message]) -> list[str]:
    """Messages added at the end of the thread, in as few frames as fit; each is drawn
    once (a send draws its two turns on the database thread, where time is scarce)."""
    frames, batch, size = [], [], 0

    def flush():
        nonlocal size
        if batch:
            frames.append(_render("append-drawn", html=SafeString("".join(batch))))
        batch.clear()
        size = 0

    for item in messages:
        if not hasattr(item, "versions"):
            item.versions = None  # a new turn has no other version yet
        html = _render("message", message=item)
        if not _fits(html):
            flush()
            frames.extend(_whole(item, "append"))
            continue
        if batch and size + len(html.encode()) > settings.WS_FRAME_BYTES - 64:
            flush()
        batch.append(html)  # drawn by the template engine, so already escaped
        size += len(html.encode())
    flush()
    return frames


def thread_frames(conversation, window, showing: int | None = None) -> list[str]:
    """The whole thread drawn again (another branch is shown): a window of the active
    path (chat.thread.window), with the loader for what is above it; the page keeps
    `showing` (the version just chosen) in view."""
    clear = _render(
        "thread", conversation=conversation, earlier_before=window.earlier_before, showing=showing
    )
    return _pack([clear, *append_frames(window.messages)])


def confirm_delete_frames(doomed) -> list[str]:
    """The question asked before a message and its subtree go (chat.branches.Doomed)."""
    return [_render("confirm-delete", doomed=doomed)]


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


async def publish_redraw(conversation_id, frames: list[str], resync: list[int]):
    """The thread drawn again on every tab (another branch): `resync` lists the replies
    still streaming in it, which each socket must fetch afresh (a snapshot) to show them
    live with no gap."""
    event = {"type": "thread.redraw", "frames": frames, "resync": resync}
    await _group_send(conversation_group(conversation_id), event)


async def publish_delta(conversation_id, message_id: int, seq: int, frames: list[str]):
    """The next change to a streaming reply (live_frames), rendered once for every
    socket; `seq` lets a socket see a gap or a repeat."""
    event = {"type": "gen.delta", "message_id": message_id, "seq": seq, "frames": frames}
    await _group_send(conversation_group(conversation_id), event)


ENDED = {
    Message.Status.COMPLETE: "The reply is complete.",
    Message.Status.STOPPED: "The reply stopped.",
    Message.Status.ERROR: "The reply failed.",
    Message.Status.INTERRUPTED: "The reply was interrupted.",
}


async def publish_done(conversation_id, message_id: int, status: str, frames: list[str]):
    """A reply ended (complete, stopped, failed or interrupted): its final HTML, and one
    polite word for screen readers (the text itself is never announced token by token)."""
    frames = [*frames, _render("status", text=ENDED.get(status, ""))]
    event = {"type": "gen.done", "message_id": message_id, "status": status, "frames": frames}
    await _group_send(conversation_group(conversation_id), event)


async def stop_job(message_id: int):
    await _group_send(JOBS_GROUP, {"type": "job.stop", "message_id": message_id})


async def ask_snapshot(message_id: int, reply_to: str):
    """Ask the job for its text so far, to be sent to one socket's channel."""
    event = {"type": "job.snapshot", "message_id": message_id, "reply_to": reply_to}
    await _group_send(JOBS_GROUP, event)


async def send_snapshot(reply_to: str, message_id: int, seq: int, frames: list[str]):
    """The reply as it is at `seq` (live_frames with reset), for one joining socket."""
    event = {"type": "gen.snapshot", "message_id": message_id, "seq": seq, "frames": frames}
    try:
        await get_channel_layer().send(reply_to, event)
    except Exception:
        log.warning("could not send a snapshot of %s", message_id)


async def disconnect_user(user_id: int):
    """Close every socket of this person, in every process on the shared layer."""
    await _group_send(user_group(user_id), {"type": "user.disconnect"})


def commanded_reply(event: dict) -> int | None:
    """The reply a job command is for."""
    return event.get("message_id")


def is_stop(event: dict) -> bool:
    return event.get("type") == "job.stop"


def is_snapshot_request(event: dict) -> bool:
    return event.get("type") == "job.snapshot"
