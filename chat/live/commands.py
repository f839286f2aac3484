"""Reading what the page sends over its socket: one flat JSON object per command.

Anything else gets BadCommand (a notice; the socket stays open): text that is
not JSON, NaN or Infinity, nesting deeper than a command has, ids that are not
database ids, and a `sync` naming more replies than a page can be streaming.
"""

import json

from chat import ownership

MAX_JSON_DEPTH = 8  # commands are flat objects; anything deeper is not one of ours
MAX_SYNC_IDS = 50  # a page streams at most a few replies at once
INVALID = "That was not a valid command."


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


def parse(text: str) -> dict:
    """A command object, or BadCommand: junk, NaN/Infinity, deep nesting, huge numbers."""
    try:
        content = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise BadCommand("not JSON") from None
    if not isinstance(content, dict) or _depth(content, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadCommand("not a command object")
    return content


def sync_ids(content: dict) -> tuple[int, list[int]]:
    """What a `sync` says the page shows: the newest id and the ids still streaming."""
    after, streaming = content.get("after") or 0, content.get("streaming") or []
    if not isinstance(streaming, list) or len(streaming) > MAX_SYNC_IDS:
        raise ownership.Refused(INVALID)
    return (ownership.as_id(after, INVALID) if after else 0), [
        ownership.as_id(i, INVALID) for i in streaming
    ]


def count(value) -> int | None:
    """A confirmed count (of messages to delete), or None if there is none to read."""
    try:
        return ownership.as_id(value)
    except ownership.Refused:
        return None
