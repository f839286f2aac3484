"""Replies whose process died: mark them `interrupted`, keeping their text.

With the in-memory channel layer there is exactly one process, so any reply
still `streaming` that this process is not running (and that is more than a few
seconds old) is an orphan. With Redis
there may be several processes; a running job touches its row at least every
STREAM_STALE_SECONDS / 3, so a row untouched for STREAM_STALE_SECONDS is one.
Every process runs the sweep when its first socket opens and then every few
seconds, and the conversation page runs it before it renders.
"""

import asyncio
import logging
import weakref
from datetime import timedelta

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from chat import frames, generation
from chat.db import db_async
from chat.models import Message, UsageRecord

log = logging.getLogger(__name__)
SWEEP_SECONDS = 10
GRACE_SECONDS = 5
INTERRUPTED_NOTE = "The server restarted while this reply was being written."

_sweepers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


def single_process() -> bool:
    return settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith("InMemoryChannelLayer")


def recover_orphans() -> list[Message]:
    # A reply row is committed a moment before its job registers; the grace
    # keeps a sweep in that moment from taking a newborn reply for an orphan.
    grace = GRACE_SECONDS if single_process() else settings.STREAM_STALE_SECONDS
    orphans = Message.objects.filter(
        status=Message.Status.STREAMING, updated__lt=timezone.now() - timedelta(seconds=grace)
    ).exclude(pk__in=list(generation.JOBS))
    ids = list(orphans.values_list("pk", flat=True))
    if not ids:
        return []
    Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
        status=Message.Status.INTERRUPTED, error_message=INTERRUPTED_NOTE, updated=timezone.now()
    )
    # The ledger keeps what was spent; tokens are estimated from the text kept.
    for message in Message.objects.filter(pk__in=ids).only("pk", "content"):
        UsageRecord.objects.filter(message_id=message.pk).update(
            status=Message.Status.INTERRUPTED,
            completion_tokens=len(message.content) // 4,
            tokens_estimated=True,
        )
    recovered = list(Message.objects.filter(pk__in=ids).select_related("conversation"))
    log.info("marked %d orphaned replies interrupted", len(recovered))
    return recovered


@db_async
def _recover_and_render() -> list[tuple[Message, list[str]]]:
    return [(m, frames.message(m)) for m in recover_orphans()]


async def sweep_once():
    try:
        recovered = await _recover_and_render()
    except DatabaseError:
        log.warning("orphan sweep skipped: database unavailable")
        return
    layer = get_channel_layer()
    for message, html in recovered:
        event = {
            "type": "gen.done",
            "message_id": message.pk,
            "status": message.status,
            "frames": html,
        }
        try:
            await layer.group_send(message.conversation.group, event)
        except Exception:
            log.warning("could not announce recovered reply %s", message.pk)


async def _sweep_forever():
    while True:
        await sweep_once()
        await asyncio.sleep(SWEEP_SECONDS)


def ensure_sweeper():
    loop = asyncio.get_running_loop()
    task = _sweepers.get(loop)
    if task is None or task.done():
        _sweepers[loop] = loop.create_task(_sweep_forever())
