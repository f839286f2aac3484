"""Export a conversation as Markdown (the branch shown) or JSON (the whole tree),
and import the JSON back.

JSON lists the messages oldest first. Each has a number (`n`) and the number of
its parent (`parent`, null for a first turn); `active` is the number of the leaf
shown. A file of the first format, a plain list, imports as one branch.
"""

import json

from django.conf import settings
from django.db import transaction

from chat import thread
from chat.models import Conversation, Message
from chat.settings_form import MAX_SYSTEM_PROMPT

FORMAT = "chatsite.conversation.v2"
LINEAR_FORMAT = "chatsite.conversation.v1"  # no tree: each message follows the one before
NOT_OURS = "That file is not a conversation exported from here (JSON)."


class BadImport(Exception):
    """The file cannot be imported; the message says why, for the person who sent it."""


def as_json(conversation: Conversation) -> dict:
    tree, path = thread.active_path(conversation)
    number = {pk: n for n, pk in enumerate(sorted(tree.parent), 1)}
    return {
        "format": FORMAT,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "model": conversation.model.display_name if conversation.model else None,
        "created": conversation.created.isoformat(),
        "active": number[path[-1]] if path else None,
        "messages": [
            {
                "n": number[m.pk],
                "parent": number.get(m.parent_id),
                "role": m.role,
                "content": m.content,
                **({"reasoning": m.reasoning} if m.reasoning else {}),
                "status": m.status,
                "model": m.model_name or None,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "created": m.created.isoformat(),
            }
            for m in conversation.messages.order_by("id")
        ],
    }


def as_markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    if conversation.system_prompt:
        lines += ["> System: " + conversation.system_prompt.replace("\n", "\n> "), ""]
    _, path = thread.active_path(conversation)
    for message in Message.objects.filter(pk__in=path).order_by("id"):
        who = "You" if message.role == Message.Role.USER else (message.model_name or "Assistant")
        lines += [f"## {who}", "", message.content, ""]
        if message.status != Message.Status.COMPLETE:
            note = message.error_message or f"{message.get_status_display()}."
            lines += [f"*[{note}]*", ""]
    return "\n".join(lines)


def read_upload(upload) -> dict:
    """The JSON of an uploaded export, within the size and nesting limits, or BadImport."""
    if upload is None:
        raise BadImport("Choose a file to import.")
    if upload.size > settings.IMPORT_MAX_BYTES:
        raise BadImport(
            f"That file is {upload.size:,} bytes; the limit is {settings.IMPORT_MAX_BYTES:,}."
        )
    try:
        data = json.loads(upload.read())
    except RecursionError:
        raise BadImport("That file nests too deeply to be a conversation.") from None
    except (ValueError, UnicodeDecodeError):
        raise BadImport(NOT_OURS) from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, LINEAR_FORMAT):
        raise BadImport(NOT_OURS)
    return data


def _imported_message(conversation, number: int, item) -> Message:
    role = item.get("role") if isinstance(item, dict) else None
    if role not in (Message.Role.USER, Message.Role.ASSISTANT):
        raise BadImport(f"Message {number} has no role this site knows (user or assistant).")
    content = item.get("content") or ""
    if not isinstance(content, str):
        raise BadImport(f"Message {number} has content that is not text.")
    if len(content) > settings.MAX_MESSAGE_CHARS:
        raise BadImport(
            f"Message {number} is {len(content):,} characters long; the limit is "
            f"{settings.MAX_MESSAGE_CHARS:,}."
        )
    reasoning = item.get("reasoning") or ""
    if not isinstance(reasoning, str) or len(reasoning) > settings.MAX_REPLY_BYTES:
        raise BadImport(f"Message {number} has thinking that is not text or is too long.")
    return Message(
        conversation=conversation,
        role=role,
        content=content,
        reasoning=reasoning if role == Message.Role.ASSISTANT else "",
        model_name=str(item.get("model") or "")[:200],
        status=Message.Status.COMPLETE,
    )


@transaction.atomic
def import_json(user, data: dict) -> Conversation:
    """One conversation from an export (read_upload's result), marked as imported."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise BadImport(NOT_OURS)
    if len(messages) > settings.IMPORT_MAX_MESSAGES:
        raise BadImport(
            f"That conversation has {len(messages):,} messages; the limit is "
            f"{settings.IMPORT_MAX_MESSAGES:,}."
        )
    title = str(data.get("title") or "").strip()[:190] or "Untitled"
    conversation = Conversation.objects.create(
        owner=user,
        title=f"{title} (imported)",
        system_prompt=str(data.get("system_prompt") or "")[:MAX_SYSTEM_PROMPT],
    )
    rows = [_imported_message(conversation, n, item) for n, item in enumerate(messages, 1)]
    parents = _parents(data, messages)
    Message.objects.bulk_create(rows)
    for row, parent in zip(rows, parents, strict=True):
        row.parent_id = rows[parent - 1].pk if parent else None
    Message.objects.bulk_update(rows, ["parent"], batch_size=500)
    active = data.get("active") if data.get("format") == FORMAT else len(rows)
    if _is_number(active) and 0 < active <= len(rows):
        conversation.active_leaf = rows[active - 1]
        conversation.save(update_fields=["active_leaf"])
    return conversation


def _is_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parents(data: dict, messages: list) -> list[int | None]:
    """Each message's parent, as a position in the file (1-based), checked: a parent
    comes before its child, so the tree has no cycles."""
    if data.get("format") == LINEAR_FORMAT:
        return [n - 1 or None for n in range(1, len(messages) + 1)]
    position = {}
    parents = []
    for n, item in enumerate(messages, 1):
        own, parent = item.get("n"), item.get("parent")
        if not _is_number(own) or own in position:
            raise BadImport(f"Message {n} has no number of its own, or a repeated one.")
        if parent is not None and (not _is_number(parent) or parent not in position):
            raise BadImport(f"Message {n} names a parent that does not come before it.")
        position[own] = n
        parents.append(position[parent] if parent is not None else None)
    if _is_number(data.get("active")):
        data["active"] = position.get(data["active"])
    return parents
