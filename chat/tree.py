"""A conversation's shape: which message follows which, and the path shown.

Messages store only their parent. Everything else is derived here from one
query of (id, parent) pairs, so nothing can drift: the children of a message
are the messages naming it, in the order they were written (ids grow), and
they are the versions of one turn. The conversation remembers the leaf it
shows; the thread on the page is the path from the root down to that leaf.

A child is always written after its parent, so the newest message under any
message is a leaf: switching to a version shows the newest branch below it.
"""

from dataclasses import dataclass

from chat.models import Message


@dataclass(frozen=True)
class Versions:
    """Where a message stands among its siblings, for the "‹ 2 / 3 ›" controls."""

    index: int  # 1-based
    count: int
    previous: int | None
    next: int | None


class Tree:
    def __init__(self, pairs):
        """`pairs`: (id, parent id) of every message of one conversation."""
        self.parent: dict[int, int | None] = {}
        self.children: dict[int | None, list[int]] = {}
        for pk, parent in sorted(pairs):
            self.add(pk, parent)

    @classmethod
    def of(cls, conversation_id) -> "Tree":
        return cls(
            Message.objects.filter(conversation_id=conversation_id).values_list("pk", "parent_id")
        )

    def __contains__(self, pk) -> bool:
        return pk in self.parent

    def add(self, pk: int, parent: int | None) -> "Tree":
        """Add a message newer than every one here (children stay in the order written)."""
        self.parent[pk] = parent
        self.children.setdefault(parent, []).append(pk)
        return self

    def newest_below(self, pk: int | None) -> int | None:
        """The newest message in the subtree of `pk` (None: the whole tree): a leaf."""
        newest, stack = pk, list(self.children.get(pk, ()))
        while stack:
            node = stack.pop()
            newest = node if newest is None else max(newest, node)
            stack.extend(self.children.get(node, ()))
        return newest

    def leaf_for(self, remembered: int | None) -> int | None:
        """The leaf to show: the remembered one if it is still here (extended to the
        newest leaf below it, should it have gained children), else the newest."""
        start = remembered if remembered in self.parent else None
        return self.newest_below(start)

    def path_to(self, leaf: int | None) -> list[int]:
        """Ids from the root down to `leaf`."""
        path = []
        while leaf is not None:
            path.append(leaf)
            leaf = self.parent[leaf]
        return path[::-1]

    def siblings(self, pk: int) -> list[int]:
        return self.children[self.parent[pk]]

    def versions(self, pk: int) -> Versions | None:
        """None for a message with no other version."""
        siblings = self.siblings(pk)
        if len(siblings) < 2:
            return None
        index = siblings.index(pk)
        return Versions(
            index + 1,
            len(siblings),
            siblings[index - 1] if index else None,
            siblings[index + 1] if index + 1 < len(siblings) else None,
        )

    def subtree(self, pk: int) -> list[int]:
        """`pk` and everything below it."""
        found, stack = [], [pk]
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(self.children.get(node, ()))
        return found


def annotate(messages, tree: Tree):
    """Give each message its `versions` for the template (None: no other version)."""
    for message in messages:
        message.versions = tree.versions(message.pk) if message.pk in tree else None
    return messages


def annotate_one(message):
    """The same for one message, from its siblings alone (a reply's final frame)."""
    siblings = Message.objects.filter(
        conversation_id=message.conversation_id, parent_id=message.parent_id
    ).values_list("pk", flat=True)
    tree = Tree((pk, message.parent_id) for pk in siblings)
    message.versions = tree.versions(message.pk) if message.pk in tree else None
    return message
