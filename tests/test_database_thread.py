"""The one database thread (SQLite): work somebody waits on goes ahead of background work."""

import asyncio
import threading

import pytest
from django.db import connection

from chat import db


def test_waited_on_calls_go_ahead_of_background_calls_queued_earlier():
    thread, order, release = db._OneThread(), [], threading.Event()
    busy = thread.submit(db.BACKGROUND, release.wait, (10,))
    later = [thread.submit(db.BACKGROUND, order.append, (f"ending {n}",)) for n in range(3)]
    sends = [thread.submit(db.WAITED_ON, order.append, (f"send {n}",)) for n in range(2)]
    release.set()
    for future in [busy, *later, *sends]:
        future.result(timeout=5)
    assert order == ["send 0", "send 1", "ending 0", "ending 1", "ending 2"]


def test_a_failing_call_fails_its_caller_and_the_thread_goes_on():
    thread = db._OneThread()
    failed = thread.submit(db.WAITED_ON, int, ("not a number",))
    with pytest.raises(ValueError):
        failed.result(timeout=5)
    assert thread.submit(db.BACKGROUND, int, ("7",)).result(timeout=5) == 7


def test_a_cancelled_call_never_runs():
    thread, ran, release = db._OneThread(), [], threading.Event()
    busy = thread.submit(db.WAITED_ON, release.wait, (10,))
    cancelled = thread.submit(db.WAITED_ON, ran.append, ("cancelled",))
    assert cancelled.cancel()
    release.set()
    busy.result(timeout=5)
    thread.submit(db.WAITED_ON, ran.append, ("next",)).result(timeout=5)
    assert ran == ["next"]


@pytest.mark.django_db
def test_on_sqlite_both_kinds_of_call_share_one_thread_and_its_connection():
    if connection.vendor != "sqlite":
        pytest.skip("on PostgreSQL calls run side by side on the loop's thread pool")

    def where():
        connection.ensure_connection()
        return threading.get_ident(), id(connection.connection)

    async def both():
        return await db.db_async(where)(), await db.db_background(where)()

    waited_on, background = asyncio.run(both())
    assert waited_on == background
    assert waited_on[0] != threading.get_ident()
