"""Export a conversation as Markdown or JSON, and import the JSON back."""

from django.db import transaction

from chat.models import Conversation, Message

FORMAT = "chatsite.conversation.v1"
MAX_IMPORT_MESSAGES = 10_000


def as_json(conversation: Conversation) -> dict:
    return {
        "format": FORMAT,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "model": conversation.model.display_name if conversation.model else None,
        "created": conversation.created.isoformat(),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
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
    for message in conversation.messages.order_by("id"):
        who = "You" if message.role == Message.Role.USER else (message.model_name or "Assistant")
        lines += [f"## {who}", "", message.content, ""]
    return "\n".join(lines)


@transaction.atomic
def import_json(user, data) -> Conversation | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    messages = data.get("messages")
    if not isinstance(messages, list) or len(messages) > MAX_IMPORT_MESSAGES:
        return None
    conversation = Conversation.objects.create(
        owner=user,
        title=str(data.get("title") or "Imported")[:200],
        system_prompt=str(data.get("system_prompt") or "")[:8000],
    )
    rows = []
    for item in messages:
        role = item.get("role") if isinstance(item, dict) else None
        if role not in (Message.Role.USER, Message.Role.ASSISTANT):
            raise ValueError("bad role")
        rows.append(
            Message(
                conversation=conversation,
                role=role,
                content=str(item.get("content") or ""),
                model_name=str(item.get("model") or "")[:200],
                status=Message.Status.COMPLETE,
            )
        )
    Message.objects.bulk_create(rows)
    return conversation
