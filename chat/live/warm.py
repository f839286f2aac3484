"""Everything a reply draws, drawn once as the process starts.

The first reply a process served paid for compiling the page's templates and
loading the Markdown and highlighting engines: 45 to 65 ms on this machine, on
top of its first token. Drawn here from rows that are never saved (no query),
before chatsite.asgi freezes what was loaded for the garbage collector.
"""

from django.utils import timezone

from chat.live import events
from chat.markdown.live import LiveMarkdown
from chat.models import Message

SAMPLE = "Some **bold** text\n\n```python\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- one"


def warm_up():
    for role in (Message.Role.USER, Message.Role.ASSISTANT):
        message = Message(
            pk=1, role=role, content=SAMPLE, status=Message.Status.COMPLETE,
            conversation_id="00000000-0000-0000-0000-000000000001", created=timezone.now(),
        )  # fmt: skip
        message.versions = None  # no siblings to look up
        events.message_frames(message)
        events.append_frames([message])
    live = LiveMarkdown(4096)
    for end in range(0, len(SAMPLE), 7):
        live.update(SAMPLE[:end])
    live.whole(SAMPLE)
