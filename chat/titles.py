"""Name a new conversation by asking its own model for a short title.

Runs in the background after the first reply completes. If the model fails or
answers nonsense, the first words of the first message (set when it was sent)
stay as the title. A title the user already changed is never overwritten.
"""

import logging

from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from chat.db import db_async
from chat.models import Conversation
from providers import client
from providers.base import ChatRequest, Endpoint, ProviderError

log = logging.getLogger(__name__)
MAX_TITLE = 60
INSTRUCTION = (
    "Write a title of at most six words for a conversation that starts with the message "
    "below. Answer with the title only, no quotes.\n\nMessage:\n"
)


def clean(raw: str) -> str:
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    line = line.strip().strip("\"'`*#").removeprefix("Title:").strip().strip("\"'")
    return line[:MAX_TITLE].strip()


@db_async
def _save(conversation_id, provisional: str, title: str) -> str | None:
    updated = Conversation.objects.filter(pk=conversation_id, title=provisional).update(title=title)
    if not updated:
        return None
    conversation = Conversation.objects.get(pk=conversation_id)
    return render_to_string(
        "chat/ws/title.html", {"item": conversation, "conversation": conversation}
    )


async def generate(
    endpoint: Endpoint, model_remote_id: str, conversation_id, question: str, provisional: str
):
    request = ChatRequest(
        model=model_remote_id,
        messages=[{"role": "user", "content": INSTRUCTION + question[:2000]}],
        max_tokens=24,
    )
    try:
        title = clean((await client.complete(endpoint, request)).text)
    except ProviderError as error:
        log.info("no title for %s: %s", conversation_id, error)
        return
    if len(title) < 2:
        return
    html = await _save(conversation_id, provisional, title)
    if html:
        group = f"conv.{conversation_id.hex}"
        await get_channel_layer().group_send(group, {"type": "thread.html", "html": html})
