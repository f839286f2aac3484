"""Reading the thread a conversation shows: its active path, a window of it for
the page, and what a reconnecting page missed. Fixed queries whatever the
conversation's size: one for its shape (chat.tree), one for the messages shown.
"""

import functools
from dataclasses import dataclass

from django.db import connection

from chat.models import Conversation, Message
from chat.rows import db_value, exists
from chat.tree import Tree, annotate

PAGE = 40  # messages a page shows at first; earlier ones load on demand
MAX_NEWER = 200  # a reconnecting page catches up by at most this many at once


def active_path(conversation: Conversation) -> tuple[Tree, list[int]]:
    tree = Tree.of(conversation.pk)
    return tree, tree.path_to(tree.leaf_for(conversation.active_leaf_id))


def history(path: list[int]) -> list[dict]:
    """The turns of a path (ids from the root down), as context: only this branch."""
    messages = Message.objects.filter(pk__in=path).exclude(content="").order_by("id")
    return [{"role": m.role, "content": m.content} for m in messages]


@functools.cache
def _branch_sql() -> str:
    table = Message._meta.db_table
    return f"SELECT id, parent_id, role, content FROM {table} WHERE conversation_id = %s"  # noqa: S608


def active_branch(conversation) -> tuple[list[int], list[dict]]:
    """The branch shown (ids from the root down) and its turns as context, in one query:
    a send reads the whole conversation once, to find its path and its text together."""
    with connection.cursor() as cursor:  # written out: the ORM took 0.3 ms to build it
        cursor.execute(_branch_sql(), [db_value(Conversation, "id", conversation.pk)])
        rows = {pk: (parent, role, content) for pk, parent, role, content in cursor.fetchall()}
    tree = Tree((pk, row[0]) for pk, row in rows.items())
    path = tree.path_to(tree.leaf_for(conversation.active_leaf_id))
    turns = [rows[pk] for pk in path]
    return path, [{"role": role, "content": text} for _, role, text in turns if text]


def messages_in(ids: list[int], tree: Tree) -> list[Message]:
    """The messages with these ids, in path order (ids grow down a path), annotated."""
    messages = Message.objects.filter(pk__in=ids).order_by("id") if ids else []
    return annotate(list(messages), tree)


@dataclass
class Window:
    messages: list[Message]
    earlier_before: int | None  # the first message shown, when earlier ones exist


def window(conversation: Conversation, showing: int | None = None) -> Window:
    """The end of the active path, from `showing` down if it is on the path (so that a
    message just switched or answered is in view), or the last PAGE messages."""
    tree, path = active_path(conversation)
    start = max(0, len(path) - PAGE)
    if showing in path:
        start = min(start, path.index(showing))
    return Window(messages_in(path[start:], tree), path[start] if start else None)


def earlier(conversation: Conversation, before: int) -> Window:
    """The PAGE messages above `before` on the active path (none if it left the path)."""
    tree, path = active_path(conversation)
    if before not in path:
        return Window([], None)
    end = path.index(before)
    start = max(0, end - PAGE)
    return Window(messages_in(path[start:end], tree), path[start] if start else None)


@dataclass
class Catchup:
    finished: list[Message]  # shown as streaming, since finished
    newer: list[Message]  # on the path after what the page shows
    streaming: list[int]  # ids of both kinds still streaming
    redraw: bool = False  # the page shows another branch: draw the thread again


def catch_up(conversation: Conversation, after: int, streaming: list[int]) -> Catchup:
    """What a page that shows the path up to `after` (some of it `streaming`) is missing.

    Ids from elsewhere are ignored: only this conversation's rows match. A page
    whose last message is no longer on the active path (another tab switched
    branch meanwhile) is told to redraw.
    """
    tree, path = active_path(conversation)
    if after and after not in path:
        return Catchup([], [], [], redraw=True)
    start = path.index(after) + 1 if after else 0
    newer = messages_in(path[start : start + MAX_NEWER], tree)
    on_path = [pk for pk in streaming if pk in path]
    finished = [m for m in messages_in(on_path, tree) if m.status != Message.Status.STREAMING]
    still = [pk for pk in on_path if pk not in {m.pk for m in finished}]
    still += [m.pk for m in newer if m.is_streaming]
    return Catchup(finished, newer, still)


def streaming_on_path(conversation: Conversation) -> list[int]:
    key = db_value(Message, "conversation", conversation.pk)
    if not exists(Message, "conversation_id = %s AND status = %s", [key, Message.Status.STREAMING]):
        return []  # the common case, from the small index of running replies
    tree, path = active_path(conversation)
    return list(
        Message.objects.filter(pk__in=path, status=Message.Status.STREAMING).values_list(
            "pk", flat=True
        )
    )
