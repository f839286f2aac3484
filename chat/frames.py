"""The HTML fragments a chat socket sends, each under settings.WS_FRAME_BYTES.

Daphne refuses to send a websocket message over 1 MiB, so a reply of any size
must reach the page in parts: streaming text is cut into pieces (the first
replaces, the rest append), and a finished message whose HTML is too big goes
out as its article with an empty body, then its Markdown block by block.
Every function returns a list of frames to send in order.
"""

from django.conf import settings
from django.template.loader import render_to_string

from chat.models import Message
from chat.rendering import markdown_parts


def _render(template: str, **context) -> str:
    return render_to_string(f"chat/ws/{template}.html", context)


def _fits(html: str) -> bool:
    return len(html.encode()) <= settings.WS_FRAME_BYTES


def _text_chars() -> int:
    # Escaping makes one character at most six bytes (&quot;); leave room for the markup.
    return max(1, (settings.WS_FRAME_BYTES - 256) // 6)


def text(message_id: int, text: str, *, replace: bool) -> list[str]:
    """Streaming text: `replace` shows it instead of what the page has (a snapshot)."""
    pieces = _pieces(text) or [""]
    return [
        _render("snapshot" if replace and index == 0 else "delta", message_id=message_id, text=p)
        for index, p in enumerate(pieces)
    ]


def _pieces(text: str) -> list[str]:
    size = _text_chars()
    return [text[i : i + size] for i in range(0, len(text), size)]


def _body_parts(message: Message, plain: bool) -> tuple[str, list]:
    """Where a deferred body goes on the page, and what goes there, piece by piece."""
    if plain and not message.is_streaming and message.role == Message.Role.ASSISTANT:
        return f"md-{message.pk}", _pieces(message.content)
    if message.role == Message.Role.USER:
        return f"user-{message.pk}", _pieces(message.content)
    if message.is_streaming:
        return f"body-{message.pk}", _pieces(message.content)
    return f"md-{message.pk}", markdown_parts(message.content, settings.WS_FRAME_BYTES - 256)


def _whole(message: Message, template: str, **context) -> list[str]:
    html = _render(template, message=message, **context)
    if _fits(html):
        return [html]
    shell = _render(template, message=message, deferred=True, **context)
    target, parts = _body_parts(message, context.get("plain", False))
    return [shell, *(_render("append_body", target=target, html=part) for part in parts)]


def message(message: Message, plain: bool = False) -> list[str]:
    """A message as it is now, in place of what the page shows for it (`plain`: its
    text without Markdown, the fallback when rendering fails)."""
    return _whole(message, "replace_message", plain=plain)


def append(messages: list[Message]) -> list[str]:
    """Messages added at the end of the thread, as few frames as fit."""
    frames, batch, size = [], [], 0
    for item in messages:
        html = _render("append", messages=[item])
        if not _fits(html):
            frames += [_render("append", messages=batch)] if batch else []
            batch, size = [], 0
            frames += _whole(item, "append_one")
            continue
        if batch and size + len(html.encode()) > settings.WS_FRAME_BYTES:
            frames.append(_render("append", messages=batch))
            batch, size = [], 0
        batch.append(item)
        size += len(html.encode())
    if batch:
        frames.append(_render("append", messages=batch))
    return frames


def remove(ids) -> list[str]:
    return [_render("remove", ids=ids)] if ids else []


def notice(text: str, kind: str = "error") -> list[str]:
    """An error stays until dismissed; `info` fades on its own."""
    return [_render("notice", text=text, kind=kind)]
