"""The partial-text saver: about once a second, the text of every running reply
(chat.live.jobs.JOBS, handed in by chat.live.runtime).

One saver per process (started by chat.live.runtime), one transaction for all
the replies it saves. Batching matters: a hundred replies saving on their own
would open a hundred database connections a second and fight the relay for the
interpreter. It outlives any failure: one bad row never stops the others.
"""

import asyncio
import functools
import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat.db import db_background
from chat.live.ending import fresh_connection_on_failure
from chat.models import Message

log = logging.getLogger(__name__)
Status = Message.Status


@db_background
@fresh_connection_on_failure
def save_partials(batch: list[tuple[int, str, str]]):
    """The growing text and thinking of every running reply, in one statement run for
    each row, in one transaction on one connection. Plain SQL: the ORM compiled the
    same UPDATE again for every row, 0.13 ms each, on the thread every send waits for."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    rows = [(text, reasoning, now, message_id, Status.STREAMING.value)
            for message_id, text, reasoning in batch]  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_partial_save_sql(), rows)


@functools.cache
def _partial_save_sql() -> str:
    table, columns = Message._meta.db_table, ("content", "reasoning", "updated", "id", "status")
    content, reasoning, updated, pk, status = (
        connection.ops.quote_name(Message._meta.get_field(name).column) for name in columns
    )
    return (
        f"UPDATE {connection.ops.quote_name(table)} SET {content} = %s, {reasoning} = %s, "  # noqa: S608 - names from the model, values are parameters
        f"{updated} = %s WHERE {pk} = %s AND {status} = %s"
    )


async def _save_batch(batch: list[tuple[int, str, str]]) -> set[int]:
    """Save the batch; ids saved. A row that cannot be saved must not stop the others."""
    try:
        await save_partials(batch)
        return {item[0] for item in batch}
    except DatabaseError:
        log.warning("could not save %d running replies; will retry", len(batch))
        return set()
    except Exception:
        log.exception("saving %d running replies failed; saving them one by one", len(batch))
    saved = set()
    for item in batch:
        try:
            await save_partials([item])
            saved.add(item[0])
        except Exception:
            log.warning("could not save the text of reply %s", item[0])
    return saved


async def save_forever(running: dict):
    """Every STREAM_SAVE_SECONDS, save what every reply in this process has so far."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.STREAM_SAVE_SECONDS)
        try:
            await _save_due(running, loop)
        except Exception:
            log.exception("partial save round failed; will retry")


async def _save_due(running: dict, loop):
    now = time.monotonic()
    due = [
        job
        for job in list(running.values())
        if job.task is not None and job.task.get_loop() is loop and job.save_due(now)
    ]
    if not due:
        return
    batch = [(job.message_id, job.text(), job.reasoning_text()) for job in due]
    saved = await _save_batch(batch)
    for job, (message_id, text, reasoning) in zip(due, batch, strict=True):
        if message_id in saved:
            job.saved_chars, job.last_save = len(text) + len(reasoning), now
