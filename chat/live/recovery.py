"""Replies whose process died: mark them `interrupted`, keeping their text.

With one process (settings.SINGLE_PROCESS, the embedded default) any reply
still `streaming` that this process is not running, and that is more than a few
seconds old, is an orphan. With several processes sharing Redis, a running job
touches its row at least every STREAM_STALE_SECONDS / 3, so a row untouched for
STREAM_STALE_SECONDS is one. Every process sweeps when it starts and then every
third of STREAM_STALE_SECONDS (chat.live.runtime runs it).
"""

import asyncio
import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from chat.db import db_async
from chat.governance import quotas
from chat.live import events
from chat.models import Message, UsageRecord

log = logging.getLogger(__name__)
GRACE_SECONDS = 5  # one process: how long a reply row may wait for its job to register
INTERRUPTED_NOTE = "The server restarted while this reply was being written."


def recover_orphans(running_ids) -> list[Message]:
    # A reply row is committed a moment before its job registers; the grace
    # keeps a sweep in that moment from taking a newborn reply for an orphan.
    stale = settings.STREAM_STALE_SECONDS
    grace = min(GRACE_SECONDS, stale) if settings.SINGLE_PROCESS else stale
    orphans = Message.objects.filter(
        status=Message.Status.STREAMING, updated__lt=timezone.now() - timedelta(seconds=grace)
    ).exclude(pk__in=list(running_ids))
    ids = list(orphans.values_list("pk", flat=True))
    if not ids:
        return []
    Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
        status=Message.Status.INTERRUPTED, error_message=INTERRUPTED_NOTE, updated=timezone.now()
    )
    # The ledger keeps what was spent; tokens are estimated from the text kept.
    for message in Message.objects.filter(pk__in=ids).only("pk", "content"):
        # Only the generation that was running (a continued reply has earlier rows).
        UsageRecord.objects.filter(message_id=message.pk, status=Message.Status.STREAMING).update(
            status=Message.Status.INTERRUPTED,
            completion_tokens=len(message.content) // 4,
            tokens_estimated=True,
        )
    recovered = list(Message.objects.filter(pk__in=ids))
    log.info("marked %d orphaned replies interrupted", len(recovered))
    return recovered


def recover_api_requests() -> int:
    """API requests whose process died mid-request: interrupted, so they stop counting."""
    return UsageRecord.objects.filter(
        purpose=UsageRecord.Purpose.API,
        status=Message.Status.STREAMING,
        created__lte=timezone.now() - quotas.API_STALE,
    ).update(status=Message.Status.INTERRUPTED, tokens_estimated=True)


@db_async
def _recover_and_render(running_ids) -> list[tuple[Message, list[str]]]:
    recover_api_requests()
    return [(m, events.message_frames(m)) for m in recover_orphans(running_ids)]


async def sweep_once(running: dict):
    """`running`: this process's jobs, by message id (chat.live.jobs.JOBS)."""
    try:
        recovered = await _recover_and_render(list(running))
    except DatabaseError:
        log.warning("orphan sweep skipped: database unavailable")
        return
    for message, frames in recovered:
        await events.publish_done(message.conversation_id, message.pk, message.status, frames)


async def sweep_forever(running: dict):
    while True:
        await sweep_once(running)
        await asyncio.sleep(max(1, settings.STREAM_STALE_SECONDS // 3))
