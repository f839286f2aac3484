"""Reading the frames the chat socket sends, for the tests and the benchmark.

One parser: the in-process tests (tests/chat_support.py), the real-socket
client (tests/ws_client.py) and bench/ all rebuild a streaming reply the way a
page does, from its parts: the thinking text, the frozen Markdown blocks (only
appended to) and the tail (replaced, or added to while it is one plain
paragraph). A part's HTML never holds a `</div>` (the sanitizer allows no div),
so a lazy match finds each part's end.
"""

import html
import re

PART = re.compile(r'<div id="(think-text|frozen|tail)-(\d+)" hx-swap-oob="(\w+)">(.*?)</div>', re.S)
ADDED = re.compile(r'<div hx-swap-oob="beforeend:#tail-(\d+) (p|code)">(.*?)</div>', re.S)
LABEL = re.compile(r'<span id="think-label-(\d+)" hx-swap-oob="innerHTML">(.*?)</span>', re.S)
FINAL = re.compile(r'<article id="msg-(\d+)"[^>]*data-status="(\w+)"[^>]*hx-swap-oob="outerHTML"')
NEW_REPLY = re.compile(r'<article id="msg-(\d+)" class="msg assistant status-streaming"')
NOTICE = re.compile(
    r'<p class="notice \w+" role="\w+"><span class="notice-text">(.*?)</span>', re.S
)
TAG = re.compile(r"<[^>]+>")


def visible(fragment: str) -> str:
    """The text a reader sees in some HTML, with runs of whitespace made one space."""
    return " ".join(html.unescape(TAG.sub(" ", fragment)).split())


class Reply:
    """A streaming reply's parts, as the page holds them after each frame."""

    def __init__(self):
        self.parts = {"think-text": "", "frozen": "", "tail": ""}
        self.label = ""

    def apply(self, frame: str, message_id: int) -> bool:
        """Apply a frame's swaps for this reply; True if it changed any part."""
        changed = False
        for name, mid, swap, body in PART.findall(frame):
            if int(mid) == message_id:
                self.parts[name] = body if swap == "innerHTML" else self.parts[name] + body
                changed = True
        for mid, into, words in ADDED.findall(frame):
            if int(mid) == message_id:  # into the tail's one paragraph or open fence
                tail = self.parts["tail"]
                end = tail.index(f"</{into}>")
                self.parts["tail"] = tail[:end] + words + tail[end:]
                changed = True
        for mid, label in LABEL.findall(frame):
            if int(mid) == message_id:
                self.label = html.unescape(label)
        return changed

    @property
    def text(self) -> str:
        return visible(self.parts["frozen"] + self.parts["tail"])

    @property
    def reasoning(self) -> str:
        return html.unescape(self.parts["think-text"])


def is_snapshot(frame: str, message_id: int) -> bool:
    """A frame that shows a reply afresh (a socket joining), rather than adding to it."""
    return f'<div id="frozen-{message_id}" hx-swap-oob="innerHTML">' in frame


def is_delta(frame: str, message_id: int) -> bool:
    return not is_snapshot(frame, message_id) and (
        any(int(mid) == message_id for _, mid, _, _ in PART.findall(frame))
        or any(int(mid) == message_id for mid, _, _ in ADDED.findall(frame))
    )


def reply_of(frames, message_id: int) -> Reply:
    reply = Reply()
    for frame in frames:
        reply.apply(frame, message_id)
    return reply


def text_of(frames, message_id: int) -> str:
    """The answer a page shows for a streaming message after these frames (visible text)."""
    return reply_of(frames, message_id).text


def shown(content: str) -> str:
    """The visible text of a finished reply's Markdown, to compare with text_of."""
    from chat.markdown.whole import render_markdown

    return visible(render_markdown(content))
