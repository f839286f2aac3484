"""Commands on a conversation's tree that start no generation: show another
version, delete a message with everything below it, branch into a new
conversation. Each checks ownership and runs in one transaction.
"""

from dataclasses import dataclass
from itertools import pairwise

from django.db import transaction

from chat import thread
from chat.models import Conversation, Message
from chat.ownership import Refused, locked_conversation, owned_message
from chat.tree import Tree

COPIED_FIELDS = (
    "role", "content", "reasoning", "reasoning_seconds", "status", "model_id", "model_name",
    "prompt_tokens", "completion_tokens", "tokens_estimated", "cost", "ttft_ms",
    "tokens_per_second", "finish_reason", "error_kind", "error_message", "left_out",
)  # fmt: skip


@transaction.atomic
def switch(user, conversation_id, message_id) -> int:
    """Show the version `message_id` (with the newest branch below it) on every tab,
    now and after a reload. Returns the id shown."""
    conversation = locked_conversation(user, conversation_id)
    target = owned_message(conversation, message_id)
    conversation.active_leaf_id = Tree.of(conversation.pk).newest_below(target.pk)
    conversation.save(update_fields=["active_leaf"])
    return target.pk


@dataclass(frozen=True)
class Doomed:
    """What deleting a message takes with it."""

    message_id: int
    count: int  # the message and every message below it, on every branch
    hidden: int  # how many of those are on branches not shown

    def describe(self) -> str:
        turns = f"{self.count} message{'s' if self.count != 1 else ''}"
        if not self.hidden:
            return turns
        return f"{turns} ({self.hidden} on other branches)"


def _doomed(conversation, message_id) -> tuple[Doomed, list[int], Tree]:
    target = owned_message(conversation, message_id)
    tree, path = thread.active_path(conversation)
    ids, shown = tree.subtree(target.pk), set(path)
    return Doomed(target.pk, len(ids), len([pk for pk in ids if pk not in shown])), ids, tree


@transaction.atomic
def delete(user, conversation_id, message_id, confirmed: int | None) -> tuple[Doomed, bool]:
    """Delete a message and its subtree once the person has confirmed its size.

    Returns (what goes, whether it went). Unconfirmed, or confirmed for another
    size (the tree grew meanwhile), nothing is deleted and the caller asks again.
    """
    conversation = locked_conversation(user, conversation_id)
    doomed, ids, tree = _doomed(conversation, message_id)
    if Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).exists():
        raise Refused("A reply below this message is still being written; stop it first.")
    if confirmed != doomed.count:
        return doomed, False
    gone = set(ids)
    remembered = conversation.active_leaf_id
    Message.objects.filter(pk__in=ids).delete()  # the ledger keeps its rows
    if remembered in gone or remembered is None:
        parent = tree.parent[doomed.message_id]
        rest = Tree((pk, up) for pk, up in tree.parent.items() if pk not in gone)
        conversation.active_leaf_id = rest.newest_below(parent)
        conversation.save(update_fields=["active_leaf"])
    return doomed, True


@transaction.atomic
def fork(user, conversation_id, message_id) -> Conversation:
    """A new conversation holding the path from the root down to `message_id`."""
    source = Conversation.objects.get(pk=conversation_id, owner=user)
    target = owned_message(source, message_id)
    path = Tree.of(source.pk).path_to(target.pk)
    originals = list(Message.objects.filter(pk__in=path).order_by("id"))
    if any(m.is_streaming for m in originals):
        raise Refused("Wait for the reply to finish (or stop it) before branching from it.")
    copy = Conversation.objects.create(
        owner=user,
        title=f"{source.title or 'Conversation'} (branch)"[:200],
        model=source.model,
        system_prompt=source.system_prompt,
        settings=source.settings,
    )
    rows = Message.objects.bulk_create(
        Message(conversation=copy, **{name: getattr(m, name) for name in COPIED_FIELDS})
        for m in originals
    )  # then chained: each row's parent is the one before it
    for parent, row in pairwise(rows):
        row.parent_id = parent.pk
    Message.objects.bulk_update(rows[1:], ["parent"], batch_size=500)
    copy.active_leaf = rows[-1]
    copy.save(update_fields=["active_leaf"])
    return copy
