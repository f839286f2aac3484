"""Reading the frames the chat socket sends, for the tests and the benchmark.

One parser: the in-process tests (tests/chat_support.py), the real-socket
client (tests/ws_client.py) and bench/ all rebuild a reply's text the same way
a page does: the last snapshot, then the deltas after it.
"""

import html
import re

DELTA = re.compile(r'<span id="body-(\d+)" hx-swap-oob="beforeend">(.*?)</span>', re.S)
SNAPSHOT = re.compile(r'<div id="body-(\d+)" hx-swap-oob="innerHTML">(.*?)</div>', re.S)
FINAL = re.compile(r'<article id="msg-(\d+)"[^>]*data-status="(\w+)"[^>]*hx-swap-oob="outerHTML"')
NEW_REPLY = re.compile(r'<article id="msg-(\d+)" class="msg assistant status-streaming"')
NOTICE = re.compile(
    r'<p class="notice \w+" role="\w+"><span class="notice-text">(.*?)</span>', re.S
)


def text_of(frames, message_id: int) -> str:
    """What a page shows for a streaming message after these frames."""
    text = ""
    for frame in frames:
        for mid, body in SNAPSHOT.findall(frame):
            if int(mid) == message_id:
                text = html.unescape(body)
        for mid, body in DELTA.findall(frame):
            if int(mid) == message_id:
                text += html.unescape(body)
    return text


def deltas_of(frames, message_id: int) -> list[str]:
    return [
        html.unescape(body)
        for frame in frames
        for mid, body in DELTA.findall(frame)
        if int(mid) == message_id
    ]
